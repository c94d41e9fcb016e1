"""Turning a demand into concrete offers that fit the quota, and re-checking one on accept.

Every offer of a plan fits the calendar on its own; since the offers of one plan are
alternatives (booked as one group), all of them together then fit as well.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from .calendar import Calendar
from .demand import Demand
from .formatting import fmt_duration, fmt_instant
from .quota import Quota
from .resources import Resources
from .search import earliest_starts
from .sizes import candidate_sizes, size_bounds
from .units import Unit

_FIELDS = ("cores", "memory_gib", "storage_gib")


@dataclass(frozen=True, slots=True)
class Pricing:
    """A broker's price list: cost = hours * sum(rate * amount)."""

    per_core_hour: float = 0.0
    per_memory_gib_hour: float = 0.0
    per_storage_gib_hour: float = 0.0

    def cost(self, resources: Resources, duration: timedelta) -> float:
        """The price of holding ``resources`` for ``duration``, rounded to 4 decimals."""
        hours = duration.total_seconds() / 3600
        rate = (
            self.per_core_hour * resources.cores
            + self.per_memory_gib_hour * resources.memory_gib
            + self.per_storage_gib_hour * resources.storage_gib
        )
        return round(hours * rate, 4)


@dataclass(frozen=True, slots=True)
class OfferRules:
    """How a broker shapes its offers."""

    max_offers: int = 4
    ttl: timedelta = timedelta(minutes=5)
    units: tuple[Unit, ...] = ()
    pricing: Pricing | None = None


@dataclass(frozen=True, slots=True)
class Offer:
    """One concrete way to run the task; holds its resources until ``expires``."""

    start: datetime
    duration: timedelta
    resources: Resources
    expires: datetime
    cost: float | None = None

    @property
    def end(self) -> datetime:
        return self.start + self.duration


@dataclass(frozen=True, slots=True)
class Plan:
    """The answer to a demand: offers best-first, and reasons for saying NO (or fewer)."""

    offers: tuple[Offer, ...]
    reasons: tuple[str, ...] = ()

    @property
    def accepted(self) -> bool:
        return bool(self.offers)


def _problems(demand: Demand, quota: Quota, now: datetime) -> list[str]:
    """Every reason the demand cannot be met whatever is booked, one sentence each."""
    problems: list[str] = []
    for name in _FIELDS:
        wanted = getattr(demand, name)
        limit = getattr(quota.resources, name)
        if wanted.min < 0:
            problems.append(f"{name}: minimum {wanted.min} must not be negative")
        elif wanted.min > limit:
            problems.append(f"{name}: minimum {wanted.min} exceeds this broker's quota of {limit}")
    duration = demand.duration
    if duration.max <= timedelta(0):
        problems.append(f"duration: maximum {fmt_duration(duration.max)} must be positive")
    elif duration.min > quota.max_duration:
        problems.append(
            f"duration: minimum {fmt_duration(duration.min)} exceeds this broker's longest "
            f"session {fmt_duration(quota.max_duration)}"
        )
    horizon_end = now + quota.horizon
    if demand.start.max < now:
        problems.append(
            f"start: the requested window ended at {fmt_instant(demand.start.max)}, "
            f"before now ({fmt_instant(now)})"
        )
    if demand.start.min > horizon_end:
        problems.append(
            f"start: the requested window begins at {fmt_instant(demand.start.min)}, after "
            f"{fmt_instant(horizon_end)}, the end of this broker's booking horizon "
            f"({fmt_duration(quota.horizon)} ahead)"
        )
    return problems


def _order(offer: Offer) -> tuple[datetime, int, int, int, timedelta]:
    """Best first: earliest start, then larger resources, then longer duration."""
    r = offer.resources
    return (offer.start, -r.cores, -r.memory_gib, -r.storage_gib, -offer.duration)


def _fmt_cost(cost: float) -> str:
    return f"{cost:g}"


