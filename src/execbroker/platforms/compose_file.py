"""A user's compose file, read and rewritten into the one the broker runs.

The broker never hands the user's text to ``docker compose`` as-is. It parses it (YAML only,
size- and node-limited), interpolates ``${VAR:-default}`` itself against an EMPTY environment
(so a file cannot read the broker's environment, and what the policy checks is what runs:
``privileged: ${X:-true}`` is checked as ``true``), then writes a new file in which every
``$`` is escaped, every service has its share of the grant as hard limits, hardening, the
broker's labels, and its ports published on the broker's address at random host ports.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

import yaml

from execbroker.planner import Resources
from execbroker.platforms import compose_types
from execbroker.platforms.compose_types import ComposeError, memory_bytes, replicas
from execbroker.platforms.container_policy import (
    NO_NEW_PRIVILEGES,
    SAFE_CAPABILITIES,
    tmpfs_size,
)
from execbroker.platforms.docker_engine import GIB, LABEL_PORTS, PortPlan, ports_label
from execbroker.safeyaml import DocumentLoader

MAX_NODES = 20_000
MIN_MEMORY_BYTES = 6 * 1024**2  # the smallest memory limit docker accepts
MAX_PORTS_PER_SERVICE = 16
# Limits, restart and logging the broker sets itself: whatever the user wrote is dropped.
_REPLACED = [
    "cpus",
    "cpu_count",
    "cpu_percent",
    "cpu_period",
    "cpu_quota",
    "cpu_rt_period",
    "cpu_rt_runtime",
    "mem_limit",
    "memswap_limit",
    "mem_reservation",
    "pids_limit",
    "storage_opt",
    "blkio_config",
    "restart",
    "logging",
    "pull_policy",
]
_APP_PROTOCOLS = {"http": "HTTP", "https": "HTTPS"}


class _Loader(DocumentLoader):
    """YAML as compose reads it (1.2): only true/false are booleans, ``yes``/``on`` are text.
    Anchors and aliases are kept (compose files use them); nesting stops at MAX_DEPTH."""


_BOOL = "tag:yaml.org,2002:bool"
_Loader.yaml_implicit_resolvers = {
    first: [(tag, pattern) for tag, pattern in resolvers if tag != _BOOL]
    for first, resolvers in DocumentLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(
    _BOOL, re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)


# -- reading ----------------------------------------------------------------------------


def parse(text: str) -> dict[str, Any]:
    """The compose document, interpolated; ComposeError if it is not a usable compose file."""
    try:
        document = yaml.load(text, Loader=_Loader)  # _Loader is a SafeLoader
    except RecursionError:  # not reached with DocumentLoader's depth limit; kept as a guard
        raise ComposeError("executable.compose: nested too deeply") from None
    except yaml.YAMLError as error:
        where = getattr(error, "problem_mark", None)
        at = f" at line {where.line + 1}" if where is not None else ""
        problem = getattr(error, "problem", None) or "cannot be parsed"
        raise ComposeError(f"executable.compose: not valid YAML{at}: {problem}") from None
    if not isinstance(document, dict):
        raise ComposeError("executable.compose: a compose file is a mapping with services")
    _count_nodes(document)
    document = interpolate(document)
    wrong = compose_types.first_wrong_type(document)
    if wrong is not None:
        raise ComposeError(f"executable.compose: {wrong}")
    services = document.get("services")
    if not isinstance(services, dict) or not services:
        raise ComposeError("executable.compose: services: at least one service is needed")
    for name, service in services.items():
        if not re.match(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]*$", str(name)):
            raise ComposeError(f"services.{name}: not a valid service name")
        if not isinstance(service, dict) or not isinstance(service.get("image"), str):
            raise ComposeError(f"services.{name}.image: each service needs an image")
    return document


def _count_nodes(document: Any) -> None:
    """Refuse documents whose aliases expand to more than MAX_NODES (a 'billion laughs')."""
    stack, seen = [document], 0
    while stack:
        node = stack.pop()
        seen += 1
        if seen > MAX_NODES:
            raise ComposeError(f"executable.compose: more than {MAX_NODES} YAML nodes")
        if isinstance(node, dict):
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)


_VARIABLE = re.compile(r"\$(?:(\$)|([A-Za-z_][A-Za-z0-9_]*)|\{)")
_BRACED = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?+])|(?=\}))")


def interpolate_text(text: str) -> str:
    """Compose's interpolation with no variable set: ``$$`` is ``$``, ``${A:-x}`` is ``x``,
    ``$A`` and ``${A}`` are empty, ``${A:?why}`` is an error."""
    out, i = [], 0
    while True:
        match = _VARIABLE.search(text, i)
        if match is None:
            out.append(text[i:])
            return "".join(out)
        out.append(text[i : match.start()])
        if match.group(1):
            out.append("$")
            i = match.end()
        elif match.group(2):
            i = match.end()
        else:
            value, i = _braced(text, match.end())
            out.append(value)


def _braced(text: str, start: int) -> tuple[str, int]:
    """Interpolate ``NAME[op word]}`` from ``start``; return the value and the index after ``}``."""
    head = _BRACED.match(text, start)
    if head is None:
        raise ComposeError(f"invalid interpolation in {text!r}")
    name, operator = head.group(1), head.group(2)
    depth, j = 1, head.end()
    while j < len(text):  # the word may itself hold ${...}
        if text.startswith("${", j):
            depth, j = depth + 1, j + 2
            continue
        if text[j] == "}":
            depth -= 1
            if not depth:
                break
        j += 1
    if depth:
        raise ComposeError(f"unterminated ${{ in {text!r}")
    word, j = text[head.end() : j], j + 1
    if operator is None:
        return "", j
    if "?" in operator:
        raise ComposeError(f"${{{name}}} is required: {interpolate_text(word) or 'unset'}")
    if "-" in operator:
        return interpolate_text(word), j
    return "", j  # ${A:+x}: A is unset


def interpolate(node: Any) -> Any:
    if isinstance(node, str):
        return interpolate_text(node)
    if isinstance(node, dict):
        return {key: interpolate(value) for key, value in node.items()}
    if isinstance(node, list):
        return [interpolate(item) for item in node]
    return node


# -- sharing the grant ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Share:
    """One container's hard limits."""

    cpus: float
    memory: int  # bytes


