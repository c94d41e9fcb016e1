"""What the reliability tests share: brokers that are replicas of one, and counting how often
each session's task really ran.

A task counts its own runs: its script appends a line to ``started.txt`` in its working
directory (inside its session's work directory), and the test reads that file from outside,
so a task started twice shows two lines whatever the broker's database says. A second start
stopped before its script got going leaves no line, so the brokers' logs are read too: each
logs ``session … started on …`` once a start has returned and its handle is saved.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import httpx

from tests.brokers import BASE_CONFIG, BrokerProcess, batch_request

STARTS = "started.txt"
FINAL = {"REJECTED", "EXPIRED", "COMPLETED", "FAILED", "CANCELLED"}
UNSTARTED = {"OFFERED", "REJECTED", "EXPIRED"}
ACCEPT = {"kind": "uri:enum-value-update", "path": "phase", "value": "ACCEPTED"}


def counting_script(then: str = "sleep 0.5") -> str:
    return f"echo run >> {STARTS}; {then}"


def runs(state: Path, uuid: str) -> int:
    """How many times the session's task started, as its own ``started.txt`` says."""
    directory = state / "sessions" / uuid
    return sum(len(path.read_text().splitlines()) for path in directory.rglob(STARTS))


@contextmanager
def replicas(
    directory: Path, count: int, *, database: str, **changes: Any
) -> Iterator[list[BrokerProcess]]:
    """``count`` brokers with one config, one state directory and one database, each its
    own process on its own port (started at once), all stopped at the end."""
    config = {**BASE_CONFIG, "database": database, **changes}
    brokers = [
        BrokerProcess(config, directory / f"replica-{n}", state_dir=directory / "state")
        for n in range(count)
    ]
    try:
        for broker in brokers:
            broker.spawn()

        async def ready() -> None:
            await asyncio.gather(*(broker.wait_ready() for broker in brokers))

        asyncio.run(ready())
        yield brokers
    finally:
        for broker in brokers:
            broker.stop()


def all_sessions(url: str) -> dict[str, dict[str, Any]]:
    """Every session of the broker, by uuid (asked as the admin)."""
    headers = {"Authorization": "Bearer demo-admin"}
    answer = httpx.get(f"{url}/sessions", headers=headers, timeout=30).raise_for_status()
    return {s["meta"]["uuid"]: s for s in answer.json()["sessions"]}


def wait_until_settled(url: str, timeout: float) -> dict[str, dict[str, Any]]:
    """Wait until no session of the broker is between accepted and final; the sessions then.
    Fails naming the ones still under way."""
    deadline = time.monotonic() + timeout
    while True:
        sessions: dict[str, dict[str, Any]] = {}
        with suppress(httpx.HTTPError):
            sessions = all_sessions(url)
        moving = {u: s["phase"] for u, s in sessions.items() if s["phase"] not in FINAL | UNSTARTED}
        if sessions and not moving:
            return sessions
        if time.monotonic() > deadline:
            raise AssertionError(f"sessions stuck after {timeout:g}s: {moving}")
        time.sleep(0.3)


async def offer_and_accept(
    ask: httpx.AsyncClient, answer: httpx.AsyncClient, script: str, **request: Any
) -> str:
    """Ask one broker for offers on ``script`` and accept the best through another; its uuid."""
    body = (await ask.post("/requests", json=batch_request(script, **request))).raise_for_status()
    uuid = str(body.json()["offers"][0]["meta"]["uuid"])
    (await answer.post(f"/sessions/{uuid}", json=ACCEPT)).raise_for_status()
    return uuid


def alice(url: str) -> httpx.AsyncClient:
    headers = {"Authorization": "Bearer demo-alice"}
    return httpx.AsyncClient(base_url=url, headers=headers, timeout=60)


_STARTED = re.compile(r"session ([0-9a-f-]{36}) started on ")


def logged_starts(logs: Iterable[Path]) -> Counter[str]:
    """How many times the brokers writing ``logs`` say they started each session."""
    found: Counter[str] = Counter()
    for log in logs:
        found.update(_STARTED.findall(log.read_text(errors="replace")))
    return found


def report(
    sessions: dict[str, dict[str, Any]], state: Path, logs: Iterable[Path]
) -> dict[str, list[str]]:
    """Each session that got past its offer, sorted: started twice, lost (not COMPLETED) or
    never run though COMPLETED."""
    found: dict[str, list[str]] = {"twice": [], "lost": [], "unrun": []}
    starts = logged_starts(logs)
    for uuid, session in sessions.items():
        if session["phase"] in UNSTARTED:
            continue
        count = runs(state, uuid)
        if count > 1 or starts[uuid] > 1:
            found["twice"].append(
                f"{uuid} ran {count} times, started {starts[uuid]} times ({session['phase']})"
            )
        if session["phase"] != "COMPLETED":
            messages = [m["message"] for m in session["meta"].get("messages", [])]
            found["lost"].append(f"{uuid} {session['phase']}: {messages[-2:]}")
        elif count == 0:
            found["unrun"].append(f"{uuid} COMPLETED but never ran")
    return found
