"""IVOA UWS 1.1 over sessions: the phase table, job documents, and job parameters → requests.

A UWS job is one session. Its PENDING phase is the offer the broker holds for it (the
``quote`` is when it would end, ``destruction`` when the offer expires); RUN accepts it.
EXPIRED maps to ARCHIVED: the job's destruction time passed before it ran, which is what
ARCHIVED means in UWS 1.1 (the job is kept, nothing of it remains); REJECTED maps to
ABORTED, since only the owner's ABORT (or DELETE) of a PENDING job rejects its offer.
Documents are built with ElementTree (so every element the XSD requires is there, nil
where unknown) and are valid against UWS 1.1's ``UWS.xsd``.
"""

from __future__ import annotations

import shlex
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import yaml
from pydantic import ValidationError

from execbroker import kinds
from execbroker.errors import InvalidRequest
from execbroker.model.requests import ExecutionRequest
from execbroker.model.sessions import Phase
from execbroker.timeutil import format_instant

UWS = "http://www.ivoa.net/xml/UWS/v1.0"
XLINK = "http://www.w3.org/1999/xlink"
XSI = "http://www.w3.org/2001/XMLSchema-instance"
ET.register_namespace("uws", UWS)
ET.register_namespace("xlink", XLINK)
ET.register_namespace("xsi", XSI)

PHASES: dict[str, str] = {
    Phase.INITIAL: "PENDING",
    Phase.OFFERED: "PENDING",
    Phase.ACCEPTED: "QUEUED",
    Phase.WAITING: "QUEUED",
    Phase.PREPARING: "QUEUED",
    Phase.AVAILABLE: "EXECUTING",
    Phase.RUNNING: "EXECUTING",
    Phase.RELEASING: "EXECUTING",
    Phase.COMPLETED: "COMPLETED",
    Phase.FAILED: "ERROR",
    Phase.CANCELLED: "ABORTED",
    Phase.REJECTED: "ABORTED",
    Phase.EXPIRED: "ARCHIVED",
}
UWS_PHASES = ("PENDING", "QUEUED", "EXECUTING", "COMPLETED", "ERROR", "ABORTED", "ARCHIVED")
# Phases a WAIT blocks in (UWS 1.1 §2.2.1.1): the others never change on their own.
ACTIVE = ("PENDING", "QUEUED", "EXECUTING")


def sessions_in(uws_phase: str) -> list[str]:
    """The session phases shown as ``uws_phase``."""
    return [phase for phase, shown in PHASES.items() if shown == uws_phase]


# -- job parameters → an ExecutionRequest ------------------------------------------------

# Parameters that describe the task (the rest are UWS's own: RUNID, PHASE, ...).
TASK_PARAMETERS = ("image", "command", "port", "script", "request", "cores", "memory", "storage")
CONTROL_PARAMETERS = ("runid", "phase", "executionduration", "destruction")


@dataclass(frozen=True, slots=True)
class JobParameters:
    """A job's parameters as posted: names lower-cased (UWS names are case-insensitive)."""

    values: dict[str, list[str]] = field(default_factory=dict)

    @classmethod
    def parse(cls, pairs: Sequence[tuple[str, str]]) -> JobParameters:
        values: dict[str, list[str]] = {}
        for name, value in pairs:
            values.setdefault(name.strip().lower(), []).append(value)
        return cls(values)

    def one(self, name: str) -> str | None:
        found = self.values.get(name)
        if found and len(found) > 1:
            raise InvalidRequest(f"{name}: give it once, not {len(found)} times", field=name)
        return found[0] if found else None

    def unknown(self) -> list[str]:
        known = (*TASK_PARAMETERS, *CONTROL_PARAMETERS)
        return [name for name in self.values if name not in known]

    def shown(self) -> dict[str, str]:
        """The task's parameters as the job's ``parameters`` list shows them."""
        return {
            name: " ".join(values) if name == "port" else values[0]
            for name, values in self.values.items()
            if name in TASK_PARAMETERS
        }


