"""How fast a broker answers, and how that scales with what its calendar already holds.

For 0, 1 000, 10 000 and 100 000 existing bookings it measures, against a real broker
process over HTTP: the median and p95 latency of ``POST /offersets`` and the rate of accepts
(8 clients accepting concurrently offers that start an hour later, so no task is launched
meanwhile; then a check that nothing is overbooked). ``GET /health``
is timed in the same run as the floor a request cannot go under (HTTP + uvicorn), and, when
Slurm is up, the same question put to Slurm (``sbatch --test-only``: when could this start?)
interleaved with ours, since these machines are noisy. ``--database postgres`` runs each
level on a fresh PostgreSQL database (``EXECBROKER_TEST_POSTGRES_URL``'s server).
``--workers N`` serves the broker with N worker processes (``serve --workers``); a list
(``--workers 1,2``) measures each in turn, back to back in one run.

The broker's own CPU time per ``POST /offersets`` and per ``GET /health`` (user + system,
read from ``/proc/<pid>/stat`` of the broker and its child processes around each timed
request) is printed too: on a shared machine it moves far less than latency does, so it is
the figure to compare a change by (its ticks are 10 ms: it is a mean over the requests).

    python benchmarks/offers.py [--requests 100] [--levels 0,1000,10000,100000]
        [--database sqlite|postgres] [--accepts N] [--workers 1|2|1,2]

Each level also reports the broker's CPU per accept (``broker_cpu_ms_per_accept``, user +
system from /proc over the accepts), which a busy machine disturbs far less than the rate.

Prints one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import statistics
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
from sqlalchemy import insert, select

from execbroker.launcher import (
    LOCAL_CONFIG,
    BrokerProcess,
    fresh_postgres_database,
    process_cpu_seconds,
)
from execbroker.model.sessions import Phase
from execbroker.store.engine import Database
from execbroker.store.tables import OfferSetRow, SessionRow

SERVICES_ENV = Path("/var/lib/execbroker/services.env")

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
            {
                "uuid": str(uuid.uuid4()),
                "offerset_uuid": offerset.uuid,
                "owner": "bob",
                "phase": Phase.WAITING.value,
                "created": now,
                "modified": now,
                "expires": now,
                "start": start,
                "end": start + timedelta(hours=1),
                "cores": 1 + index % 4,
                "memory_gib": 1 + index % 8,
                "storage_gib": 0,
                "executable": {"kind": "batch-script"},
                "platform": "local",
                "messages": [],
                "endpoints": [],
                "dialect": "execbroker",
            }
        )
    with database.write() as db:
        db.add(offerset)
        db.flush()
        for first in range(0, len(rows), 5000):
            db.execute(insert(SessionRow), rows[first : first + 5000])
    database.close()


def _ms(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "median_ms": round(statistics.median(ordered) * 1000, 2),
        "p95_ms": round(ordered[int(0.95 * (len(ordered) - 1))] * 1000, 2),
    }


def later_request() -> dict[str, object]:
    """REQUEST starting an hour from now: its accepts book capacity and start nothing during
    the run, so the rate is the booking's (launching tasks is ``benchmarks/launch.py``'s)."""
    start = datetime.now(UTC) + timedelta(hours=1)
    schedule = {"start": f"{start:%Y-%m-%dT%H:%M:%SZ}/PT10M", "duration": "PT1H"}
    return {**REQUEST, "schedule": {"requested": schedule}}


async def _accepts(url: str, count: int, concurrency: int, pid: int) -> tuple[float, int, float]:
    """Accepts per second with ``concurrency`` clients at once (each its own connection, which
    any worker may have taken), how many were refused, and the broker's CPU seconds per
    accept (process ``pid`` and its workers) over them."""
    headers = {"Authorization": "Bearer demo-alice"}
    request = later_request()
    clients = [
        httpx.AsyncClient(base_url=url, headers=headers, timeout=60) for _ in range(concurrency)
    ]
    try:
        offers = []
        for _ in range(count):
            answer = (await clients[0].post("/offersets", json=request)).json()
            offers.append(answer["offers"][-1]["meta"]["uuid"])
        update = {"kind": "uri:enum-value-update", "path": "phase", "value": "ACCEPTED"}
        refused = 0

        async def accept(client: httpx.AsyncClient, sessions: list[str]) -> None:
            nonlocal refused
            for session in sessions:
                response = await client.post(f"/sessions/{session}", json=update)
                if response.status_code == 409:
                    refused += 1
                else:
                    response.raise_for_status()

        for client in clients:  # each client's connection open before the clock starts
            (await client.get("/health")).raise_for_status()
        cpu = process_cpu_seconds(pid)
        started = time.perf_counter()
        await asyncio.gather(
            *(accept(client, offers[n::concurrency]) for n, client in enumerate(clients))
        )
        elapsed = time.perf_counter() - started
        return count / elapsed, refused, (process_cpu_seconds(pid) - cpu) / count
    finally:
        for client in clients:
            await client.aclose()


def overbooked(url: str) -> int:
    """Instants at which what the database holds exceeds the quota (must be 0)."""
    database = Database.open(url)
    limits = (BIG_QUOTA["cores"], BIG_QUOTA["memory"], BIG_QUOTA["max_sessions"])
    with database.read() as db:
        rows = db.execute(
            select(SessionRow.start, SessionRow.end, SessionRow.cores, SessionRow.memory_gib).where(
                SessionRow.phase.in_(["ACCEPTED", "WAITING", "PREPARING", "RUNNING"])
            )
        ).all()
    database.close()
    deltas: dict[datetime, list[int]] = {}
    for start, end, cores, memory in rows:
        for at, sign in ((start, 1), (end, -1)):
            d = deltas.setdefault(at, [0, 0, 0])
            d[0] += sign * cores
            d[1] += sign * memory
            d[2] += sign
    held, over = [0, 0, 0], 0
    for at in sorted(deltas):
        held = [h + d for h, d in zip(held, deltas[at], strict=True)]
        over += any(h > limit for h, limit in zip(held, limits, strict=True))
    return over


def slurm_up() -> bool:
    return shutil.which("sbatch") is not None and "EXECBROKER_SLURM_PARTITION" in _services()


def _services() -> dict[str, str]:
    if not SERVICES_ENV.exists():
        return {}
    pairs = (line.split("=", 1) for line in SERVICES_ENV.read_text().splitlines() if "=" in line)
    return {key.strip(): value.strip() for key, value in pairs if not key.startswith("#")}


def sbatch_test_only() -> float:
    """Seconds Slurm takes to say when a 1-core, 1-hour job could start (nothing is queued)."""
    partition = _services()["EXECBROKER_SLURM_PARTITION"]
    command = ["sbatch", "--test-only", "-p", partition, "-n", "1", "-t", "60", "--wrap", "true"]
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, cwd="/tmp", check=False)
    elapsed = time.perf_counter() - started
    if "to start at" not in done.stderr:
        raise RuntimeError(f"sbatch --test-only: {done.stderr.strip()}")
    return elapsed


@contextlib.contextmanager
def database_url(kind: str, directory: Path) -> Iterator[str]:
    if kind == "sqlite":
        yield f"sqlite:///{directory / 'state' / 'broker.db'}"
        return
    base = os.environ.get("EXECBROKER_TEST_POSTGRES_URL") or _services().get(
        "EXECBROKER_TEST_POSTGRES_URL"
    )
    if not base:
        raise SystemExit("no PostgreSQL: run scripts/services.sh up postgres")
    with fresh_postgres_database(base, "execbroker_bench") as url:
        yield url


def measure(
    bookings: int,
    requests: int,
    directory: Path,
    kind: str,
    slurm: bool,
    accepts: int = 0,
    workers: int = 1,
) -> dict[str, object]:
    with database_url(kind, directory) as url:
        config = {
            **LOCAL_CONFIG,
            "name": f"bench-{bookings}",
            "quota": BIG_QUOTA,
            "monitor": {"interval": "PT60S"},
            "database": url,
        }
        broker = BrokerProcess(config, directory, workers=workers)
        preload(url, bookings)
        broker.start()
        try:
            # the first booking builds the broker's index of holds: seconds at 100 000
            with broker.client(timeout=300) as client:
                for _ in range(5):  # warm up
                    client.get("/health")
                    client.post("/offersets", json=REQUEST)
                health, offers, sbatch = [], [], []
                pid = broker.process.pid  # type: ignore[union-attr]
                cpu_health = cpu_offers = 0.0
                for _ in range(requests):
                    cpu, started = process_cpu_seconds(pid), time.perf_counter()
                    client.get("/health").raise_for_status()
                    health.append(time.perf_counter() - started)
                    cpu_health += process_cpu_seconds(pid) - cpu
                    cpu, started = process_cpu_seconds(pid), time.perf_counter()
                    answer = client.post("/offersets", json=REQUEST).raise_for_status().json()
                    offers.append(time.perf_counter() - started)
                    cpu_offers += process_cpu_seconds(pid) - cpu
                    assert answer["result"] == "YES", answer
                    if slurm:
                        sbatch.append(sbatch_test_only())
            assert broker.process is not None
            rate, refused, cpu = asyncio.run(
                _accepts(broker.url, max(100, accepts or requests), 8, broker.process.pid)
            )
        finally:
            broker.stop()
        over = overbooked(url)
    result: dict[str, object] = {
        "bookings": bookings,
        "workers": workers,
        "post_offersets": _ms(offers),
        "get_health_baseline": _ms(health),
        "offers_over_baseline": round(statistics.median(offers) / statistics.median(health), 2),
        "broker_cpu_ms_per_post_offersets": round(cpu_offers / requests * 1000, 2),
        "broker_cpu_ms_per_get_health": round(cpu_health / requests * 1000, 2),
        "accepts_per_s": round(rate, 1),
        "broker_cpu_ms_per_accept": round(cpu * 1000, 2),
        "accepts_refused": refused,
        "overbooked_instants": over,
    }
    if sbatch:
        result["sbatch_test_only"] = _ms(sbatch)
        result["offers_over_sbatch"] = round(
            statistics.median(offers) / statistics.median(sbatch), 2
        )
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=100)
    parser.add_argument("--levels", default="0,1000,10000,100000")
    parser.add_argument("--database", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument(
        "--accepts", type=int, default=0, help="accepts per level (default: --requests, >= 100)"
    )
    parser.add_argument("--workers", default="1", help="worker processes, or a list: 1,2")
    args = parser.parse_args()
    levels = [int(level) for level in args.levels.split(",")]
    counts = [int(count) for count in args.workers.split(",")]
    slurm = slurm_up()
    with tempfile.TemporaryDirectory(prefix="execbroker-bench-") as temporary:
        results = [
            measure(
                level,
                args.requests,
                Path(temporary) / f"{level}-{workers}",
                args.database,
                slurm,
                args.accepts,
                workers,
            )
            for level in levels
            for workers in counts
        ]
    same = [result for result in results if result["workers"] == counts[0]]
    first, last = same[0], same[-1]
    slowdown = last["post_offersets"]["median_ms"] / first["post_offersets"]["median_ms"]  # type: ignore[index]
    print(
        json.dumps(
            {
                "benchmark": "offers",
                "database": args.database,
                "slurm_compared": slurm,
                "requests_per_level": args.requests,
                "load_average": os.getloadavg()[0],
                "levels": results,
                "median_slowdown_at_most_bookings": round(slowdown, 2),
                "min_accepts_per_s": min(r["accepts_per_s"] for r in results),  # type: ignore[type-var]
            }
        )
    )


if __name__ == "__main__":
    main()
