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
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager, contextmanager, suppress
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from isodate import parse_duration

from execbroker.timeutil import parse_interval
from tests.brokers import BASE_CONFIG, BrokerProcess, batch_request

STARTS = "started.txt"
FINAL = {"REJECTED", "EXPIRED", "COMPLETED", "FAILED", "CANCELLED"}
UNSTARTED = {"OFFERED", "REJECTED", "EXPIRED"}
ACCEPT = {"kind": "uri:enum-value-update", "path": "phase", "value": "ACCEPTED"}

# Room for every session of a test at once, and a quota small enough to race for.
ROOMY = {"cores": 64, "memory": 64, "storage": 20, "max_sessions": 64, "max_duration": "PT1H"}
QUOTA = {"cores": 4, "memory": 8, "storage": 10, "max_sessions": 3, "max_duration": "PT1H"}
# A lease long enough that a replica slowed down by this shared machine keeps its sessions.
MONITOR = {"interval": "PT0.05S", "lease": "PT3S"}


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


@asynccontextmanager
async def connections(urls: Sequence[str], count: int) -> AsyncIterator[list[httpx.AsyncClient]]:
    """``count`` clients (as alice), dealt to the brokers at ``urls`` in turn; closed after."""
    clients = [alice(urls[n % len(urls)]) for n in range(count)]
    try:
        yield clients
    finally:
        for client in clients:
            await client.aclose()


async def accept_many(
    urls: Sequence[str],
    count: int,
    script: str,
    *,
    clients: int,
    at_once: int | None = None,
    arriving_every: float = 0.0,
    tries: int = 1,
    **request: Any,
) -> list[str]:
    """``count`` sessions on ``script``, offered and accepted in parallel over ``clients``
    clients dealt to the brokers at ``urls``: the n-th asked through client n and accepted
    through the same or another by turns (each of two brokers accepts half the other's
    offers), ``at_once`` at most under way together, the n-th starting ``arriving_every``
    seconds after the one before. A try that fails to reach its broker (one killed) is made
    again through the last client, whose broker the tests keep alive, up to ``tries`` in all;
    the uuids of the sessions accepted, in order (one never accepted left out)."""
    gate = asyncio.Semaphore(at_once or count)

    async def one(pool: list[httpx.AsyncClient], n: int) -> str | None:
        await asyncio.sleep(n * arriving_every)
        first = (pool[n % clients], pool[(n + n // 2) % clients])
        async with gate:
            for attempt, (ask, answer) in enumerate([first] + [(pool[-1], pool[-1])] * (tries - 1)):
                if attempt:
                    await asyncio.sleep(0.2)
                with contextlib.suppress(httpx.TransportError):
                    return await offer_and_accept(ask, answer, script, **request)
        return None

    async with connections(urls, clients) as pool:
        found = await asyncio.gather(*(one(pool, n) for n in range(count)))
    return [uuid for uuid in found if uuid is not None]


def sized_request(cores: int, memory: int, *, later: bool = False) -> dict[str, Any]:
    """A request for up to ``cores`` cores and ``memory`` GiB for ten minutes, starting now or
    (``later``) in an hour."""
    request = batch_request("true", cores=(1, cores), memory=(1, memory), duration="PT10M")
    if later:
        begin = datetime.now(UTC) + timedelta(hours=1)
        window = f"{begin:%Y-%m-%dT%H:%M:%SZ}/{begin + timedelta(hours=2):%Y-%m-%dT%H:%M:%SZ}"
        request["schedule"]["requested"]["start"] = window
    return request


async def race_for_quota(
    urls: Sequence[str], *, clients: int, asks: int, accepts: int, seed: int = 11
) -> list[int]:
    """Over ``clients`` clients dealt to the brokers at ``urls``, ``asks`` requests of random
    sizes (the same each run) at once for an hour from now, so nothing starts; then every
    offer accepted ``accepts`` times at the same moment, each time through the next client.
    The accepts' status codes. Fails naming the requests that got no offers answer."""
    rng = random.Random(seed)
    async with connections(urls, clients) as pool:
        asked = await asyncio.gather(
            *(
                pool[n % clients].post(
                    "/requests",
                    json=sized_request(rng.choice([1, 2]), rng.choice([1, 4]), later=True),
                )
                for n in range(asks)
            )
        )
        failed = [a.text for a in asked if a.status_code != 200]
        if failed:
            raise AssertionError(f"{len(failed)} of {asks} requests failed: {failed[:3]}")
        offers = [o["meta"]["uuid"] for a in asked for o in a.json()["offers"]]
        answers = await asyncio.gather(
            *(
                pool[(n + k) % clients].post(f"/sessions/{uuid}", json=ACCEPT)
                for n, uuid in enumerate(offers)
                for k in range(accepts)
            )
        )
    return [a.status_code for a in answers]


def peak(sessions: Iterable[dict[str, Any]]) -> tuple[int, int, int]:
    """Most cores, memory and sessions booked at any one instant."""
    spans = []
    for s in sessions:
        begin = parse_interval(s["schedule"]["available"]["start"])[0]
        end = begin + parse_duration(s["schedule"]["available"]["duration"])
        spans.append((begin, end, s["compute"]["cores"]["min"], s["compute"]["memory"]["min"]))
    most = (0, 0, 0)
    for t in sorted({span[0] for span in spans}):
        now = [span for span in spans if span[0] <= t < span[1]]
        total = (sum(s[2] for s in now), sum(s[3] for s in now), len(now))
        most = (max(most[0], total[0]), max(most[1], total[1]), max(most[2], total[2]))
    return most


def overbooking(
    statuses: Sequence[int], sessions: Mapping[str, dict[str, Any]], quota: Mapping[str, Any]
) -> list[str]:
    """What a race for the quota (``race_for_quota``) left wrong, as the broker lists its
    ``sessions`` after it: an accept answered neither 200 nor 409, booked sessions other
    than the accepts answered 200 (or none), more booked at once than ``quota`` holds."""
    wrong = [f"an accept answered {code}" for code in sorted(set(statuses) - {200, 409})]
    booked = [s for s in sessions.values() if s["phase"] in ("ACCEPTED", "WAITING")]
    if not len(booked) == statuses.count(200) >= 1:
        wrong.append(f"{len(booked)} sessions booked by {statuses.count(200)} accepts")
    for name, most in zip(("cores", "memory", "max_sessions"), peak(booked), strict=True):
        if most > quota[name]:
            wrong.append(f"{name}: {most} booked at once, over the quota of {quota[name]}")
    return wrong


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
    accepted: Iterable[str] = (),
) -> dict[str, list[str]]:
    """Each session that got past its offer, sorted: started twice, lost (not COMPLETED) or
    never run though COMPLETED. How often each task ran is what its ``started.txt`` says,
    or ``ran`` where the test counted it another way (a platform's own record). A session
    the test saw ``accepted`` is lost too if it is not listed or went back to unstarted."""
    found: dict[str, list[str]] = {"twice": [], "lost": [], "unrun": []}
    starts = logged_starts(logs)
    seen = set(accepted)
    found["lost"].extend(f"{uuid} accepted, not listed" for uuid in sorted(seen - {*sessions}))
    for uuid, session in sessions.items():
        if session["phase"] in UNSTARTED and uuid not in seen:
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