def _asks(services: dict[str, Any]) -> tuple[dict[str, float | None], dict[str, int | None]]:
    cpus: dict[str, float | None] = {}
    memory: dict[str, int | None] = {}
    for name, service in services.items():
        limits = ((service.get("deploy") or {}).get("resources") or {}).get("limits") or {}
        cpu = service.get("cpus", limits.get("cpus"))
        mem = service.get("mem_limit", limits.get("memory"))
        try:
            cpus[name] = float(cpu) if cpu is not None else None
        except (TypeError, ValueError):
            raise ComposeError(f"services.{name}.cpus: {cpu!r} is not a number") from None
        if cpus[name] is not None and not 0 <= cpus[name] < 1e6:  # also NaN and infinity
            raise ComposeError(f"services.{name}.cpus: {cpu!r} is not a number of cores")
        memory[name] = memory_bytes(mem, f"services.{name}.mem_limit") if mem is not None else None
    return cpus, memory


def _split(total: float, counts: dict[str, int], asks: dict[str, Any]) -> dict[str, float]:
    """Each container's part of ``total``: in proportion to what every service asks when all
    ask, evenly otherwise."""
    weights = {
        name: (asks[name] if all(v for v in asks.values()) else 1.0) * count
        for name, count in counts.items()
    }
    whole = sum(weights.values()) or 1.0
    return {
        name: total * weights[name] / whole / counts[name] if counts[name] else 0.0
        for name in counts
    }


