"""Accepts, rejects and cancels racing each other (and offers expiring under them) never
answer 5xx, never book an offer twice or two siblings, never overbook; and a booking
transaction that fails answers every accept of its group 503, books none of them, and is
followed by bookings that work.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import sqlite3
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import psycopg
import pytest
from sqlalchemy.engine import make_url

from tests.api.test_concurrency import BOOKED, QUOTA, _peak
from tests.brokers import batch_request, running_broker

TTL = 2.0  # seconds: short, so some accepts meet an offer just expired
MIXES = ("accept", "twice", "siblings", "reject", "cancel", "expire")
# What each kind of call may answer: 409 when the phase, the calendar or the quota says no.
ALLOWED = {"request": {200}, "accept": {200, 409}, "reject": {200, 409}, "cancel": {200, 409}}


def _update(phase: str) -> dict[str, str]:
    return {"kind": "uri:enum-value-update", "path": "phase", "value": phase}


def _later_request(rng: random.Random) -> dict[str, Any]:
    """Starting within the next hour and a half, so nothing is launched during the test."""
    request = batch_request(
        "true", cores=(1, rng.choice([1, 2, 4])), memory=(1, rng.choice([1, 4])), duration="PT20M"
    )
    start = datetime.now(UTC) + timedelta(hours=1)
    request["schedule"]["requested"]["start"] = f"{start:%Y-%m-%dT%H:%M:%SZ}/PT30M"
    return request


class Run:
    """Every call made and its answer, for the checks at the end."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, int, str]] = []  # kind, session, status, detail
        self.sets: dict[str, str] = {}  # offer -> its offer set
        self.offers: list[dict[str, Any]] = []
        self.pairs: list[tuple[str, int, int]] = []  # mix, status, status of calls at once

    async def call(self, client: httpx.AsyncClient, kind: str, uuid: str) -> int:
        phase = {"accept": "ACCEPTED", "reject": "REJECTED", "cancel": "CANCELLED"}[kind]
        answer = await client.post(f"/sessions/{uuid}", json=_update(phase))
        detail = answer.json().get("detail", "") if answer.status_code != 200 else ""
        self.calls.append((kind, uuid, answer.status_code, detail))
        return answer.status_code

    async def mix(self, client: httpx.AsyncClient, rng: random.Random, mix: str) -> None:
        answer = await client.post("/requests", json=_later_request(rng))
        self.calls.append(("request", "", answer.status_code, answer.text[:200]))
        offers = [o["meta"]["uuid"] for o in answer.json().get("offers", [])]
        for offer in answer.json().get("offers", []):
            self.sets[offer["meta"]["uuid"]] = answer.json()["meta"]["uuid"]
            self.offers.append({**offer, "_set": answer.json()["meta"]["uuid"]})
        if not offers:
            return
        first = rng.choice(offers)
        if mix == "accept":
            await self.call(client, "accept", first)
        elif mix == "cancel":
            if await self.call(client, "accept", first) == 200:
                await self.call(client, "cancel", first)
        elif mix == "expire":
            await asyncio.sleep(TTL * rng.uniform(0.8, 1.2))
            await self.call(client, "accept", first)
        else:
            second = {"twice": first, "reject": first}.get(mix) or offers[-1]
            kind = "reject" if mix == "reject" else "accept"
            a, b = await asyncio.gather(
                self.call(client, "accept", first), self.call(client, kind, second)
            )
            self.pairs.append((mix, a, b))  # never both: one offer, or siblings


async def _storm(url: str, mixes: int, clients: int, seed: int) -> Run:
    run = Run()
    rng = random.Random(seed)
    gate = asyncio.Semaphore(clients)
    headers = {"Authorization": "Bearer demo-alice"}
    limits = httpx.Limits(max_connections=100)
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=60, limits=limits) as c:

        async def one(mix: str) -> None:
            async with gate:
                await run.mix(c, rng, mix)

        await asyncio.gather(*(one(rng.choice(MIXES)) for _ in range(mixes)))
    return run


