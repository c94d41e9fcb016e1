"""Which sizes to offer for a demand: standard units when the site has them, else max/mid/min."""

from __future__ import annotations

from collections.abc import Iterable

from .demand import Demand
from .quota import Quota
from .resources import Resources
from .units import Unit


def size_bounds(demand: Demand, quota: Quota) -> tuple[Resources, Resources]:
    """The smallest and largest acceptable size, the largest clamped to the quota."""
    q = quota.resources
    lo = Resources(demand.cores.min, demand.memory_gib.min, demand.storage_gib.min)
    hi = Resources(
        min(demand.cores.max, q.cores),
        min(demand.memory_gib.max, q.memory_gib),
        min(demand.storage_gib.max, q.storage_gib),
    )
    return lo, hi


def _largest_first(sizes: Iterable[Resources]) -> tuple[Resources, ...]:
    return tuple(
        sorted(set(sizes), key=lambda r: (r.cores, r.memory_gib, r.storage_gib), reverse=True)
    )


def candidate_sizes(lo: Resources, hi: Resources, units: tuple[Unit, ...]) -> tuple[Resources, ...]:
    """Distinct sizes between lo and hi (inclusive, per component), largest first.

    With units: every listed multiple of every unit that lies within the bounds (possibly none).
    Without: the largest, the per-component midpoint (rounded down) and the smallest, so a
    client gets a choice between getting more and getting it sooner.
    """
    if units:
        return _largest_first(
            size
            for unit in units
            for size in unit.sizes()
            if lo.fits_within(size) and size.fits_within(hi)
        )
    mid = Resources(
        (lo.cores + hi.cores) // 2,
        (lo.memory_gib + hi.memory_gib) // 2,
        (lo.storage_gib + hi.storage_gib) // 2,
    )
    return _largest_first((hi, mid, lo))
