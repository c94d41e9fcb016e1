"""How fast a broker answers, and how that scales with what its calendar already holds.

For 0, 1 000 and 10 000 existing bookings it measures, against a real broker process
over HTTP: the median and p95 latency of ``POST /offersets`` and the rate of accepts
(clients accepting concurrently). ``GET /health`` is timed in the same run as the
floor a request cannot go under (HTTP + uvicorn), since these machines are noisy.

    python benchmarks/offers.py [--requests 100] [--levels 0,1000,10000]

Prints one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx

from execbroker.launcher import LOCAL_CONFIG, BrokerProcess
from execbroker.model.sessions import Phase
from execbroker.store.engine import Database
from execbroker.store.tables import OfferSetRow, SessionRow

BIG_QUOTA = {
    "cores": 100_000,
    "memory": 200_000,
    "storage": 0,
    "max_sessions": 100_000,
    "max_duration": "PT2H",
    "horizon": "P7D",
}
REQUEST = {
    "executable": {"kind": "batch-script", "script": "true"},
    "compute": {"cores": {"min": 1, "max": 2}, "memory": {"min": 1, "max": 2}},
    "schedule": {"requested": {"duration": "PT1H"}},
}


def preload(url: str, bookings: int) -> None:
    """``bookings`` accepted sessions spread over the next week (none starts during the run)."""
    database = Database.open(url)
    now = datetime.now(UTC)
    offerset = OfferSetRow(
        uuid=str(uuid.uuid4()), owner="bob", created=now, result="YES", request={}, messages=[]
    )
    rows = []
    for index in range(bookings):
        start = now + timedelta(hours=1) + timedelta(days=6) * index / max(1, bookings)
        rows.append(
            SessionRow(
                uuid=str(uuid.uuid4()),
                offerset_uuid=offerset.uuid,
                owner="bob",
                phase=Phase.WAITING,
                created=now,
                modified=now,
                expires=now,
                start=start,
                end=start + timedelta(hours=1),
                cores=1 + index % 4,
                memory_gib=1 + index % 8,
                storage_gib=0,
                cost=None,
                cost_type=None,
                executable={"kind": "batch-script"},
                platform="local",
                handle=None,
                messages=[],
                endpoints=[],
            )
        )
    with database.write() as db:
        db.add(offerset)
        db.flush()
        db.add_all(rows)
    database.close()


def _ms(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "median_ms": round(statistics.median(ordered) * 1000, 2),
        "p95_ms": round(ordered[int(0.95 * (len(ordered) - 1))] * 1000, 2),
    }


async def _accepts(url: str, count: int, concurrency: int) -> float:
    headers = {"Authorization": "Bearer demo-alice"}
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=60) as client:
        offers = []
        for _ in range(count):
            answer = (await client.post("/offersets", json=REQUEST)).json()
            offers.append(answer["offers"][-1]["meta"]["uuid"])
        update = {"kind": "uri:enum-value-update", "path": "phase", "value": "ACCEPTED"}
        gate = asyncio.Semaphore(concurrency)

        async def accept(session: str) -> None:
            async with gate:
                (await client.post(f"/sessions/{session}", json=update)).raise_for_status()

        started = time.perf_counter()
        await asyncio.gather(*(accept(session) for session in offers))
        return count / (time.perf_counter() - started)


def measure(bookings: int, requests: int, directory: Path) -> dict[str, object]:
    config = {
        **LOCAL_CONFIG,
        "name": f"bench-{bookings}",
        "quota": BIG_QUOTA,
        "monitor": {"interval": "PT60S"},
    }
    broker = BrokerProcess(config, directory)
    preload(f"sqlite:///{directory / 'state' / 'broker.db'}", bookings)
    broker.start()
    try:
        with broker.client() as client:
            for _ in range(5):  # warm up
                client.get("/health")
                client.post("/offersets", json=REQUEST)
            health, offers = [], []
            for _ in range(requests):
                started = time.perf_counter()
                client.get("/health").raise_for_status()
                health.append(time.perf_counter() - started)
                started = time.perf_counter()
                answer = client.post("/offersets", json=REQUEST).raise_for_status().json()
                offers.append(time.perf_counter() - started)
                assert answer["result"] == "YES", answer
        rate = asyncio.run(_accepts(broker.url, max(20, requests // 2), concurrency=8))
    finally:
        broker.stop()
    return {
        "bookings": bookings,
        "post_offersets": _ms(offers),
        "get_health_baseline": _ms(health),
        "offers_over_baseline": round(statistics.median(offers) / statistics.median(health), 2),
        "accepts_per_s": round(rate, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=100)
    parser.add_argument("--levels", default="0,1000,10000")
    args = parser.parse_args()
    levels = [int(level) for level in args.levels.split(",")]
    with tempfile.TemporaryDirectory(prefix="execbroker-bench-") as temporary:
        results = [measure(level, args.requests, Path(temporary) / str(level)) for level in levels]
    first, last = results[0], results[-1]
    print(
        json.dumps(
            {
                "benchmark": "offers",
                "requests_per_level": args.requests,
                "levels": results,
                "median_slowdown_at_most_bookings": round(
                    last["post_offersets"]["median_ms"] / first["post_offersets"]["median_ms"], 2
                ),
            }
        )
    )


if __name__ == "__main__":
    main()
