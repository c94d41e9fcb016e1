"""Pydantic models of the ExecutionBroker wire schema; no I/O here."""

from execbroker.model.common import ComponentMetadata, EnumValueOption, MessageItem, MinMaxInt
from execbroker.model.executables import (
    AnyExecutable,
    BatchScript,
    DockerCompose,
    DockerContainer,
    Executable,
    JupyterNotebook,
    UnknownExecutable,
)
from execbroker.model.requests import ExecutionRequest
from execbroker.model.resources import SimpleComputeResource, SimpleCost, SimpleStorageResource
from execbroker.model.sessions import Connector, ExecutionSession, OfferSetResponse, Phase
from execbroker.model.updates import EnumValueUpdate, UpdateRequest

__all__ = [
    "AnyExecutable",
    "BatchScript",
    "ComponentMetadata",
    "Connector",
    "DockerCompose",
    "DockerContainer",
    "EnumValueOption",
    "EnumValueUpdate",
    "Executable",
    "ExecutionRequest",
    "ExecutionSession",
    "JupyterNotebook",
    "MessageItem",
    "MinMaxInt",
    "OfferSetResponse",
    "Phase",
    "SimpleComputeResource",
    "SimpleCost",
    "SimpleStorageResource",
    "UnknownExecutable",
    "UpdateRequest",
]
