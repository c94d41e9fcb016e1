"""The GA4GH TES 1.1 dialect at ``/ga4gh/tes/v1``: a thin router over ``BrokerService``.

A task is one session, accepted at once on the best offer (a NO is a SYSTEM_ERROR task
whose ``system_logs`` are the reasons). Its executors become one script (see
``model.tes_script``): a docker-container running ``/bin/sh -c`` in the executors' image
when this broker runs containers, else a batch script. Outputs are left where the executors
write them and delivered by the broker once the task has ended well (``deliveries``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import PurePosixPath
from typing import Annotated, Any
from urllib.parse import urlparse
from uuid import UUID

from fastapi import APIRouter, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response
from pydantic import ValidationError

from execbroker import __version__, file_roots, kinds
from execbroker.api.dependencies import CurrentUser, Service
from execbroker.config import UserRoot
from execbroker.errors import InvalidRequest, Unsupported
from execbroker.model import tes
from execbroker.model import tes_script as scripts
from execbroker.model.requests import ExecutionRequest
from execbroker.service import BrokerService, User
from execbroker.store import queries
from execbroker.store.tables import SessionRow
from execbroker.timeutil import format_instant

router = APIRouter(prefix="/ga4gh/tes/v1", tags=["GA4GH TES 1.1"])

DIALECT = "tes"
MAX_FILE_BYTES = 1_000_000  # a file:// input is read into the task's script
PAGE_SIZE, MAX_PAGE_SIZE = 256, 2048


def _json(model: Any) -> Response:
    return JSONResponse(model.model_dump(mode="json", exclude_none=True))


@router.get("/service-info", summary="What this TES service is")
def service_info(service: Service) -> Response:
    config = service.config
    return _json(
        tes.ServiceInfo(
            id=f"org.execbroker.{config.name}",
            name=f"execbroker {config.name}",
            description=config.description or None,
            organization=tes.Organization(name="execbroker", url="https://www.ivoa.net/"),
            version=__version__,
            storage=[f"file://{root.path}" for root in config.tes.file_roots],
            tesResources_backend_parameters=[],
        )
    )


# -- translation: a task → an ExecutionRequest ------------------------------------------------


def _fetchable(url: str, refusal: Callable[[str], str | None], field: str) -> None:
    """A 400 naming ``field`` when the broker's fetch rules refuse ``url`` already."""
    reason = refusal(url)
    if reason is not None:
        raise Unsupported(f"{field}: {reason}", field=field)


