"""A stateful property test: a tiny in-memory broker driven only through the planner API.

Offers become bookings grouped by offer set; accepting one commits it and drops its siblings;
offers expire as the clock advances. After every step the committed bookings, alone and with the
live offer sets, must stay within the quota at every instant, judged by the brute-force model in
helpers (not by the Calendar under test). The mutation tests at the bottom break the planner on
purpose and require this machine to notice.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from datetime import datetime, timedelta

import pytest
from hypothesis import HealthCheck, Phase, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    rule,
    run_state_machine_as_test,
)

import execbroker.planner as planner
from execbroker.planner import (
    Booking,
    Calendar,
    Demand,
    Offer,
    OfferRules,
    Pricing,
    Quota,
    Range,
    Resources,
    Unit,
)

from .helpers import T0, overbooked

STEP = timedelta(minutes=30)

quotas = st.builds(
    Quota,
    resources=st.builds(Resources, st.integers(1, 12), st.integers(1, 48), st.integers(1, 100)),
    max_sessions=st.integers(1, 4),
    max_duration=st.integers(1, 12).map(lambda k: k * STEP),
    horizon=st.integers(2, 48).map(lambda k: k * STEP),
)


def units_for(quota: Quota, choice: int) -> tuple[Unit, ...]:
    """No units, or standard sizes scaled to the quota so that some multiples fit."""
    q = quota.resources
    quarter = Resources(max(1, q.cores // 4), max(1, q.memory_gib // 4), max(1, q.storage_gib // 4))
    third = Resources(max(1, q.cores // 3), max(1, q.memory_gib // 3), max(1, q.storage_gib // 3))
    if choice == 1:
        return (Unit("quarter", quarter),)
    if choice == 2:
        return (Unit("quarter", quarter, (1, 3)), Unit("third", third, (1, 2)))
    return ()


rule_sets = st.builds(
    OfferRules,
    max_offers=st.integers(1, 5),
    ttl=st.integers(1, 180).map(lambda m: timedelta(minutes=m)),
    pricing=st.none() | st.just(Pricing(1.0, 0.1, 0.01)),
)


def int_range(draw: st.DrawFn, limit: int, sane: bool) -> Range[int]:
    """A range for one resource: usually one the quota can meet, sometimes anything."""
    if sane:
        low = draw(st.integers(0, max(0, limit // 4)))
        high = draw(st.integers(max(low, limit // 2), limit + 2))
    else:
        low = draw(st.integers(0, limit + 2))
        high = low + draw(st.integers(0, limit))
    return Range(low, high)


@st.composite
def demands(draw: st.DrawFn, quota: Quota, now: datetime) -> Demand:
    """Mostly demands this quota could meet (to get offers to book), one in eight anything."""
    q = quota.resources
    sane = draw(st.integers(0, 7)) > 0
    longest = quota.max_duration // STEP
    horizon = quota.horizon // STEP
    first = draw(st.integers(-2, horizon) if sane else st.integers(-6, horizon + 4))
    length = draw(st.integers(0, 24))
    dmin = draw(st.integers(0, longest) if sane else st.integers(0, longest + 2))
    dmax = draw(st.integers(max(dmin, 1) if sane else dmin, longest + 4))
    return Demand(
        cores=int_range(draw, q.cores, sane),
        memory_gib=int_range(draw, q.memory_gib, sane),
        storage_gib=int_range(draw, q.storage_gib, sane),
        duration=Range(dmin * STEP, dmax * STEP),
        start=Range(now + first * STEP, now + (first + length) * STEP),
    )


class Ledger(RuleBasedStateMachine):
    quota: Quota
    rules: OfferRules

    def __init__(self) -> None:
        super().__init__()
        self.now = T0
        self.committed: dict[int, Booking] = {}
        self.live: dict[str, list[Offer]] = {}  # live offer sets by group id
        self.stale: list[Offer] = []  # expired, rejected or outbid offers, for late accepts
        self.counter = 0

    # --- helpers ---

    def _next(self) -> int:
        self.counter += 1
        return self.counter

    def bookings(self) -> list[Booking]:
        held = list(self.committed.values())
        for gid, offers in self.live.items():
            held += [Booking(o.start, o.end, o.resources, gid) for o in offers]
        return held

    def retire(self, gid: str) -> None:
        self.stale = [*self.stale, *self.live.pop(gid)][-20:]

    # --- rules ---

    @initialize(quota=quotas, rules=rule_sets, units=st.integers(0, 2))
    def setup(self, quota: Quota, rules: OfferRules, units: int) -> None:
        self.quota = quota
        self.rules = replace(rules, units=units_for(quota, units))

    @rule(data=st.data())
    def request(self, data: st.DataObject) -> None:
        demand = data.draw(demands(self.quota, self.now))
        max_cost = data.draw(st.none() | st.integers(0, 60).map(float))
        calendar = Calendar(self.bookings())
        plan = planner.plan_offers(
            demand,
            quota=self.quota,
            calendar=calendar,
            now=self.now,
            rules=self.rules,
            max_cost=max_cost,
        )
        assert plan.accepted == bool(plan.offers)
        if not plan.accepted:
            assert plan.reasons, "a NO must say why"
            booked = "fully booked" in plan.reasons[0]
            event("request: NO", "fully booked" if booked else plan.reasons[0].split(":")[0])
            return
        event("request: offers", len(plan.offers))
        self.check_offers(plan.offers, demand, max_cost)
        self.check_earliest(plan.offers, demand, calendar)
        gid = f"set-{self._next()}"
        self.live[gid] = list(plan.offers)

    def check_offers(
        self, offers: tuple[Offer, ...], demand: Demand, max_cost: float | None
    ) -> None:
        assert len(offers) <= self.rules.max_offers
        assert len(set(offers)) == len(offers)
        order = [(o.start, -o.resources.cores, -o.resources.memory_gib) for o in offers]
        assert order == sorted(order)
        for o in offers:
            r = o.resources
            assert r.cores in demand.cores
            assert r.memory_gib in demand.memory_gib
            assert r.storage_gib in demand.storage_gib
            assert r.fits_within(self.quota.resources)
            assert o.duration in demand.duration
            assert o.duration <= self.quota.max_duration
            assert max(demand.start.min, self.now) <= o.start <= demand.start.max
            assert o.start <= self.now + self.quota.horizon
            assert o.expires == self.now + self.rules.ttl
            if self.rules.units:
                assert any(r in u.sizes() for u in self.rules.units)
            if self.rules.pricing is not None:
                assert o.cost == self.rules.pricing.cost(r, o.duration)
                assert max_cost is None or o.cost <= max_cost

    def check_earliest(self, offers: tuple[Offer, ...], demand: Demand, calendar: Calendar) -> None:
        """Each offer starts at the first candidate start where ``fits`` says it fits."""
        opens = max(demand.start.min, self.now)
        closes = min(demand.start.max, self.now + self.quota.horizon)
        candidates = [opens, *calendar.release_times(opens, closes)]
        for o in offers:
            first = next(
                t for t in candidates if calendar.fits(t, t + o.duration, o.resources, self.quota)
            )
            assert o.start == first, (o, first)

    @rule(data=st.data())
    def accept(self, data: st.DataObject) -> None:
        if not self.live:
            return
        gid = data.draw(st.sampled_from(sorted(self.live)))
        chosen = data.draw(st.sampled_from(self.live[gid]))
        others = Calendar(self.bookings()).without_group(gid)
        reason = planner.check_accept(chosen, quota=self.quota, calendar=others)
        # The offer set already holds room for its largest member, so a live offer always fits.
        assert reason is None, reason
        event("accept")
        self.retire(gid)
        self.committed[self._next()] = Booking(chosen.start, chosen.end, chosen.resources)

    @rule(data=st.data())
    def accept_late(self, data: st.DataObject) -> None:
        """A broker may still honour an offer after its hold lapsed, if it still fits."""
        if not self.stale:
            return
        offer = data.draw(st.sampled_from(self.stale))
        held = self.bookings()
        reason = planner.check_accept(offer, quota=self.quota, calendar=Calendar(held))
        candidate = Booking(offer.start, offer.end, offer.resources)
        truth = overbooked([*held, candidate], self.quota)
        assert (reason is None) == (truth is None), (reason, truth)
        event("late accept", "ok" if reason is None else "refused")
        if reason is None:
            self.stale.remove(offer)
            self.committed[self._next()] = candidate

    @rule(data=st.data())
    def reject(self, data: st.DataObject) -> None:
        if not self.live:
            return
        self.retire(data.draw(st.sampled_from(sorted(self.live))))

    @rule(minutes=st.integers(1, 90))
    def advance_clock(self, minutes: int) -> None:
        self.now += timedelta(minutes=minutes)
        for gid in [g for g, offers in self.live.items() if offers[0].expires <= self.now]:
            self.retire(gid)

    @rule(data=st.data())
    def cancel(self, data: st.DataObject) -> None:
        if not self.committed:
            return
        event("cancel")
        del self.committed[data.draw(st.sampled_from(sorted(self.committed)))]

    # --- invariants ---

    @invariant()
    def committed_within_quota(self) -> None:
        problem = overbooked(list(self.committed.values()), self.quota)
        assert problem is None, problem

    @invariant()
    def committed_and_offers_within_quota(self) -> None:
        problem = overbooked(self.bookings(), self.quota)
        assert problem is None, problem

    @invariant()
    def live_offers_have_not_expired(self) -> None:
        assert all(o.expires > self.now for offers in self.live.values() for o in offers)


Ledger.TestCase.settings = settings(
    max_examples=60,
    stateful_step_count=50,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestLedger = Ledger.TestCase


# --- mutation tests: the machine above must catch a planner that overbooks --------------------

tight_quotas = st.builds(
    Quota,
    resources=st.builds(Resources, st.integers(1, 3), st.integers(1, 3), st.integers(1, 3)),
    max_sessions=st.integers(1, 2),
    max_duration=st.integers(1, 4).map(lambda k: k * STEP),
    horizon=st.integers(2, 8).map(lambda k: k * STEP),
)


class CrowdedLedger(Ledger):
    """The same ledger under a tiny quota, where a planner that overbooks is caught fast."""

    @initialize(quota=tight_quotas, rules=rule_sets, units=st.integers(0, 2))
    def setup(self, quota: Quota, rules: OfferRules, units: int) -> None:
        Ledger.setup(self, quota, rules, units)


def _fits_ignoring_sessions(self: Calendar, start, end, resources, quota) -> bool:  # type: ignore[no-untyped-def]
    held, _ = self.peak(start, end)
    return (held + resources).fits_within(quota.resources)


def _fits_ignoring_request(self: Calendar, start, end, resources, quota) -> bool:  # type: ignore[no-untyped-def]
    held, sessions = self.peak(start, end)
    return held.fits_within(quota.resources) and sessions + 1 <= quota.max_sessions


def _accept_anything(offer: Offer, *, quota: Quota, calendar: Calendar) -> str | None:
    return None


MUTANTS: dict[str, tuple[object, str, Callable[..., object]]] = {
    "fits ignores sessions": (Calendar, "fits", _fits_ignoring_sessions),
    "fits ignores the request": (Calendar, "fits", _fits_ignoring_request),
    "check_accept accepts anything": (planner, "check_accept", _accept_anything),
}


@pytest.mark.parametrize("mutant", sorted(MUTANTS))
def test_ledger_catches_a_broken_planner(mutant: str, monkeypatch: pytest.MonkeyPatch) -> None:
    target, name, broken = MUTANTS[mutant]
    monkeypatch.setattr(target, name, broken)
    hunt = settings(
        max_examples=200,
        stateful_step_count=40,
        deadline=None,
        database=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
        derandomize=True,
    )
    with pytest.raises(AssertionError):
        run_state_machine_as_test(CrowdedLedger, settings=hunt)
