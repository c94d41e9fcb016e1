"""How the time to ask many brokers grows with their number.

Starts 10 real broker processes (local platform, large quotas) and times the client's
fan-out (``execbroker.client.ask_all``: one request to every broker at once, every answer
collected) to 1, 3 and 10 of them, next to one plain ``POST /requests`` to one broker made
in the same run as the floor. The offers are rejected after each round (untimed), so no
round sees a fuller calendar than the first.

    python benchmarks/fanout.py [--repeats 30] [--sizes 1,3,10]

Prints one JSON object; ``ratio_max_over_1`` is the median at the largest size over the
median at one broker. Beside it, the CPU the client and the asked brokers used during each
fan-out, and the floor they set: their sum spread over this machine's cores (ten brokers on
two cores cannot all run at once), and ``floor_ratio``, the ratio that floor allows.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from execbroker.client import BrokerTarget, ask_all
from execbroker.launcher import LOCAL_CONFIG, BrokerProcess, process_cpu_seconds

REQUEST = {
    "executable": {"kind": "batch-script", "script": "true"},
    "compute": {"cores": {"min": 1, "max": 2}, "memory": {"min": 1, "max": 2}},
    "schedule": {"requested": {"duration": "PT10M"}},
}
QUOTA = {"cores": 1000, "memory": 2000, "max_sessions": 1000, "max_duration": "PT2H"}
IDLE = {"interval": "PT60S"}  # nothing is accepted: the monitor has nothing to do
REJECT = {"kind": "uri:enum-value-update", "path": "phase", "value": "REJECTED"}


def _median_ms(samples: list[float]) -> float:
    return round(statistics.median(samples) * 1000, 2)


@dataclass
class _Sample:
    seconds: float
    client_cpu: float  # this process's CPU during the fan-out
    brokers_cpu: float  # every asked broker's CPU during it (clock ticks: coarse alone)


async def _round(targets: list[BrokerTarget], brokers: list[BrokerProcess]) -> _Sample:
    pids = [broker.process.pid for broker in brokers if broker.process is not None]
    brokers_before = sum(process_cpu_seconds(pid) for pid in pids)
    client_before = time.process_time()
    started = time.perf_counter()
    answers = await ask_all(targets, REQUEST, timeout=30)
    elapsed = time.perf_counter() - started
    client_cpu = time.process_time() - client_before
    brokers_cpu = sum(process_cpu_seconds(pid) for pid in pids) - brokers_before
    assert all(answer.offers for answer in answers), [answer.error for answer in answers]
    for answer, broker in zip(answers, brokers, strict=True):
        with broker.client() as client:
            for offer in answer.offers:
                client.post(f"/sessions/{offer.uuid}", json=REJECT)
    return _Sample(elapsed, client_cpu, brokers_cpu)


def measure(brokers: list[BrokerProcess], sizes: list[int], repeats: int) -> dict[str, object]:
    targets = [BrokerTarget(broker.url, "demo-alice", broker.name) for broker in brokers]
    with brokers[0].client() as client:
        for _ in range(5):
            client.post("/requests", json=REQUEST)
        direct = []
        for _ in range(repeats):
            started = time.perf_counter()
            client.post("/requests", json=REQUEST).raise_for_status()
            direct.append(time.perf_counter() - started)
    by_size: dict[int, list[_Sample]] = {}
    for size in sizes:
        asyncio.run(_round(targets[:size], brokers[:size]))  # warm up
        by_size[size] = [
            asyncio.run(_round(targets[:size], brokers[:size])) for _ in range(repeats)
        ]

    def median(size: int) -> float:
        return statistics.median(sample.seconds for sample in by_size[size])

    def cpu_ms(size: int, part: str) -> float:
        return round(statistics.fmean(getattr(s, part) for s in by_size[size]) * 1000, 2)

    cores = os.cpu_count() or 1
    # Every broker's CPU and the client's must fit on this machine's cores: the fan-out cannot
    # be faster than their sum spread over all of them, however concurrent the client is.
    floor = {
        str(size): round((cpu_ms(size, "brokers_cpu") + cpu_ms(size, "client_cpu")) / cores, 2)
        for size in sizes
    }
    first, last = sizes[0], sizes[-1]
    return {
        "benchmark": "fanout",
        "repeats": repeats,
        "cores": cores,
        "load_average": os.getloadavg()[0],
        "direct_post_requests_ms": _median_ms(direct),
        "fanout_median_ms": {str(size): round(median(size) * 1000, 2) for size in sizes},
        "client_cpu_ms": {str(size): cpu_ms(size, "client_cpu") for size in sizes},
        "brokers_cpu_ms": {str(size): cpu_ms(size, "brokers_cpu") for size in sizes},
        "cpu_floor_ms": floor,
        f"ratio_{last}_over_{first}": round(median(last) / median(first), 2),
        f"floor_ratio_{last}_over_{first}": round(
            max(floor[str(last)], median(first) * 1000) / (median(first) * 1000), 2
        ),
    }


async def _all_ready(brokers: list[BrokerProcess]) -> None:
    await asyncio.gather(*(broker.wait_ready() for broker in brokers))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--sizes", default="1,3,10")
    args = parser.parse_args()
    sizes = sorted(int(size) for size in args.sizes.split(","))
    with tempfile.TemporaryDirectory(prefix="execbroker-fanout-") as temporary:
        brokers = [
            BrokerProcess(
                {**LOCAL_CONFIG, "name": f"fan-{index:02d}", "quota": QUOTA, "monitor": IDLE},
                Path(temporary) / f"fan-{index:02d}",
            )
            for index in range(sizes[-1])
        ]
        try:
            for broker in brokers:
                broker.spawn()
            asyncio.run(_all_ready(brokers))
            print(json.dumps(measure(brokers, sizes, args.repeats)))
        finally:
            for broker in brokers:
                broker.stop()


if __name__ == "__main__":
    main()