def translate(
    task: tes.Task,
    *,
    containers: bool,
    roots: list[UserRoot],
    fetch_refusal: Callable[[str], str | None],
    copies_out: bool = True,
) -> tuple[ExecutionRequest, list[str], dict[str, Any]]:
    """The request a task describes, the reasons it cannot run here (a NO), and what the
    session keeps of it. Raises InvalidRequest for input that is wrong, not unsupported."""
    reasons: list[str] = []
    strict = task.resources and task.resources.backend_parameters_strict
    if strict and task.resources and task.resources.backend_parameters:
        name = next(iter(task.resources.backend_parameters))
        raise Unsupported(
            f"resources.backend_parameters.{name}: this service supports no backend parameters",
            field="resources.backend_parameters",
        )
    staging = []
    for index, item in enumerate(task.inputs or []):
        field = f"inputs[{index}]"
        scheme = urlparse(item.url or "").scheme
        if item.content is not None:
            staging.append(scripts.Staging(item.path, content=item.content))
        elif scheme in ("http", "https"):
            _fetchable(item.url or "", fetch_refusal, f"{field}.url")
            staging.append(scripts.Staging(item.path, url=item.url))
        elif scheme == "file":
            try:
                content = file_roots.read_input(item.url or "", roots, MAX_FILE_BYTES)
            except file_roots.RootError as error:
                raise InvalidRequest(f"{field}.url: {error}", field=f"{field}.url") from None
            staging.append(scripts.Staging(item.path, content=content.decode(errors="replace")))
        else:
            reasons.append(
                f"{field}.url: fetches http(s) and file URLs only, not {scheme or item.url!r}"
            )
    deliveries: list[dict[str, str]] = []
    for index, item in enumerate(task.outputs or []):
        field = f"outputs[{index}]"
        scheme = urlparse(item.url).scheme
        parts = PurePosixPath(item.path).parts
        if not item.path.startswith("/") or ".." in parts or len(parts) < 2:
            raise InvalidRequest(
                f"{field}.path: {item.path[:100]!r} is not an absolute path below /",
                field=f"{field}.path",
            )
        if scheme == "file":
            if file_roots.locate(item.url, roots) is None:
                raise InvalidRequest(
                    f"{field}.url: {item.url} is not under a directory this broker allows you",
                    field=f"{field}.url",
                )
        elif scheme in ("http", "https"):
            _fetchable(item.url, fetch_refusal, f"{field}.url")
        else:
            reasons.append(
                f"{field}.url: this broker delivers outputs to file and http(s) URLs only, "
                f"not {scheme or item.url!r}"
            )
            continue
        if item.path_prefix or "*" in item.path:
            reasons.append(f"{field}.path: wildcards (path_prefix) are not supported")
            continue
        if containers and not copies_out:
            reasons.append(f"{field}.url: this broker cannot copy outputs out of its containers")
            continue
        kind = (item.type or tes.FileType.FILE).value
        deliveries.append({"url": item.url, "path": item.path, "type": kind})
    images = {executor.image for executor in task.executors}
    if containers and len(images) > 1:
        raise InvalidRequest(
            "executors[1].image: this broker runs a task's executors in one container; "
            "give them all the same image",
            field="executors[1].image",
        )
    marker = scripts.nonce()
    try:
        text = scripts.script(
            task, marker, in_container=containers, staging=staging, outputs=deliveries
        )
    except ValueError as error:
        raise InvalidRequest(str(error), field="executors") from None
    executable: dict[str, Any]
    if containers:
        executable = {
            "kind": kinds.DOCKER_CONTAINER,
            "image": {"locations": [task.executors[0].image]},
            "entrypoint": "/bin/sh",
            "command": ["-c", text],
        }
    else:
        executable = {"kind": kinds.BATCH_SCRIPT, "script": text}
    document: dict[str, Any] = {"executable": executable}
    resources = task.resources or tes.Resources()
    if resources.cpu_cores or resources.ram_gb:
        document["compute"] = {"kind": kinds.SIMPLE_COMPUTE}
        if resources.cpu_cores:
            document["compute"]["cores"] = {"min": resources.cpu_cores, "max": resources.cpu_cores}
        if resources.ram_gb:
            memory = math.ceil(resources.ram_gb)
            document["compute"]["memory"] = {"min": memory, "max": memory}
    if resources.disk_gb:
        disk = math.ceil(resources.disk_gb)
        document["storage"] = [{"kind": kinds.SIMPLE_STORAGE, "size": {"min": disk, "max": disk}}]
    try:
        request = ExecutionRequest.model_validate(document)
    except ValidationError as error:
        raise InvalidRequest(f"task: {error.errors()[0]['msg']}", field="executors") from None
    kept = task.model_dump(
        mode="json", exclude_none=True, exclude={"id", "state", "logs", "creation_time"}
    )
    meta = {"task": kept, "marker": marker, "name": task.name, "deliveries": deliveries}
    return request, reasons, meta


@router.post("/tasks", summary="Create a task")
async def create_task(request: Request, service: Service, user: CurrentUser) -> Response:
    try:
        task = tes.Task.model_validate_json(await request.body())
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        raise InvalidRequest(f"{where}: {first['msg']}", field=where) from None
    containers = kinds.DOCKER_CONTAINER in service.supported_kinds()
    execution, reasons, meta = translate(
        task,
        containers=containers,
        roots=service.config.tes.roots_for(user.name),
        fetch_refusal=service.fetch_refusal,
        copies_out=service.copies_out(),
    )
    row = await run_in_threadpool(
        lambda: service.submit(
            user, execution, dialect=DIALECT, meta=meta, run=True, refuse=reasons
        )
    )
    return _json(tes.CreateTaskResponse(id=row.uuid))


# -- translation: a session → a task ------------------------------------------------------------


def _executors(row: SessionRow, meta: dict[str, Any]) -> list[dict[str, Any]]:
    """The task's executors; a session made through another dialect shows its executable."""
    if "task" in meta:
        return meta["task"]["executors"]
    executable = row.executable
    if executable.get("kind") == kinds.DOCKER_CONTAINER:
        image = (executable.get("image") or {}).get("locations", ["?"])[0]
        return [{"image": image, "command": executable.get("command") or [image]}]
    if executable.get("kind") == kinds.BATCH_SCRIPT:
        return [
            {"image": "batch-script", "command": ["/bin/sh", "-c", executable.get("script", "")]}
        ]
    return [{"image": kinds.alias(executable.get("kind", "?")), "command": ["run"]}]


