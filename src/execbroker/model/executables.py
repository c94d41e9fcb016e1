"""Executables: what a session runs.

Content fields are optional so that a request naming only a kind parses: that is the
seed's "tasktype=xxx → YES|NO" question. ``missing()`` says what a runnable request
still lacks, naming the field.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    field_validator,
    model_validator,
)

from execbroker import kinds
from execbroker.model.common import KindedModel, WireModel, kind_of

ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
MAX_SCRIPT_BYTES = 1_000_000


def _check_environment(value: dict[str, str]) -> dict[str, str]:
    for name in value:
        if not ENV_NAME.match(name):
            raise ValueError(f"environment name {name!r} must match {ENV_NAME.pattern}")
    return value


Environment = Annotated[dict[str, str], AfterValidator(_check_environment)]


class Executable(KindedModel):
    def missing(self) -> list[str]:
        """Fields (relative to ``executable``) a runnable request must still give."""
        return []

    def problems(self) -> list[str]:
        """Why a valid executable cannot be run (reasons for NO), naming the field."""
        return []


class DockerPlatformSpec(WireModel):
    architecture: str = "amd64"
    os: str = "linux"


class DockerImageSpec(WireModel):
    locations: list[str] = Field(default_factory=list)
    digest: str | None = None
    platform: DockerPlatformSpec | None = None


# Ports and protocols the schema lets a client write but no platform can publish: such a
# request is valid and answered NO with the reason (see ``DockerContainer.problems``).
PORTS = range(1, 65536)
PROTOCOLS = ("TCP", "UDP", "HTTP", "HTTPS")


class DockerInternalPort(WireModel):
    port: int


class DockerExternalPort(WireModel):
    port: int | None = None
    addresses: list[str] = Field(default_factory=list)


class DockerNetworkPort(WireModel):
    access: bool = True
    internal: DockerInternalPort
    external: DockerExternalPort | None = None
    protocol: str = "TCP"
    path: str | None = None

    @field_validator("protocol", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value


class DockerNetworkSpec(WireModel):
    ports: list[DockerNetworkPort] = Field(default_factory=list)


class DockerContainer(Executable):
    kind: Literal[kinds.DOCKER_CONTAINER] = kinds.DOCKER_CONTAINER  # type: ignore[valid-type]
    image: DockerImageSpec | None = None
    privileged: bool = False
    command: list[str] = Field(default_factory=list)
    entrypoint: str | None = None
    environment: Environment = Field(default_factory=dict)
    network: DockerNetworkSpec | None = None

    def missing(self) -> list[str]:
        if self.image is None or not self.image.locations:
            return ["image.locations"]
        return []

    def problems(self) -> list[str]:
        reasons = []
        for index, item in enumerate(self.network.ports if self.network else []):
            where = f"executable.network.ports[{index}]"
            if item.protocol not in PROTOCOLS:
                reasons.append(
                    f"{where}.protocol: {item.protocol!r} is not one of {', '.join(PROTOCOLS)}"
                )
            if item.internal.port not in PORTS:
                reasons.append(f"{where}.internal.port: {item.internal.port} is not a usable port")
            external = item.external.port if item.external else None
            if external is not None and external not in PORTS:
                reasons.append(f"{where}.external.port: {external} is not a usable port")
        return reasons


class DockerCompose(Executable):
    kind: Literal[kinds.DOCKER_COMPOSE] = kinds.DOCKER_COMPOSE  # type: ignore[valid-type]
    compose: str | None = None
    location: str | None = None

    @model_validator(mode="after")
    def _one_source(self) -> DockerCompose:
        if self.compose is not None and self.location is not None:
            raise ValueError("give either compose or location, not both")
        return self

    def missing(self) -> list[str]:
        return [] if self.compose or self.location else ["compose"]


class JupyterNotebook(Executable):
    kind: Literal[kinds.JUPYTER_NOTEBOOK] = kinds.JUPYTER_NOTEBOOK  # type: ignore[valid-type]
    location: str | None = None
    notebook: dict[str, Any] | None = None
    mode: Literal["batch", "interactive"] = "batch"
    parameters: dict[str, Any] = Field(default_factory=dict)
    kernel: str | None = None

    @field_validator("notebook")
    @classmethod
    def _nbformat(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        from execbroker.notebooks.validate import check_notebook  # nbformat loads on first use

        return None if value is None else check_notebook(value)

    @model_validator(mode="after")
    def _one_source(self) -> JupyterNotebook:
        if self.notebook is not None and self.location is not None:
            raise ValueError("give either notebook or location, not both")
        return self

    def missing(self) -> list[str]:
        return [] if self.notebook is not None or self.location else ["notebook"]


class BatchScript(Executable):
    """A shell script run as-is by ``/bin/sh``: its text is a file, never spliced into a command."""

    kind: Literal[kinds.BATCH_SCRIPT] = kinds.BATCH_SCRIPT  # type: ignore[valid-type]
    script: str | None = Field(default=None, max_length=MAX_SCRIPT_BYTES)
    environment: Environment = Field(default_factory=dict)

    def missing(self) -> list[str]:
        return [] if self.script and self.script.strip() else ["script"]


class SingularityContainer(Executable):
    kind: Literal[kinds.SINGULARITY_CONTAINER] = kinds.SINGULARITY_CONTAINER  # type: ignore[valid-type]
    location: str | None = None

    def missing(self) -> list[str]:
        return [] if self.location else ["location"]


class UnknownExecutable(Executable):
    """A kind we have no model for: kept so the broker can answer NO and say why."""

    model_config = ConfigDict(extra="allow")


# Every executable kind we have a model for, by its current URI.
EXECUTABLE_MODELS: dict[str, type[Executable]] = {
    kinds.DOCKER_CONTAINER: DockerContainer,
    kinds.DOCKER_COMPOSE: DockerCompose,
    kinds.JUPYTER_NOTEBOOK: JupyterNotebook,
    kinds.BATCH_SCRIPT: BatchScript,
    kinds.SINGULARITY_CONTAINER: SingularityContainer,
}


def _executable_tag(value: Any) -> str:
    kind = kind_of(value)
    return kind if kind in EXECUTABLE_MODELS else "unknown"


AnyExecutable = Annotated[
    Annotated[DockerContainer, Tag(kinds.DOCKER_CONTAINER)]
    | Annotated[DockerCompose, Tag(kinds.DOCKER_COMPOSE)]
    | Annotated[JupyterNotebook, Tag(kinds.JUPYTER_NOTEBOOK)]
    | Annotated[BatchScript, Tag(kinds.BATCH_SCRIPT)]
    | Annotated[SingularityContainer, Tag(kinds.SINGULARITY_CONTAINER)]
    | Annotated[UnknownExecutable, Tag("unknown")],
    Discriminator(_executable_tag),
]