@pytest.mark.parametrize(
    "database", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def test_racing_accepts_rejects_cancels_and_expiries(tmp_path, database, request):
    changes: dict[str, Any] = {
        "quota": QUOTA,
        "offers": {"max": 4, "ttl": f"PT{TTL:g}S"},
        "monitor": {"interval": "PT0.5S", "lease": "PT2S"},
    }
    if database == "postgres":
        changes["database"] = request.getfixturevalue("postgres_url")
    with running_broker(tmp_path, **changes) as broker:
        run = asyncio.run(_storm(broker.url, mixes=48, clients=16, seed=11))
        with broker.client("demo-admin") as admin:
            sessions = admin.get("/sessions").raise_for_status().json()["sessions"]
        log = broker.log_path.read_text(errors="replace")

    for kind, uuid, status, detail in run.calls:
        assert status in ALLOWED[kind], (kind, uuid, status, detail)
        if status == 409:
            assert detail, (kind, uuid)  # a refusal says why
    statuses = Counter((kind, status) for kind, _, status, _ in run.calls)
    assert statuses["accept", 200] >= 1 and statuses["accept", 409] >= 1, statuses
    for mix, a, b in run.pairs:  # one offer twice, two siblings, an accept with a reject
        assert (a, b) != (200, 200), mix
    assert "Traceback" not in log and "Exception in ASGI" not in log

    phases = Counter(s["meta"]["uuid"] for s in sessions)
    assert set(phases.values()) == {1}  # each session listed exactly once
    by_uuid = {s["meta"]["uuid"]: s for s in sessions}
    cancelled = {u for kind, u, status, _ in run.calls if kind == "cancel" and status == 200}
    accepted = {u for kind, u, status, _ in run.calls if kind == "accept" and status == 200}
    for uuid in accepted:
        wanted = {"CANCELLED"} if uuid in cancelled else BOOKED
        assert by_uuid[uuid]["phase"] in wanted, (uuid, by_uuid[uuid]["phase"])
    booked = [s for s in sessions if s["phase"] in BOOKED]
    assert {s["meta"]["uuid"] for s in booked} == accepted - cancelled
    held = [s["meta"]["uuid"] for s in booked] + sorted(cancelled)
    per_set = Counter(run.sets[uuid] for uuid in held)
    assert max(per_set.values()) == 1  # never two accepted siblings
    cores, memory, count = _peak(booked, alternatives=False)
    assert cores <= QUOTA["cores"] and memory <= QUOTA["memory"]
    assert count <= QUOTA["max_sessions"]


def _first_offers(client: httpx.Client, count: int) -> list[str]:
    """The first offer of each of ``count`` offer sets asked for the same later request."""
    return [
        client.post("/requests", json=_later_request(random.Random(0)))
        .raise_for_status()
        .json()["offers"][0]["meta"]["uuid"]
        for _ in range(count)
    ]


async def _accept_all(url: str, offers: list[str]) -> list[httpx.Response]:
    headers = {"Authorization": "Bearer demo-alice"}
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=60) as client:
        return list(
            await asyncio.gather(
                *(client.post(f"/sessions/{o}", json=_update("ACCEPTED")) for o in offers)
            )
        )


@contextmanager
def _write_lock_held(database: str, url: str) -> Iterator[None]:
    """Another connection holding what every booking transaction must take: SQLite's write
    lock, or PostgreSQL's broker_lock row."""
    if database == "sqlite":
        blocker = sqlite3.connect(make_url(url).database, isolation_level=None)
        blocker.execute("BEGIN EXCLUSIVE")
    else:
        plain = make_url(url).set(drivername="postgresql", query={})
        blocker = psycopg.connect(plain.render_as_string(hide_password=False))
        blocker.execute("SELECT version FROM broker_lock WHERE id = 1 FOR UPDATE")
    try:
        yield
    finally:
        blocker.rollback()
        blocker.close()