def task_of(row: SessionRow, view: tes.View, service: BrokerService, user: User) -> Any:
    state = tes.state_of(row.phase, row.exit_code)
    if view == "MINIMAL":
        return tes.MinimalTask(id=row.uuid, state=state)
    meta = row.dialect_meta or {}
    kept = dict(meta.get("task") or {})
    kept["executors"] = _executors(row, meta)
    if view == "BASIC":
        for item in kept.get("inputs") or []:
            item.pop("content", None)
    task = tes.Task.model_validate({**kept, "id": row.uuid, "state": state})
    task.creation_time = format_instant(row.created)
    task.logs = [_log(row, meta, view, service, user)]
    return task


def _log(
    row: SessionRow,
    meta: dict[str, Any],
    view: tes.View,
    service: BrokerService,
    user: User,
) -> tes.TaskLog:
    logs = service.logs(user, row.uuid) if row.handle else None
    executors: list[tes.ExecutorLog] = []
    if logs is not None and "marker" in meta:
        executors = scripts.executor_logs(logs.stdout, logs.stderr, meta["marker"])
    elif logs is not None and row.started:  # one executor: the session's own output
        executors = [
            tes.ExecutorLog(
                start_time=format_instant(row.started),
                end_time=format_instant(row.finished) if row.finished else None,
                stdout=logs.stdout,
                stderr=logs.stderr,
                exit_code=row.exit_code if row.exit_code is not None else -1,
            )
        ]
    if view == "BASIC":
        executors = [item.model_copy(update={"stdout": None, "stderr": None}) for item in executors]
    return tes.TaskLog(
        logs=executors,
        start_time=format_instant(row.started) if row.started else None,
        end_time=format_instant(row.finished) if row.finished else None,
        outputs=[tes.OutputFileLog.model_validate(item) for item in meta.get("delivered", [])],
        system_logs=[item["message"] for item in row.messages] if view == "FULL" else None,
    )


@router.get("/tasks/{uuid}", summary="One task (view MINIMAL, BASIC or FULL)")
def get_task(
    uuid: UUID, service: Service, user: CurrentUser, view: tes.View = "MINIMAL"
) -> Response:
    if view == "MINIMAL":  # a state to poll: at once
        return _json(task_of(service.get_job(user, str(uuid)), view, service, user))
    # Its logs: once the task is in its platform's hands (bounded), so a GET right after the
    # create shows the executors that have run, not a task on its way to the platform.
    wait = service.config.tes.start_wait.total_seconds()
    return _json(task_of(service.wait_started(user, str(uuid), wait), view, service, user))


@router.get("/tasks", summary="The caller's tasks, newest first, in pages")
def list_tasks(
    service: Service,
    user: CurrentUser,
    name_prefix: str | None = None,
    state: tes.State | None = None,
    tag_key: Annotated[list[str] | None, Query()] = None,
    tag_value: Annotated[list[str] | None, Query()] = None,
    page_size: Annotated[int, Query(ge=1)] = PAGE_SIZE,
    page_token: str | None = None,
    view: tes.View = "MINIMAL",
) -> Response:
    keys, values = tag_key or [], tag_value or []
    where = queries.JobFilter(
        owner=None,  # the service's: the caller's own, or everyone's for an admin
        phases=tes.phases_of(state) if state else (),
        name_prefix=name_prefix or None,
        tags=[
            (key, values[index] if index < len(values) else None) for index, key in enumerate(keys)
        ],
        exit_error={tes.State.EXECUTOR_ERROR: True, tes.State.SYSTEM_ERROR: False}.get(state)
        if state
        else None,
    )
    size = min(page_size, MAX_PAGE_SIZE)
    before = tes.read_page_token(page_token) if page_token else None
    rows = service.list_jobs(user, where, before=before, limit=size + 1)
    page = rows[:size]
    following = tes.page_token(page[-1].created, page[-1].uuid) if len(rows) > size else None
    tasks = [task_of(row, view, service, user) for row in page]
    return JSONResponse(
        {
            "tasks": [item.model_dump(mode="json", exclude_none=True) for item in tasks],
            **({"next_page_token": following} if following else {}),
        }
    )


@router.post("/tasks/{uuid}:cancel", summary="Cancel a task")
async def cancel_task(uuid: UUID, service: Service, user: CurrentUser) -> Response:
    await run_in_threadpool(service.abandon, user, str(uuid))
    return JSONResponse({})