def shares(services: dict[str, Any], grant: Resources, *, host_cpus: int) -> dict[str, Share]:
    """Per container limits whose sum over all containers is the grant (cores up to the host's)."""
    try:
        counts = {name: replicas(service) for name, service in services.items()}
    except ComposeError as error:
        raise ComposeError(f"services: {error}") from None
    if not sum(counts.values()):
        raise ComposeError("services: no service runs a container (all scaled to 0)")
    cpu_asks, memory_asks = _asks(services)
    cores = min(grant.cores, host_cpus)
    cpus = _split(float(cores), counts, cpu_asks)
    memory = _split(float(grant.memory_gib * GIB), counts, memory_asks)
    result = {}
    for name in services:
        if not counts[name]:
            continue
        each = int(memory[name])
        if each < MIN_MEMORY_BYTES:
            raise ComposeError(
                f"services.{name}: the grant of {grant.memory_gib} GiB leaves it less than "
                f"{MIN_MEMORY_BYTES // 1024**2} MiB"
            )
        result[name] = Share(round(max(cpus[name], 0.01), 3), each)
    return result


# -- ports ------------------------------------------------------------------------------


def _targets(item: Any, where: str) -> list[tuple[int, str, str | None]]:
    """``(container port, transport, app protocol)`` for one entry of ``ports``."""
    if isinstance(item, dict):
        target, transport = item.get("target"), str(item.get("protocol") or "tcp").lower()
        app = item.get("app_protocol")
        spans = [str(target)]
    else:
        text, _, transport = str(item).partition("/")
        transport, app = (transport or "tcp").lower(), None
        spans = [text.rsplit(":", 1)[-1]]
    found = []
    for span in spans:
        first, _, last = span.partition("-")
        try:
            low, high = int(first), int(last or first)
        except ValueError:
            raise ComposeError(f"{where}: {item!r} names no container port") from None
        if not (1 <= low <= high <= 65535) or high - low >= MAX_PORTS_PER_SERVICE:
            raise ComposeError(f"{where}: {item!r} is not a port or a short range of ports")
        found += [(port, transport, app) for port in range(low, high + 1)]
    if transport not in ("tcp", "udp"):
        raise ComposeError(f"{where}: protocol {transport!r} is not tcp or udp")
    return found


def port_plans(name: str, service: dict[str, Any]) -> list[PortPlan]:
    plans: dict[str, PortPlan] = {}
    for index, item in enumerate(service.get("ports") or []):
        for port, transport, app in _targets(item, f"services.{name}.ports[{index}]"):
            protocol = _APP_PROTOCOLS.get(str(app).lower(), transport.upper())
            plan = PortPlan(port, transport, protocol)
            plans.setdefault(plan.key, plan)
    if len(plans) > MAX_PORTS_PER_SERVICE:
        raise ComposeError(f"services.{name}.ports: at most {MAX_PORTS_PER_SERVICE} ports")
    return list(plans.values())


# -- writing ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RunSettings:
    """What the platform adds to every service."""

    labels: dict[str, str]
    publish_host: str
    pids_limit: int
    init: bool
    storage_gib: int | None  # None: the storage driver cannot limit it


