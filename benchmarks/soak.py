"""Whether a broker's cost grows with its history: a steady load for minutes, watched.

For ``--minutes`` at ``--rate`` requests per second against a real broker process over HTTP,
each request asks for offers, then rejects them, except one in ``--accept-every``, which is
accepted and runs a short task (``true``). Per window of ``--window`` seconds it reports the
p50 and p95 of ``POST /offersets``, the errors, the broker's RSS, and the size of its database
and state directory; at the end, the sizes at the start and the end. With a short retention
(``--retention PT30S``, the default; ``none`` keeps everything: the baseline) the database and
state directory stop growing once the retention has passed.

    python benchmarks/soak.py [--minutes 2] [--rate 50] [--retention PT30S] [--window 10]
        [--workers N]

Prints one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sqlite3
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from execbroker.launcher import LOCAL_CONFIG, BrokerProcess

REQUEST = {
    "executable": {"kind": "batch-script", "script": "true"},
    "compute": {"cores": {"min": 1, "max": 2}, "memory": {"min": 1, "max": 2}},
    "schedule": {"requested": {"duration": "PT1M"}},
}
QUOTA = {
    "cores": 10_000,
    "memory": 20_000,
    "storage": 0,
    "max_sessions": 10_000,
    "max_duration": "PT1H",
}


def _rss_mb(broker: BrokerProcess) -> float:
    """The broker's resident memory, its workers' included (a worker gone meanwhile: 0)."""
    assert broker.process is not None
    kib = 0
    for pid in [broker.process.pid, *broker.worker_pids()]:
        with contextlib.suppress(FileNotFoundError):
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    kib += int(line.split()[1])
    return round(kib / 1024, 1)


def _size_mb(path: Path) -> float:
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            try:
                total += (Path(root) / name).lstat().st_size
            except FileNotFoundError:
                continue  # purged while we looked
    return round(total / 2**20, 2)


def _database_mb(state: Path) -> float:
    return round(sum(p.stat().st_size for p in state.glob("broker.db*") if p.exists()) / 2**20, 2)


def _rows(state: Path) -> dict[str, int]:
    """Rows kept: what retention bounds (SQLite reuses freed pages; the file does not shrink)."""
    with sqlite3.connect(f"file:{state / 'broker.db'}?mode=ro", uri=True) as db:
        return {
            table: db.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
            for table in ("offersets", "sessions")
        }


def _pct(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return round(ordered[int(q * (len(ordered) - 1))] * 1000, 2) if ordered else 0.0


async def _one(client: httpx.AsyncClient, accept: bool, latencies: list[float]) -> None:
    started = time.perf_counter()
    answer = (await client.post("/offersets", json=REQUEST)).raise_for_status().json()
    latencies.append(time.perf_counter() - started)
    offers = [offer["meta"]["uuid"] for offer in answer.get("offers", [])]
    if not offers:
        raise RuntimeError(f"no offer: {answer}")
    value = "ACCEPTED" if accept else "REJECTED"
    update = {"kind": "uri:enum-value-update", "path": "phase", "value": value}
    (await client.post(f"/sessions/{offers[0]}", json=update)).raise_for_status()


async def soak(broker: BrokerProcess, state: Path, args: argparse.Namespace) -> dict[str, Any]:
    headers = {"Authorization": "Bearer demo-alice"}
    windows: list[dict[str, Any]] = []
    start_sizes = {
        "database_mb": _database_mb(state),
        "state_dir_mb": _size_mb(state),
        "rows": _rows(state),
    }
    async with httpx.AsyncClient(base_url=broker.url, headers=headers, timeout=60) as client:
        end = time.monotonic() + args.minutes * 60
        sent = 0
        tasks: set[asyncio.Task[None]] = set()
        while time.monotonic() < end:
            latencies: list[float] = []
            errors = 0
            window_end = min(end, time.monotonic() + args.window)
            began = time.monotonic()
            while time.monotonic() < window_end:
                sent += 1
                task = asyncio.create_task(_one(client, sent % args.accept_every == 0, latencies))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
                due = began + (len(latencies) + len(tasks)) / args.rate
                await asyncio.sleep(max(0.0, min(due - time.monotonic(), 1 / args.rate)))
            done = await asyncio.gather(*tasks, return_exceptions=True)
            errors += sum(isinstance(result, BaseException) for result in done)
            windows.append(
                {
                    "t_s": round(time.monotonic() - (end - args.minutes * 60), 1),
                    "requests": len(latencies),
                    "errors": errors,
                    "p50_ms": _pct(latencies, 0.5),
                    "p95_ms": _pct(latencies, 0.95),
                    "rss_mb": _rss_mb(broker),
                    "database_mb": _database_mb(state),
                    "state_dir_mb": _size_mb(state),
                    "rows": _rows(state),
                }
            )
    first = windows[len(windows) // 4 :] or windows  # past warm-up
    return {
        "start": start_sizes,
        "end": {
            "database_mb": _database_mb(state),
            "state_dir_mb": _size_mb(state),
            "rows": _rows(state),
        },
        "windows": windows,
        "p95_ms_median_over_windows": statistics.median(w["p95_ms"] for w in first),
        "errors": sum(w["errors"] for w in windows),
        "rss_mb_first_last": [windows[0]["rss_mb"], windows[-1]["rss_mb"]],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=2)
    parser.add_argument("--rate", type=float, default=50)
    parser.add_argument("--window", type=float, default=10)
    parser.add_argument("--accept-every", type=int, default=10)
    parser.add_argument("--retention", default="PT30S", help="an ISO duration, or none")
    parser.add_argument("--workers", type=int, default=1, help="serve --workers N")
    args = parser.parse_args()
    kept = None if args.retention.lower() == "none" else args.retention
    with tempfile.TemporaryDirectory(prefix="execbroker-soak-") as temporary:
        directory = Path(temporary)
        config = {
            **LOCAL_CONFIG,
            "name": "soak",
            "quota": QUOTA,
            "offers": {"max": 4, "ttl": "PT1M"},
            "retention": {"offers": kept, "sessions": kept},
        }
        broker = BrokerProcess(config, directory, log_level="warning", workers=args.workers)
        broker.start()
        try:
            result = asyncio.run(soak(broker, directory / "state", args))
        finally:
            broker.stop()
    print(
        json.dumps(
            {
                "benchmark": "soak",
                "minutes": args.minutes,
                "rate_per_s": args.rate,
                "accept_every": args.accept_every,
                "workers": args.workers,
                "retention": kept,
                "load_average": os.getloadavg()[0],
                **result,
            }
        )
    )


if __name__ == "__main__":
    main()
