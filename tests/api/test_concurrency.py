"""Many clients at once never make a broker hold or book more than its quota, at any instant.

The check is independent of the planner: it reads every session back over HTTP and
sweeps over their intervals itself.
"""

from __future__ import annotations

import asyncio
import os
import random

import httpx
import pytest

from execbroker.timeutil import parse_interval
from tests.brokers import batch_request, running_broker

QUOTA = {"cores": 4, "memory": 8, "storage": 10, "max_sessions": 3, "max_duration": "PT1H"}
HOLDING = {"OFFERED", "ACCEPTED", "WAITING", "PREPARING", "AVAILABLE", "RUNNING", "RELEASING"}
# Accepted sessions: booked, or (an accept wakes the monitor, so a short task may already be
# done) finished; each held its interval of the calendar either way.
BOOKED = (HOLDING - {"OFFERED"}) | {"COMPLETED", "FAILED"}


def _peak(sessions: list[dict], *, alternatives: bool) -> tuple[int, int, int]:
    """Max cores, memory and session count held at any instant; offers of one set count once
    (as their max), since at most one of them can ever be accepted."""
    spans = []
    for s in sessions:
        start = parse_interval(s["schedule"]["available"]["start"])[0]
        from isodate import parse_duration

        end = start + parse_duration(s["schedule"]["available"]["duration"])
        group = s["meta"]["url"] if not alternatives or s["phase"] != "OFFERED" else s["_set"]
        spans.append(
            (start, end, s["compute"]["cores"]["min"], s["compute"]["memory"]["min"], group)
        )
    instants = sorted({span[0] for span in spans})
    peak = (0, 0, 0)
    for t in instants:
        active = [span for span in spans if span[0] <= t < span[1]]
        groups: dict[str, tuple[int, int]] = {}
        for _, _, cores, memory, group in active:
            held = groups.get(group, (0, 0))
            groups[group] = (max(held[0], cores), max(held[1], memory))
        total = (
            sum(c for c, _ in groups.values()),
            sum(m for _, m in groups.values()),
            len(groups),
        )
        peak = tuple(max(a, b) for a, b in zip(peak, total, strict=True))
    return peak


async def _ask_and_accept(url: str, n: int) -> tuple[list[dict], list[int]]:
    headers = {"Authorization": "Bearer demo-alice"}
    limits = httpx.Limits(max_connections=100)
    async with httpx.AsyncClient(
        base_url=url, headers=headers, timeout=60, limits=limits
    ) as client:
        rng = random.Random(7)
        requests = [
            batch_request(
                "sleep 1",
                cores=(1, rng.choice([1, 2, 4])),
                memory=(1, rng.choice([1, 4])),
                duration=rng.choice(["PT10M", "PT20M"]),
            )
            for _ in range(n)
        ]
        answers = await asyncio.gather(*(client.post("/requests", json=r) for r in requests))
        offers = []
        for answer in answers:
            body = answer.raise_for_status().json()
            for offer in body["offers"]:
                offers.append({**offer, "_set": body["meta"]["uuid"]})
        # Every offer (and some twice) accepted at the same moment.
        targets = [o["meta"]["uuid"] for o in offers] + [o["meta"]["uuid"] for o in offers[::3]]
        rng.shuffle(targets)
        update = {"kind": "uri:enum-value-update", "path": "phase", "value": "ACCEPTED"}
        results = await asyncio.gather(
            *(client.post(f"/sessions/{t}", json=update) for t in targets)
        )
        return offers, [r.status_code for r in results]


@pytest.mark.parametrize(
    "database", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def test_concurrent_requests_and_accepts_never_overbook(tmp_path, database, request):
    changes = {"quota": QUOTA, "monitor": {"interval": "PT60S"}}
    if database == "postgres":
        changes["database"] = request.getfixturevalue("postgres_url")
    with running_broker(tmp_path, **changes) as broker:
        offers, statuses = asyncio.run(_ask_and_accept(broker.url, 60))
        assert len(statuses) >= 50
        assert set(statuses) <= {200, 409}, statuses
        assert statuses.count(200) >= 1
        # holds at the moment all offers existed: offers grouped per set, within quota
        cores, memory, count = _peak(offers, alternatives=True)
        assert (
            cores <= QUOTA["cores"] and memory <= QUOTA["memory"] and count <= QUOTA["max_sessions"]
        )
        with broker.client("demo-admin") as admin:
            sessions = admin.get("/sessions").json()["sessions"]
        booked = [s for s in sessions if s["phase"] in BOOKED]
        assert len(booked) == statuses.count(200)
        # at most one accepted per offer set
        by_set: dict[str, int] = {}
        sets = {o["meta"]["uuid"]: o["_set"] for o in offers}
        for s in booked:
            by_set[sets[s["meta"]["uuid"]]] = by_set.get(sets[s["meta"]["uuid"]], 0) + 1
        assert max(by_set.values()) == 1
        cores, memory, count = _peak(booked, alternatives=False)
        assert (
            cores <= QUOTA["cores"] and memory <= QUOTA["memory"] and count <= QUOTA["max_sessions"]
        )
        assert os.path.exists(broker.directory / "broker.log")


async def _accept_and_reject_at_once(url: str, sets: int) -> list[tuple[str, int, int]]:
    """For each of ``sets`` offer sets, its first offer accepted and rejected at the same
    moment: (offer, accept status, reject status) for each."""
    headers = {"Authorization": "Bearer demo-alice"}
    limits = httpx.Limits(max_connections=100)
    async with httpx.AsyncClient(
        base_url=url, headers=headers, timeout=60, limits=limits
    ) as client:
        request = batch_request("true", cores=(1, 2), memory=(1, 2), duration="PT10M")
        answers = [(await client.post("/requests", json=request)).json() for _ in range(sets)]
        offers = [answer["offers"][0]["meta"]["uuid"] for answer in answers]

        def update(phase: str) -> dict[str, str]:
            return {"kind": "uri:enum-value-update", "path": "phase", "value": phase}

        async def both(offer: str) -> tuple[str, int, int]:
            accepted, rejected = await asyncio.gather(
                client.post(f"/sessions/{offer}", json=update("ACCEPTED")),
                client.post(f"/sessions/{offer}", json=update("REJECTED")),
            )
            return offer, accepted.status_code, rejected.status_code

        return list(await asyncio.gather(*(both(offer) for offer in offers)))


@pytest.mark.postgres
def test_an_offer_accepted_and_rejected_at_once_ends_one_way(tmp_path, postgres_url):
    """Exactly one of the two wins, and the session's phase is the winner's: never an accept
    answered 200 whose session a reject then overwrote (a read-then-write race on PostgreSQL,
    where a reject does not take the booking lock)."""
    quota = {**QUOTA, "max_sessions": 100, "cores": 400, "memory": 800}
    changes = {"quota": quota, "monitor": {"interval": "PT60S"}, "database": postgres_url}
    with running_broker(tmp_path, **changes) as broker:
        outcomes = asyncio.run(_accept_and_reject_at_once(broker.url, 40))
        with broker.client() as client:
            for offer, accepted, rejected in outcomes:
                assert {accepted, rejected} == {200, 409}, (offer, accepted, rejected)
                phase = client.get(f"/sessions/{offer}").raise_for_status().json()["phase"]
                if accepted == 200:
                    assert phase in BOOKED, (offer, phase)
                else:
                    assert phase == "REJECTED", (offer, phase)