def whole(params: JobParameters, name: str, minimum: int = 0) -> int | None:
    text = params.one(name)
    if text is None:
        return None
    try:
        value = int(text)
    except ValueError:
        raise InvalidRequest(f"{name}: {text!r} is not a whole number", field=name) from None
    if value < minimum:
        raise InvalidRequest(f"{name}: must be at least {minimum}", field=name)
    return value


def document(text: str) -> Any:
    try:
        return yaml.safe_load(text)  # JSON is YAML too
    except yaml.YAMLError as error:
        raise InvalidRequest(f"request: not JSON or YAML: {error}", field="request") from None


def to_request(
    params: JobParameters, exposed_ports: Mapping[str, list[int]], body: Any = None
) -> ExecutionRequest:
    """The ExecutionRequest a job's parameters describe.

    The task is one of ``image`` (a docker-container; ``command`` its arguments, ``port``
    the ports to publish, else those the image declares, from ``exposed_ports``), ``script``
    (a batch script) or ``request`` (a whole ExecutionRequest, as a parameter or the body).
    ``cores``, ``memory``, ``storage`` (GiB) and ``executionduration`` (seconds) bound the
    resources. Raises InvalidRequest naming the parameter that is wrong.
    """
    unknown = params.unknown()
    if unknown:
        allowed = ", ".join((*TASK_PARAMETERS, *(name.upper() for name in CONTROL_PARAMETERS)))
        raise InvalidRequest(
            f"{unknown[0]}: not a parameter of this service ({allowed})", field=unknown[0]
        )
    sources = [name for name in ("image", "script", "request") if params.one(name) is not None]
    if body is not None:
        sources.append("request")
    if len(sources) != 1:
        raise InvalidRequest(
            "image: give exactly one of image, script or request"
            + (f" (got {', '.join(sources)})" if sources else ""),
            field="image",
        )
    description: dict[str, Any]
    if sources[0] == "request":
        raw = body if body is not None else document(params.one("request") or "")
        if not isinstance(raw, dict):
            raise InvalidRequest("request: must be an ExecutionRequest document", field="request")
        description = raw
    elif sources[0] == "script":
        description = {"executable": {"kind": kinds.BATCH_SCRIPT, "script": params.one("script")}}
    else:
        description = {"executable": _container(params, exposed_ports)}
    _bound(description, params)
    try:
        return ExecutionRequest.model_validate(description)
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(part) for part in first["loc"] if not kinds.is_known(str(part)))
        raise InvalidRequest(f"request.{where}: {first['msg']}", field=f"request.{where}") from None


def _container(params: JobParameters, exposed_ports: Mapping[str, list[int]]) -> dict[str, Any]:
    image = params.one("image") or ""
    command = params.one("command")
    try:
        argv = shlex.split(command) if command else []
    except ValueError as error:
        raise InvalidRequest(f"command: {error}", field="command") from None
    ports = []
    for text in params.values.get("port", []):
        for item in text.replace(",", " ").split():
            if not item.isdigit() or not 1 <= int(item) <= 65535:
                raise InvalidRequest(f"port: {item!r} is not a port number", field="port")
            ports.append(int(item))
    if not ports:  # as docker run -P: what the image declares
        ports = list(exposed_ports.get(image, []))
    executable: dict[str, Any] = {
        "kind": kinds.DOCKER_CONTAINER,
        "image": {"locations": [image]},
        "command": argv,
    }
    if ports:
        executable["network"] = {
            "ports": [{"internal": {"port": port}, "protocol": "HTTP"} for port in ports]
        }
    return executable


def _bound(document: dict[str, Any], params: JobParameters) -> None:
    """Resource parameters as exact amounts (they override the document's own ranges)."""
    compute = dict(document.get("compute") or {"kind": kinds.SIMPLE_COMPUTE})
    for name in ("cores", "memory"):
        amount = whole(params, name, minimum=1)
        if amount is not None:
            compute[name] = {"min": amount, "max": amount}
    if set(compute) - {"kind"}:
        document["compute"] = compute
    storage = whole(params, "storage")
    if storage:
        document["storage"] = [
            {"kind": kinds.SIMPLE_STORAGE, "size": {"min": storage, "max": storage}}
        ]
    seconds = whole(params, "executionduration", minimum=1)
    if seconds is not None:
        schedule = dict(document.get("schedule") or {})
        schedule["requested"] = {**schedule.get("requested", {}), "duration": f"PT{seconds}S"}
        document["schedule"] = schedule