def rewrite(
    document: dict[str, Any], limits: dict[str, Share], settings: RunSettings
) -> dict[str, Any]:
    """The document the broker runs (``document`` is the parsed, checked one; it is not changed)."""
    out = _escape(document)
    services = out["services"]
    for name, service in services.items():
        for key in _REPLACED:
            service.pop(key, None)
        deploy = service.get("deploy")
        if isinstance(deploy, dict):
            deploy.pop("resources", None)
            deploy.pop("restart_policy", None)
        plans = port_plans(name, document["services"][name])
        service["ports"] = [
            {"target": p.port, "protocol": p.transport, "host_ip": settings.publish_host}
            for p in plans
        ]
        share = limits.get(name)
        if share is not None:
            service["cpus"] = share.cpus
            service["mem_limit"] = share.memory
            service["memswap_limit"] = share.memory
            _bound_memory_mounts(name, service, share.memory)
        service["pids_limit"] = settings.pids_limit
        if settings.storage_gib:
            service["storage_opt"] = {"size": f"{settings.storage_gib}G"}
        service["restart"] = "no"
        service["logging"] = {"driver": "json-file", "options": {"max-size": "10m"}}
        service.setdefault("init", settings.init)
        if not _privileged(service):
            added = {str(c).upper().removeprefix("CAP_") for c in service.get("cap_add") or []}
            service["cap_drop"] = ["ALL"]
            service["cap_add"] = sorted(added | set(SAFE_CAPABILITIES))
        options = [str(o) for o in service.get("security_opt") or []]
        service["security_opt"] = [*options, NO_NEW_PRIVILEGES]
        service["labels"] = {
            **_as_mapping(service.get("labels")),
            **settings.labels,
            LABEL_PORTS: ports_label(plans),
        }
    networks = out.setdefault("networks", {}) or {}
    out["networks"] = networks
    for name in ("default", *networks):
        network = networks.get(name) or {}
        network["labels"] = {**_as_mapping(network.get("labels")), **settings.labels}
        networks[name] = network
    for name, volume in list((out.get("volumes") or {}).items()):
        volume = volume or {}
        volume["labels"] = {**_as_mapping(volume.get("labels")), **settings.labels}
        out["volumes"][name] = volume
    return out


def _bound_memory_mounts(name: str, service: dict[str, Any], memory: int) -> None:
    """``shm_size`` and every tmpfs within the container's share of the grant; a tmpfs with
    no size gets the share (docker's default would be half the host's memory)."""

    def bounded(where: str, value: Any) -> int:
        amount = memory_bytes(value, where)
        if amount > memory:
            raise ComposeError(
                f"{where}: {value} is more than this container's share of the grant "
                f"({memory // 1024**2} MiB)"
            )
        return amount

    if service.get("shm_size") is not None:
        service["shm_size"] = bounded(f"services.{name}.shm_size", service["shm_size"])
    tmpfs = service.get("tmpfs")
    if tmpfs:
        entries = tmpfs if isinstance(tmpfs, list) else [tmpfs]
        service["tmpfs"] = [
            _sized_tmpfs(str(entry), f"services.{name}.tmpfs[{index}]", memory, bounded)
            for index, entry in enumerate(entries)
        ]
    for index, volume in enumerate(service.get("volumes") or []):
        if isinstance(volume, dict) and volume.get("type") == "tmpfs":
            options = volume.get("tmpfs") if isinstance(volume.get("tmpfs"), dict) else {}
            where = f"services.{name}.volumes[{index}].tmpfs.size"
            size = options.get("size")
            options["size"] = memory if size is None else bounded(where, size)
            volume["tmpfs"] = options


def _sized_tmpfs(entry: str, where: str, memory: int, bounded: Any) -> str:
    path, _, options = entry.partition(":")
    kept = [o for o in options.split(",") if o and o.partition("=")[0].strip() != "size"]
    size = tmpfs_size(entry)
    amount = memory if size is None else bounded(f"{where}.size", size)
    return f"{path}:" + ",".join([*kept, f"size={amount}"])


def _privileged(service: dict[str, Any]) -> bool:
    return service.get("privileged") in (True, "true", "True")


def _as_mapping(labels: Any) -> dict[str, str]:
    if isinstance(labels, dict):
        return {str(k): "" if v is None else str(v) for k, v in labels.items()}
    pairs = (str(item).partition("=") for item in labels or [])
    return {name: value for name, _, value in pairs}


def _escape(node: Any) -> Any:
    """A deep copy in which compose will interpolate nothing: every ``$`` becomes ``$$``."""
    if isinstance(node, str):
        return node.replace("$", "$$")
    if isinstance(node, dict):
        return {key: _escape(value) for key, value in node.items()}
    if isinstance(node, list):
        return [_escape(item) for item in node]
    return node


def dump(document: dict[str, Any]) -> str:
    return yaml.safe_dump(document, sort_keys=False, default_flow_style=False)


def connectors_of(document: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """What each service of a rewritten document publishes (for tests and logs)."""
    return {
        name: json.loads(service["labels"][LABEL_PORTS])
        for name, service in document["services"].items()
    }
