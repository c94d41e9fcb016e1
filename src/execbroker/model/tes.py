"""GA4GH TES 1.1 over sessions: the wire documents and the phase → state table.

Answers carry the spec's fields only (py-tes refuses any other), so every model here
forbids extras and answers are dumped without the fields left unset.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from execbroker.model.sessions import Phase


class State(StrEnum):
    UNKNOWN = "UNKNOWN"
    QUEUED = "QUEUED"
    INITIALIZING = "INITIALIZING"
    RUNNING = "RUNNING"
    PAUSED = "PAUSED"
    COMPLETE = "COMPLETE"
    EXECUTOR_ERROR = "EXECUTOR_ERROR"
    SYSTEM_ERROR = "SYSTEM_ERROR"
    CANCELED = "CANCELED"
    PREEMPTED = "PREEMPTED"
    CANCELING = "CANCELING"


# FAILED is EXECUTOR_ERROR when the task itself exited non-zero (see ``state_of``).
STATES: dict[str, State] = {
    Phase.INITIAL: State.QUEUED,
    Phase.OFFERED: State.QUEUED,
    Phase.ACCEPTED: State.QUEUED,
    Phase.WAITING: State.QUEUED,
    Phase.PREPARING: State.INITIALIZING,
    Phase.AVAILABLE: State.RUNNING,
    Phase.RUNNING: State.RUNNING,
    Phase.RELEASING: State.RUNNING,
    Phase.COMPLETED: State.COMPLETE,
    Phase.FAILED: State.SYSTEM_ERROR,
    Phase.CANCELLED: State.CANCELED,
    Phase.REJECTED: State.CANCELED,
    Phase.EXPIRED: State.CANCELED,
}


def state_of(phase: str, exit_code: int | None) -> State:
    if phase == Phase.FAILED and exit_code not in (None, 0):
        return State.EXECUTOR_ERROR
    return STATES[phase]


def phases_of(state: State) -> list[str]:
    """The session phases that may show as ``state`` (FAILED: either error)."""
    if state == State.EXECUTOR_ERROR:
        return [Phase.FAILED]
    return [phase for phase, shown in STATES.items() if shown == state]


class TesModel(BaseModel):
    model_config = ConfigDict(extra="forbid")


class FileType(StrEnum):
    FILE = "FILE"
    DIRECTORY = "DIRECTORY"


class Input(TesModel):
    name: str | None = None
    description: str | None = None
    url: str | None = None
    path: str
    type: FileType | None = None
    content: str | None = None
    streamable: bool | None = None


class Output(TesModel):
    name: str | None = None
    description: str | None = None
    url: str
    path: str
    path_prefix: str | None = None
    type: FileType | None = None


class Resources(TesModel):
    cpu_cores: int | None = Field(default=None, ge=1)
    preemptible: bool | None = None
    ram_gb: float | None = Field(default=None, gt=0)
    disk_gb: float | None = Field(default=None, ge=0)
    zones: list[str] | None = None
    backend_parameters: dict[str, str] | None = None
    backend_parameters_strict: bool | None = None


class Executor(TesModel):
    image: str = Field(min_length=1)
    command: list[str] = Field(min_length=1)
    workdir: str | None = None
    stdin: str | None = None
    stdout: str | None = None
    stderr: str | None = None
    env: dict[str, str] | None = None
    ignore_error: bool | None = None


class ExecutorLog(TesModel):
    start_time: str | None = None
    end_time: str | None = None
    stdout: str | None = None
    stderr: str | None = None
    exit_code: int


class OutputFileLog(TesModel):
    url: str
    path: str
    size_bytes: str


class TaskLog(TesModel):
    logs: list[ExecutorLog]
    metadata: dict[str, str] | None = None
    start_time: str | None = None
    end_time: str | None = None
    outputs: list[OutputFileLog]
    system_logs: list[str] | None = None


class Task(TesModel):
    """A task as posted (``id``, ``state``, ``logs``, ``creation_time`` are the server's:
    accepted and ignored) and as answered."""

    id: str | None = None
    state: State | None = None
    name: str | None = None
    description: str | None = None
    inputs: list[Input] | None = None
    outputs: list[Output] | None = None
    resources: Resources | None = None
    executors: list[Executor] = Field(min_length=1)
    volumes: list[str] | None = None
    tags: dict[str, str] | None = None
    logs: list[TaskLog] | None = None
    creation_time: str | None = None


class MinimalTask(TesModel):
    id: str
    state: State


class CreateTaskResponse(TesModel):
    id: str


class ListTasksResponse(TesModel):
    tasks: list[Task] | list[MinimalTask]
    next_page_token: str | None = None


class ServiceType(TesModel):
    group: str = "org.ga4gh"
    artifact: str = "tes"
    version: str = "1.1.0"


class Organization(TesModel):
    name: str
    url: str


class ServiceInfo(TesModel):
    id: str
    name: str
    type: ServiceType = ServiceType()
    description: str | None = None
    organization: Organization
    contactUrl: str | None = None
    documentationUrl: str | None = None
    createdAt: str | None = None
    updatedAt: str | None = None
    environment: str | None = None
    version: str
    storage: list[str] | None = None
    tesResources_backend_parameters: list[str] | None = None


View = Literal["MINIMAL", "BASIC", "FULL"]