@pytest.mark.parametrize(
    "database", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def test_a_booking_transaction_that_fails_answers_its_whole_group_503(tmp_path, database, request):
    """Another connection holds the booking lock for longer than the database waits (busy
    timeout, lock_timeout): every accept waiting on it gets a 503 saying so (never a 500,
    never left hanging), none is booked, and once the lock is gone the same accepts are."""
    if database == "sqlite":
        url = f"sqlite:///{tmp_path / 'state' / 'broker.db'}?timeout=1"
    else:
        url = request.getfixturevalue("postgres_url") + "?options=-c%20lock_timeout%3D1000"
    changes = {
        "quota": {**QUOTA, "max_sessions": 8},
        "database": url,
        "monitor": {"interval": "PT0.5S", "lease": "PT2S"},
    }
    with running_broker(tmp_path, **changes) as broker:
        with broker.client() as client:
            offers = _first_offers(client, 4)
            with _write_lock_held(database, url):
                answers = asyncio.run(_accept_all(broker.url, offers))
                for answer in answers:
                    assert answer.status_code == 503, answer.text
                    assert "the database could not answer now" in answer.json()["detail"]
                # nothing of the failed group was booked (readers are not blocked)
                for offer in offers:
                    assert client.get(f"/sessions/{offer}").json()["phase"] == "OFFERED"
            answers = asyncio.run(_accept_all(broker.url, offers))
            assert [answer.status_code for answer in answers] == [200] * len(offers)
            for offer in offers:
                assert client.get(f"/sessions/{offer}").json()["phase"] in BOOKED
        log = broker.log_path.read_text(errors="replace")
    assert "Exception in ASGI" not in log


async def _accepts_cut_by_a_kill(broker: Any, offers: list[str]) -> set[str]:
    """Every offer accepted at once (twice), the broker killed with SIGKILL as soon as the
    first answer arrives (the others in the group being booked then, or queued): the offers
    answered 200."""
    headers = {"Authorization": "Bearer demo-alice"}
    answered: set[str] = set()
    first = asyncio.Event()
    async with httpx.AsyncClient(base_url=broker.url, headers=headers, timeout=60) as client:

        async def accept(offer: str) -> None:
            try:
                answer = await client.post(f"/sessions/{offer}", json=_update("ACCEPTED"))
            except httpx.HTTPError:  # cut by the kill
                return
            assert answer.status_code in {200, 409}, answer.text
            if answer.status_code == 200:
                answered.add(offer)
            first.set()

        tasks = [asyncio.create_task(accept(offer)) for offer in offers * 2]
        await asyncio.wait_for(first.wait(), 60)
        await asyncio.to_thread(broker.kill)
        await asyncio.gather(*tasks)
    return answered


@pytest.mark.parametrize(
    "database", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def test_a_kill_in_the_middle_of_a_group_books_all_or_nothing_of_it(tmp_path, database, request):
    """After SIGKILL mid-group and a restart: every accept answered 200 is booked, at most
    one offer per set, and accepts on the index rebuilt from the database still respect the
    quota against what the killed process booked."""
    changes: dict[str, Any] = {
        "quota": QUOTA,
        "monitor": {"interval": "PT0.5S", "lease": "PT2S"},
    }
    if database == "postgres":
        changes["database"] = request.getfixturevalue("postgres_url")
    rng = random.Random(3)
    with running_broker(tmp_path, **changes) as broker:
        with broker.client() as client:
            answers = [
                client.post("/requests", json=_later_request(rng)).raise_for_status().json()
                for _ in range(6)
            ]
        sets = {o["meta"]["uuid"]: a["meta"]["uuid"] for a in answers for o in a["offers"]}
        offers = list(sets)
        answered = asyncio.run(_accepts_cut_by_a_kill(broker, offers))
        broker.start()
        with broker.client() as client:
            later = [update_status(client, offer) for offer in offers]
            assert set(later) <= {200, 409}, later
            with broker.client("demo-admin") as admin:
                sessions = admin.get("/sessions").raise_for_status().json()["sessions"]
        log = broker.log_path.read_text(errors="replace")
    booked = [s for s in sessions if s["phase"] in BOOKED]
    assert answered <= {s["meta"]["uuid"] for s in booked}
    assert max(Counter(sets[s["meta"]["uuid"]] for s in booked).values()) == 1
    cores, memory, count = _peak(booked, alternatives=False)
    assert cores <= QUOTA["cores"] and memory <= QUOTA["memory"]
    assert count <= QUOTA["max_sessions"]
    assert "Exception in ASGI" not in log


def update_status(client: httpx.Client, offer: str) -> int:
    return client.post(f"/sessions/{offer}", json=_update("ACCEPTED")).status_code


BIG = {"cores": 64, "memory": 128, "storage": 20, "max_sessions": 50, "max_duration": "PT1H"}
FULL_DISK = "could not extend file: No space left on device"


def _refuse_accepts(database: str, url: str, *, at_commit: bool, only: str = "") -> None:
    """A trigger failing what accepts an offer (``only`` that one, if given) as a full disk
    would: at COMMIT, after every accept of the group ran and the index was told
    (PostgreSQL), or in the accept's own UPDATE. On SQLite that ends the whole transaction
    (``RAISE(ROLLBACK)``, as SQLite does itself on a full disk or an I/O error)."""
    when = "NEW.phase = 'ACCEPTED'" + (f" AND NEW.uuid = '{only}'" if only else "")
    if database == "sqlite":
        with contextlib.closing(sqlite3.connect(make_url(url).database)) as admin, admin:
            admin.execute(
                f"CREATE TRIGGER refuse_accept AFTER UPDATE OF phase ON sessions WHEN {when}"
                f" BEGIN SELECT RAISE(ROLLBACK, '{FULL_DISK}'); END"
            )
        return
    timing = "DEFERRABLE INITIALLY DEFERRED" if at_commit else ""
    with _admin(url) as admin:
        admin.execute(
            "CREATE FUNCTION refuse_accept() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
            f" RAISE EXCEPTION '{FULL_DISK}' USING ERRCODE = 'disk_full'; END $$"
        )
        admin.execute(
            f"CREATE CONSTRAINT TRIGGER refuse_accept AFTER UPDATE ON sessions {timing}"
            f" FOR EACH ROW WHEN ({when}) EXECUTE FUNCTION refuse_accept()"
        )


def _allow_accepts(database: str, url: str) -> None:
    if database == "sqlite":
        with contextlib.closing(sqlite3.connect(make_url(url).database)) as admin, admin:
            admin.execute("DROP TRIGGER refuse_accept")
    else:
        with _admin(url) as admin:
            admin.execute("DROP TRIGGER refuse_accept ON sessions")


def _admin(url: str) -> psycopg.Connection:
    plain = make_url(url).set(drivername="postgresql", query={})
    return psycopg.connect(plain.render_as_string(hide_password=False), autocommit=True)


@pytest.mark.parametrize(
    ("database", "at_commit"),
    [
        ("sqlite", False),
        pytest.param("postgres", False, marks=pytest.mark.postgres),
        pytest.param("postgres", True, marks=pytest.mark.postgres),
    ],
    ids=["sqlite-in-one-accept", "postgres-in-one-accept", "postgres-at-commit"],
)
def test_a_database_error_in_a_group_answers_503_and_books_nothing_of_it(
    tmp_path, database, at_commit, request
):
    """Every accept whose group the database failed is answered 503 and left OFFERED (none
    half-committed, none 500, none answered 200 yet rolled back); once the database works
    again they are booked."""
    if database == "sqlite":
        url = f"sqlite:///{tmp_path / 'state' / 'broker.db'}"
    else:
        url = request.getfixturevalue("postgres_url")
    changes = {"quota": BIG, "database": url, "monitor": {"interval": "PT0.5S", "lease": "PT2S"}}
    with running_broker(tmp_path, **changes) as broker:
        with broker.client() as client:
            offers = _first_offers(client, 8)
            # one in the middle of the group, after accepts that its failure must undo
            poisoned = offers[5]
            _refuse_accepts(database, url, at_commit=at_commit, only="" if at_commit else poisoned)
            answers = dict(zip(offers, asyncio.run(_accept_all(broker.url, offers)), strict=True))
            assert answers[poisoned].status_code == 503, answers[poisoned].text
            for offer, answer in answers.items():
                assert answer.status_code in {200, 503}, answer.text
                phase = client.get(f"/sessions/{offer}").json()["phase"]
                if answer.status_code == 503:
                    assert "No space left on device" in answer.json()["detail"]
                    assert phase == "OFFERED", (offer, phase)
                else:
                    assert not at_commit and phase in BOOKED, (offer, phase)
            _allow_accepts(database, url)
            refused = [offer for offer, answer in answers.items() if answer.status_code == 503]
            again = asyncio.run(_accept_all(broker.url, refused))
            assert [answer.status_code for answer in again] == [200] * len(refused)
            for offer in offers:
                assert client.get(f"/sessions/{offer}").json()["phase"] in BOOKED
        log = broker.log_path.read_text(errors="replace")
    assert "Exception in ASGI" not in log
