"""CPU the broker's hold index spends per offer set, by how many bookings it already holds.

In process, no HTTP: for 0, 1 000, 10 000 and 100 000 accepted bookings spread over the next
week (as ``offers.py`` preloads them), ``--offers`` offer sets of four alternatives are each
planned against the index's calendar (a fit at now, the candidate starts) and put in it, then
all are rejected (taken out again). Their CPU per offer set (``time.process_time``) should not
grow with the bookings: a change costs the segments it spans, not the calendar's size.

    python benchmarks/hold_index.py [--levels 0,1000,10000,100000] [--offers 300]

Prints one JSON object.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import time
from datetime import UTC, datetime, timedelta

from execbroker.planner import Booking, Quota, Resources
from execbroker.planner.index import Hold, HoldIndex

QUOTA = Quota(Resources(100_000, 200_000, 0), max_sessions=100_000, max_duration=timedelta(hours=2))
HOUR = timedelta(hours=1)


def preloaded(bookings: int, now: datetime) -> HoldIndex:
    holds = {}
    for k in range(bookings):
        start = now + HOUR + timedelta(days=6) * k / max(1, bookings)
        holds[f"b{k}"] = Hold(Booking(start, start + HOUR, Resources(1, 1, 0)))
    return HoldIndex(holds)


def measure(bookings: int, offers: int) -> dict[str, object]:
    now = datetime.now(UTC)
    index = preloaded(bookings, now)
    gc.collect()  # the preload's objects settle first, as a broker's do by its warm-up
    started = time.process_time()
    for n in range(offers):
        at = now + timedelta(seconds=n)
        calendar = index.calendar()
        calendar.fits(at, at + HOUR, Resources(2, 2, 0), QUOTA)
        calendar.candidate_starts(at, at + timedelta(days=7))
        alternatives = (Resources(1 + k % 2, 1 + k // 2, 0) for k in range(4))
        index.update(
            (f"o{n}-{k}", Hold(Booking(at, at + HOUR, size, f"set{n}"), at + 5 * HOUR / 60))
            for k, size in enumerate(alternatives)
        )
    planned = time.process_time()
    for n in range(offers):
        index.update((f"o{n}-{k}", None) for k in range(4))
    rejected = time.process_time()
    return {
        "bookings": bookings,
        "cpu_ms_per_offer_set": round((planned - started) / offers * 1000, 3),
        "cpu_ms_per_rejected_set": round((rejected - planned) / offers * 1000, 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--levels", default="0,1000,10000,100000")
    parser.add_argument("--offers", type=int, default=300)
    args = parser.parse_args()
    levels = [int(level) for level in args.levels.split(",")]
    results = [measure(level, args.offers) for level in levels]
    print(
        json.dumps(
            {"benchmark": "hold_index", "load_average": os.getloadavg()[0], "levels": results}
        )
    )


if __name__ == "__main__":
    main()
