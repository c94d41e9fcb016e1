"""One ``squeue`` for every job asked about at about the same time, instead of one each.

A monitor pass asks for the state of each of its sessions' jobs at once (one thread each),
and a pending job is asked about again every few tens of milliseconds. Each ``squeue`` is
a process and a round trip to slurmctld, so ``Queue.record`` gathers the jobs asked about
while a ``squeue`` is under way and asks for all of them in the next one. An answer is
never older than the question: a caller takes a listing only if it began after the caller
asked, so what it learns is as fresh as its own ``squeue`` would have been.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence

from execbroker.platforms.slurm_states import JobRecord

# Runs ``squeue`` for some job ids: their records (a job Slurm no longer knows is left out).
Lister = Callable[[Sequence[str]], list[JobRecord]]


class Queue:
    def __init__(self, lister: Lister) -> None:
        self._lister = lister
        self._lock = threading.Lock()  # guards the fields below
        self._asking = threading.Lock()  # one squeue at a time
        self._wanted: set[str] = set()  # asked about, not yet in a listing under way
        self._listed: dict[str, JobRecord | None] = {}  # the last listing, by job id
        self._listed_at = float("-inf")  # when it began (time.monotonic())

    def record(self, job_id: str) -> JobRecord | None:
        """What Slurm says of the job now; None if it no longer knows it. Raises what the
        lister raises (to every caller whose listing failed)."""
        asked = time.monotonic()
        with self._lock:
            self._wanted.add(job_id)
        with self._asking:
            with self._lock:
                if self._listed_at >= asked and job_id in self._listed:
                    return self._listed[job_id]
                jobs, self._wanted = sorted(self._wanted | {job_id}), set()
            began = time.monotonic()
            # (should it fail, each caller waiting behind lists its own job again)
            found = {record.job_id: record for record in self._lister(jobs)}
            with self._lock:
                self._listed = {job: found.get(job) for job in jobs}
                self._listed_at = began
            return self._listed[job_id]
