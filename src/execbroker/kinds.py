"""Names of the kinds of things a request can describe.

The ExecutionBroker schema names every kind by a URI. Clients in the wild send three
spellings of the same kind: the current schema URI, the earlier draft's URI, and (from
people typing requests by hand) a short alias. We accept all three and always answer
with the current URI, so the rest of the code compares one spelling only.
"""

from __future__ import annotations

SCHEMA_BASE = "https://www.purl.org/ivoa.net/Calycopis-openapi/schema/v1.0/kinds/"
DRAFT_BASE = "https://www.purl.org/ivoa.net/EB/schema/v1.0/types/"
# Kinds the schema has no name for yet: ours, under a name we own.
EXECBROKER_BASE = "urn:execbroker:kinds:"

DOCKER_CONTAINER = SCHEMA_BASE + "executable/docker-container.yaml"
JUPYTER_NOTEBOOK = SCHEMA_BASE + "executable/jupyter-notebook.yaml"
SINGULARITY_CONTAINER = SCHEMA_BASE + "executable/singularity-container.yaml"
DOCKER_COMPOSE = EXECBROKER_BASE + "executable:docker-compose"
BATCH_SCRIPT = EXECBROKER_BASE + "executable:batch-script"

SIMPLE_COMPUTE = SCHEMA_BASE + "compute/simple-compute-resource.yaml"
SIMPLE_STORAGE = SCHEMA_BASE + "storage/simple-storage-resource.yaml"
SIMPLE_VOLUME = SCHEMA_BASE + "volume/simple-volume-mount.yaml"
SIMPLE_DATA = SCHEMA_BASE + "data/simple-data-resource.yaml"
S3_DATA = SCHEMA_BASE + "data/S3-data-resource.yaml"
IVOA_DATA = SCHEMA_BASE + "data/ivoa-data-resource.yaml"
RUCIO_DATA = SCHEMA_BASE + "data/rucio-data-resource.yaml"
SKAO_DATA = SCHEMA_BASE + "data/skao-data-resource.yaml"
SIMPLE_COST = SCHEMA_BASE + "costs/simple-minmax-float-cost.yaml"
SIMPLE_METRIC = SCHEMA_BASE + "metrics/simple-minmax-float-metric.yaml"

SIMPLE_SESSION = SCHEMA_BASE + "session/simple-execution-session.yaml"
OFFERSET_RESPONSE = "urn:execbroker:kinds:offerset-response"
ENUM_VALUE_UPDATE = "uri:enum-value-update"
ENUM_VALUE_OPTION = "uri:enum-value-option"

# Everything we know by name, keyed by its current URI, with its short alias.
_ALIASES: dict[str, str] = {
    DOCKER_CONTAINER: "docker-container",
    JUPYTER_NOTEBOOK: "jupyter-notebook",
    SINGULARITY_CONTAINER: "singularity-container",
    DOCKER_COMPOSE: "docker-compose",
    BATCH_SCRIPT: "batch-script",
    SIMPLE_COMPUTE: "simple-compute-resource",
    SIMPLE_STORAGE: "simple-storage-resource",
    SIMPLE_VOLUME: "simple-volume-mount",
    SIMPLE_DATA: "simple-data-resource",
    S3_DATA: "S3-data-resource",
    IVOA_DATA: "ivoa-data-resource",
    RUCIO_DATA: "rucio-data-resource",
    SKAO_DATA: "skao-data-resource",
    SIMPLE_COST: "simple-minmax-float-cost",
    SIMPLE_METRIC: "simple-minmax-float-metric",
}


def _spellings() -> dict[str, str]:
    """Map every accepted spelling to the current URI."""
    table: dict[str, str] = {}
    for uri, alias in _ALIASES.items():
        area = uri.removeprefix(SCHEMA_BASE).split("/")[0] if uri.startswith(SCHEMA_BASE) else ""
        table[uri] = uri
        table[alias] = uri
        table[alias.lower()] = uri
        if area:
            # The earlier draft: .../EB/schema/v1.0/types/<area>/<name>-1.0
            table[f"{DRAFT_BASE}{area}/{alias}-1.0"] = uri
        table[f"{alias}-1.0"] = uri
    return table


_SPELLINGS = _spellings()


def canonical(kind: str) -> str:
    """The current URI for any accepted spelling of a kind; unknown kinds come back as given."""
    return _SPELLINGS.get(kind.strip(), _SPELLINGS.get(kind.strip().lower(), kind.strip()))


def alias(kind: str) -> str:
    """The short alias of a kind (for people and logs); unknown kinds come back as given."""
    uri = canonical(kind)
    return _ALIASES.get(uri, uri)


def is_known(kind: str) -> bool:
    return canonical(kind) in _ALIASES