# -- documents ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Result:
    id: str
    href: str
    mime_type: str | None = None
    size: int | None = None


@dataclass(frozen=True, slots=True)
class Job:
    """What a UWS client sees of one session."""

    job_id: str
    run_id: str | None
    owner: str
    phase: str
    quote: datetime | None
    created: datetime
    started: datetime | None
    ended: datetime | None
    execution_duration: int
    destruction: datetime | None
    parameters: dict[str, str]
    results: list[Result]
    error: str | None
    href: str


def _q(name: str) -> str:
    return f"{{{UWS}}}{name}"


def _text(parent: ET.Element, name: str, value: str | None, *, nillable: bool = True) -> None:
    element = ET.SubElement(parent, _q(name))
    if value is None and nillable:
        element.set(f"{{{XSI}}}nil", "true")
    else:
        element.text = value or ""


def _instant(value: datetime | None) -> str | None:
    return None if value is None else format_instant(value)


def parameters_element(parameters: Mapping[str, str]) -> ET.Element:
    element = ET.Element(_q("parameters"))
    for name, value in parameters.items():
        ET.SubElement(element, _q("parameter"), {"id": name}).text = value
    return element


def results_element(results: Sequence[Result]) -> ET.Element:
    element = ET.Element(_q("results"))
    for result in results:
        attributes = {
            "id": result.id,
            f"{{{XLINK}}}href": result.href,
            f"{{{XLINK}}}type": "simple",
        }
        if result.mime_type:
            attributes["mime-type"] = result.mime_type
        if result.size is not None:
            attributes["size"] = str(result.size)
        ET.SubElement(element, _q("result"), attributes)
    return element


def error_element(message: str) -> ET.Element:
    element = ET.Element(_q("errorSummary"), {"type": "fatal", "hasDetail": "false"})
    ET.SubElement(element, _q("message")).text = message
    return element


def job_element(job: Job) -> ET.Element:
    """``<uws:job>`` in the order UWS.xsd's JobSummary requires."""
    root = ET.Element(_q("job"), {"version": "1.1"})
    _text(root, "jobId", job.job_id, nillable=False)
    if job.run_id is not None:
        _text(root, "runId", job.run_id, nillable=False)
    _text(root, "ownerId", job.owner)
    _text(root, "phase", job.phase, nillable=False)
    _text(root, "quote", _instant(job.quote))
    _text(root, "creationTime", _instant(job.created), nillable=False)
    _text(root, "startTime", _instant(job.started))
    _text(root, "endTime", _instant(job.ended))
    _text(root, "executionDuration", str(job.execution_duration), nillable=False)
    _text(root, "destruction", _instant(job.destruction))
    root.append(parameters_element(job.parameters))
    root.append(results_element(job.results))
    if job.error is not None:
        root.append(error_element(job.error))
    return root


def jobs_element(jobs: Sequence[Job]) -> ET.Element:
    """``<uws:jobs>``: one ``jobref`` (ShortJobDescription) per job."""
    root = ET.Element(_q("jobs"), {"version": "1.1"})
    for job in jobs:
        ref = ET.SubElement(root, _q("jobref"), {"id": job.job_id, f"{{{XLINK}}}href": job.href})
        _text(ref, "phase", job.phase, nillable=False)
        if job.run_id is not None:
            _text(ref, "runId", job.run_id, nillable=False)
        _text(ref, "ownerId", job.owner)
        _text(ref, "creationTime", _instant(job.created), nillable=False)
    return root


def to_xml(element: ET.Element) -> bytes:
    return ET.tostring(element, encoding="UTF-8", xml_declaration=True)
