"""A UWS job and a TES task as a client makes and follows them (the CLI's and demo's).

The broker's own API is the full story (offers from many brokers, a choice); these are
the two other views of one broker's sessions: ``/uws/jobs`` (IVOA UWS 1.1) and
``/ga4gh/tes/v1`` (GA4GH TES 1.1). Each is made, run at once, and followed to its end.
"""

from __future__ import annotations

import asyncio
import time
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx
from rich.console import Console
from rich.markup import escape

from execbroker.client.broker import BrokerClientError

UWS_FINAL = frozenset({"COMPLETED", "ERROR", "ABORTED", "ARCHIVED"})
TES_FINAL = frozenset({"COMPLETE", "EXECUTOR_ERROR", "SYSTEM_ERROR", "CANCELED", "PREEMPTED"})
UWS_PHASES = UWS_FINAL | {"PENDING", "QUEUED", "EXECUTING", "HELD", "SUSPENDED", "UNKNOWN"}
TES_STATES = TES_FINAL | {"UNKNOWN", "QUEUED", "INITIALIZING", "RUNNING", "PAUSED", "CANCELING"}
WAIT_STEP = 10  # seconds of a blocking UWS WAIT; TES is polled
POLL = 0.5
UWS_NS = "{http://www.ivoa.net/xml/UWS/v1.0}"
XLINK_HREF = "{http://www.w3.org/1999/xlink}href"


class DialectError(BrokerClientError):
    """The broker answered a dialect request with an error."""


@dataclass
class UwsJob:
    url: str
    phase: str
    results: dict[str, str] = field(default_factory=dict)  # result id -> URL
    error: str | None = None
    stdout: str = ""

    @property
    def final(self) -> bool:
        return self.phase in UWS_FINAL


@dataclass
class TesTask:
    id: str
    state: str
    document: dict[str, Any] = field(default_factory=dict)

    @property
    def final(self) -> bool:
        return self.state in TES_FINAL

    @property
    def stdout(self) -> str:
        runs = self.document.get("logs") or []
        return "".join(item.get("stdout") or "" for run in runs for item in run.get("logs") or [])

    @property
    def system_logs(self) -> list[str]:
        return [
            line for run in self.document.get("logs") or [] for line in run.get("system_logs") or []
        ]


def _http(token: str | None, timeout: float) -> httpx.AsyncClient:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.AsyncClient(headers=headers, timeout=timeout)


def _checked(response: httpx.Response) -> httpx.Response:
    if response.status_code >= 400:
        try:
            detail = str(response.json().get("detail") or response.text)
        except ValueError:
            detail = response.text
        raise DialectError(
            f"{response.request.method} {response.url}: {detail}",
            status_code=response.status_code,
            url=str(response.url),
        )
    return response


def parse_job(url: str, text: bytes) -> UwsJob:
    """The parts of a UWS job document a follower needs."""
    root = ET.fromstring(text)
    results = {
        item.get("id", ""): item.get(XLINK_HREF, "")
        for item in root.iterfind(f"{UWS_NS}results/{UWS_NS}result")
    }
    message = root.find(f"{UWS_NS}errorSummary/{UWS_NS}message")
    return UwsJob(
        url=url,
        phase=root.findtext(f"{UWS_NS}phase") or "UNKNOWN",
        results=results,
        error=message.text if message is not None else None,
    )


async def uws_job(url: str, token: str | None, *, wait: int | None = None) -> UwsJob:
    async with _http(token, (wait or 0) + 15) as http:
        params = {"WAIT": str(wait)} if wait is not None else {}
        job = parse_job(url, _checked(await http.get(url, params=params)).content)
        if job.final and "stdout" in job.results:
            job.stdout = _checked(await http.get(job.results["stdout"])).text
        return job


async def create_uws(
    broker: str, token: str | None, parameters: Mapping[str, Any], *, run: bool = True
) -> str:
    """Create a job from ``parameters`` (with PHASE=RUN unless ``run`` is False): its URL."""
    form: dict[str, Any] = {
        str(name): [str(one) for one in value] if isinstance(value, list) else str(value)
        for name, value in parameters.items()
    }
    if run:
        form["PHASE"] = "RUN"
    async with _http(token, 15) as http:
        made = _checked(await http.post(f"{broker.rstrip('/')}/uws/jobs", data=form))
    return made.headers["location"]


async def run_uws(
    broker: str, token: str | None, parameters: Mapping[str, Any], *, timeout: float
) -> UwsJob:
    """Create a job with PHASE=RUN and follow it to its end."""
    url = await create_uws(broker, token, parameters)
    return await follow_uws(url, token, timeout=timeout)


async def follow_uws(url: str, token: str | None, *, timeout: float) -> UwsJob:
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        job = await uws_job(url, token, wait=max(1, min(WAIT_STEP, int(left))))
        if job.final or left <= 0:
            return job


async def tes_task(broker: str, token: str | None, task_id: str, view: str = "FULL") -> TesTask:
    async with _http(token, 15) as http:
        answer = _checked(
            await http.get(
                f"{broker.rstrip('/')}/ga4gh/tes/v1/tasks/{task_id}", params={"view": view}
            )
        ).json()
    return TesTask(answer["id"], answer["state"], answer)


async def create_tes(broker: str, token: str | None, task: Mapping[str, Any]) -> str:
    """Create a TES task: its id."""
    async with _http(token, 15) as http:
        made = _checked(await http.post(f"{broker.rstrip('/')}/ga4gh/tes/v1/tasks", json=task))
    return str(made.json()["id"])


async def run_tes(
    broker: str, token: str | None, task: Mapping[str, Any], *, timeout: float
) -> TesTask:
    """Create a TES task and poll it to its end."""
    task_id = await create_tes(broker, token, task)
    return await follow_tes(broker, token, task_id, timeout=timeout)


async def follow_tes(broker: str, token: str | None, task_id: str, *, timeout: float) -> TesTask:
    deadline = time.monotonic() + timeout
    while True:
        found = await tes_task(broker, token, task_id)
        if found.final or time.monotonic() > deadline:
            return found
        await asyncio.sleep(POLL)


# -- showing them ---------------------------------------------------------------------------


def print_uws(console: Console, job: UwsJob, *, last: int = 12) -> None:
    console.print(f"UWS job {escape(job.url)}: {job.phase}")
    if job.error:
        console.print(f"  error: {escape(job.error)}")
    for name, url in job.results.items():
        console.print(f"  result {escape(name)}: {escape(url)}")
    _print_tail(console, "stdout", job.stdout, last)


def print_tes(console: Console, task: TesTask, *, last: int = 12) -> None:
    console.print(f"TES task {task.id}: {task.state}")
    for run in task.document.get("logs") or []:
        for number, item in enumerate(run.get("logs") or []):
            console.print(f"  executor {number}: exit code {item.get('exit_code')}")
        for output in run.get("outputs") or []:
            console.print(
                f"  output {escape(output['path'])} -> {escape(output['url'])} "
                f"({output['size_bytes']} bytes)"
            )
    for line in task.system_logs:
        console.print(f"  system log: {escape(line)}")
    _print_tail(console, "stdout", task.stdout, last)


def _print_tail(console: Console, name: str, text: str, last: int) -> None:
    lines = text.rstrip("\n").splitlines()
    if lines:
        console.print(f"  {name} (last {min(last, len(lines))} of {len(lines)} lines):")
        for line in lines[-last:]:
            console.print(f"    {escape(line)}")
