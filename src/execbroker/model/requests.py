"""ExecutionRequest: what a client asks a broker for."""

from __future__ import annotations

from pydantic import Field

from execbroker.model.common import ComponentMetadata, WireModel
from execbroker.model.executables import AnyExecutable
from execbroker.model.resources import (
    DataResource,
    SimpleComputeResource,
    SimpleCost,
    SimpleMetric,
    SimpleStorageResource,
)
from execbroker.model.schedule import ScheduleBlock


class ExecutionRequest(WireModel):
    kind: str | None = None
    name: str | None = None
    meta: ComponentMetadata | None = None
    executable: AnyExecutable
    compute: SimpleComputeResource | None = None
    storage: list[SimpleStorageResource] = Field(default_factory=list)
    data: list[DataResource] = Field(default_factory=list)
    schedule: ScheduleBlock | None = None
    costs: list[SimpleCost] = Field(default_factory=list)
    metrics: list[SimpleMetric] = Field(default_factory=list)

    def is_kind_only(self) -> bool:
        """The seed's simplest question: a request that names nothing but an executable kind."""
        return self.executable.model_fields_set <= {"kind", "name"} and self.model_fields_set <= {
            "executable",
            "kind",
            "name",
            "meta",
        }
