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
import contextlib
import random
import re
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager, suppress
from datetime import UTC, datetime
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
    sessions: dict[str, dict[str, Any]],
    state: Path,
    logs: Iterable[Path],
    *,
    ran: Mapping[str, int] | None = None,
) -> dict[str, list[str]]:
    """Each session that got past its offer, sorted: started twice, lost (not COMPLETED) or
    never run though COMPLETED. How often each task ran is what its ``started.txt`` says,
    or ``ran`` where the test counted it another way (a platform's own record)."""
    found: dict[str, list[str]] = {"twice": [], "lost": [], "unrun": []}
    starts = logged_starts(logs)
    for uuid, session in sessions.items():
        if session["phase"] in UNSTARTED:
            continue
        count = runs(state, uuid) if ran is None else ran.get(uuid, 0)
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


def keep_accepting(
    url: str, request: Callable[[], dict[str, Any]], stop: threading.Event, gap: float = 0.02
) -> None:
    """As alice, offer and accept sessions one after another until ``stop``, through kills
    and restarts: a request to a dead broker, or one it has no offer for (its quota full),
    is simply tried again."""
    headers = {"Authorization": "Bearer demo-alice"}
    with httpx.Client(base_url=url, headers=headers, timeout=10) as client:
        while not stop.is_set():
            with contextlib.suppress(httpx.TransportError, httpx.HTTPStatusError):
                offers = client.post("/requests", json=request()).raise_for_status().json()
                if offers["offers"]:
                    client.post(f"/sessions/{offers['offers'][0]['meta']['uuid']}", json=ACCEPT)
                else:
                    stop.wait(0.3)
            stop.wait(gap)


def kill_while_accepting(
    broker: BrokerProcess,
    request: Callable[[], dict[str, Any]],
    kills: int,
    *,
    pause: tuple[float, float] = (0.2, 1.5),
    gap: float = 0.02,
    settle: float = 120,
) -> dict[str, dict[str, Any]]:
    """Keep sessions coming to the (started) ``broker`` while it is killed with SIGKILL
    ``kills`` times, each after a random ``pause`` (seconds) and started again at once
    (``gap`` seconds between one accept and the next offer);
    then wait until every session settles, and return them all. The broker is left running."""
    stop = threading.Event()
    driver = threading.Thread(
        target=keep_accepting, args=(broker.url, request, stop, gap), daemon=True
    )
    driver.start()
    rng = random.Random()
    try:
        for _ in range(kills):
            time.sleep(rng.uniform(*pause))
            broker.kill()
            broker.start()
    finally:
        stop.set()
        driver.join(timeout=30)
    return wait_until_settled(broker.url, timeout=settle)


NOTHING_WRONG: dict[str, list[str]] = {"twice": [], "lost": [], "unrun": []}


def starting_now(seconds: int = 10) -> str:
    """A requested start window from now: an offer for later (the quota full) is none."""
    now = datetime.now(UTC).replace(microsecond=0)
    return f"{now.isoformat().replace('+00:00', 'Z')}/PT{seconds}S"