def plan_offers(
    demand: Demand,
    *,
    quota: Quota,
    calendar: Calendar,
    now: datetime,
    rules: OfferRules,
    max_cost: float | None = None,
) -> Plan:
    """YES with up to ``rules.max_offers`` offers, best first, or NO with every reason why.

    Each size is tried at its longest allowed duration, and also at the minimum duration when
    that can start earlier; each takes the earliest start (the window's opening or a moment
    capacity frees up) at which it fits the calendar under the quota.
    """
    problems = _problems(demand, quota, now)
    if problems:
        return Plan((), tuple(problems))

    lo, hi = size_bounds(demand, quota)
    sizes = candidate_sizes(lo, hi, rules.units)
    if not sizes:
        units = "; ".join(unit.describe() for unit in rules.units)
        return Plan(
            (),
            (
                "size: none of this broker's standard sizes lies within the requested cores, "
                f"memory_gib and storage_gib ranges (up to the quota): {units}",
            ),
        )

    window_start = max(demand.start.min, now)
    window_end = min(demand.start.max, now + quota.horizon)
    candidates = calendar.candidate_starts(window_start, window_end)
    longest = min(demand.duration.max, quota.max_duration)
    shortest = demand.duration.min
    expires = now + rules.ttl

    durations = (longest, shortest) if timedelta(0) < shortest < longest else (longest,)
    starts = earliest_starts(
        calendar, candidates, [(r, d) for r in sizes for d in durations], quota
    )
    found: list[Offer] = []
    for size in sizes:
        start = starts[size, longest]
        if start is not None:
            found.append(Offer(start, longest, size, expires))
        if len(durations) > 1:
            quick = starts[size, shortest]
            if quick is not None and (start is None or quick < start):
                found.append(Offer(quick, shortest, size, expires))
    if not found:
        return Plan(
            (),
            (
                f"start: this broker's quota is fully booked throughout the requested window "
                f"{fmt_instant(window_start)}/{fmt_instant(window_end)}: no session of the "
                "requested size and duration can start in it",
            ),
        )

    offers = sorted(set(found), key=_order)
    reasons: list[str] = []
    if rules.pricing is not None:
        pricing = rules.pricing
        offers = [replace(o, cost=pricing.cost(o.resources, o.duration)) for o in offers]
        if max_cost is not None:
            affordable = [o for o in offers if o.cost is not None and o.cost <= max_cost]
            if not affordable:
                cheapest = min(o.cost for o in offers if o.cost is not None)
                return Plan(
                    (),
                    (
                        f"cost: the cheapest offer would cost {_fmt_cost(cheapest)}, more than "
                        f"the maximum cost {_fmt_cost(max_cost)}",
                    ),
                )
            if len(affordable) < len(offers):
                reasons.append(
                    f"cost: {len(offers) - len(affordable)} offer(s) costing more than the "
                    f"maximum cost {_fmt_cost(max_cost)} were left out"
                )
            offers = affordable
    return Plan(tuple(offers[: max(rules.max_offers, 0)]), tuple(reasons))


def check_accept(offer: Offer, *, quota: Quota, calendar: Calendar) -> str | None:
    """Why ``offer`` no longer fits, or None when it still does.

    ``calendar`` is everything else held: the caller removes the offer's own group first, since
    an offer set's alternatives never compete with each other.
    """
    if offer.duration > quota.max_duration:
        return (
            f"duration: {fmt_duration(offer.duration)} exceeds this broker's longest session "
            f"{fmt_duration(quota.max_duration)}"
        )
    if calendar.fits(offer.start, offer.end, offer.resources, quota):
        return None
    held, sessions = calendar.peak(offer.start, offer.end)
    problems = []
    for name in _FIELDS:
        used, wanted, limit = (getattr(r, name) for r in (held, offer.resources, quota.resources))
        if used + wanted > limit:
            problems.append(
                f"{name}: up to {used} of this broker's {limit} are already held, "
                f"leaving no room for {wanted}"
            )
    if sessions + 1 > quota.max_sessions:
        problems.append(
            f"sessions: up to {sessions} of this broker's {quota.max_sessions} sessions are "
            "already running"
        )
    detail = "; ".join(problems) or "the quota is fully booked"
    window = f"{fmt_instant(offer.start)}/{fmt_instant(offer.end)}"  # only when refused
    return f"the offer no longer fits in {window}: {detail}"
