"""plan_offers rules, pricing, and check_accept."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from execbroker.planner import (
    Booking,
    Calendar,
    Demand,
    Offer,
    OfferRules,
    Plan,
    Pricing,
    Quota,
    Range,
    Resources,
    Unit,
    check_accept,
    plan_offers,
)

from .helpers import T0, at, hours

NOW = T0
QUOTA = Quota(Resources(16, 64, 1000), max_sessions=4, max_duration=hours(4), horizon=hours(48))
EMPTY = Calendar([])
RULES = OfferRules()


def demand(
    cores: tuple[int, int] = (1, 8),
    memory: tuple[int, int] = (1, 32),
    storage: tuple[int, int] = (10, 100),
    duration: tuple[float, float] = (1, 2),
    start: tuple[float, float] = (0, 24),
) -> Demand:
    return Demand(
        cores=Range(*cores),
        memory_gib=Range(*memory),
        storage_gib=Range(*storage),
        duration=Range(hours(duration[0]), hours(duration[1])),
        start=Range(at(start[0]), at(start[1])),
    )


def plan(
    d: Demand,
    *,
    quota: Quota = QUOTA,
    calendar: Calendar = EMPTY,
    now: datetime = NOW,
    rules: OfferRules = RULES,
    max_cost: float | None = None,
) -> Plan:
    return plan_offers(d, quota=quota, calendar=calendar, now=now, rules=rules, max_cost=max_cost)


def full(start: float, end: float, quota: Quota = QUOTA) -> Booking:
    """A booking that takes the whole quota over [start, end)."""
    return Booking(at(start), at(end), quota.resources)


# --- saying NO before looking at the calendar -------------------------------------------------


def test_minimum_above_quota_is_refused_per_field() -> None:
    p = plan(demand(cores=(32, 40)))
    assert not p.accepted
    assert p.offers == ()
    assert p.reasons == ("cores: minimum 32 exceeds this broker's quota of 16",)
    assert plan(demand(memory=(65, 70))).reasons == (
        "memory_gib: minimum 65 exceeds this broker's quota of 64",
    )
    assert plan(demand(storage=(2000, 3000))).reasons == (
        "storage_gib: minimum 2000 exceeds this broker's quota of 1000",
    )


def test_duration_minimum_above_longest_session() -> None:
    quota = Quota(Resources(16, 64, 1000), 4, hours(2))
    assert plan(demand(duration=(3, 5)), quota=quota).reasons == (
        "duration: minimum PT3H exceeds this broker's longest session PT2H",
    )


def test_every_problem_is_reported_not_just_the_first() -> None:
    p = plan(demand(cores=(32, 40), memory=(100, 100), duration=(5, 6), start=(-10, -5)))
    assert not p.accepted
    fields = [reason.split(":")[0] for reason in p.reasons]
    assert fields == ["cores", "memory_gib", "duration", "start"]


def test_window_that_ended_before_now() -> None:
    (reason,) = plan(demand(start=(-5, -1))).reasons
    assert reason.startswith("start: the requested window ended at 2029-12-31T23:00:00Z")
    assert "2030-01-01T00:00:00Z" in reason


def test_window_beginning_beyond_the_horizon() -> None:
    (reason,) = plan(demand(start=(49, 60))).reasons
    assert reason.startswith("start: the requested window begins at 2030-01-03T01:00:00Z")
    assert "horizon" in reason and "P2D" in reason


def test_window_ending_exactly_now_or_starting_at_horizon_is_fine() -> None:
    assert plan(demand(start=(-2, 0))).offers[0].start == NOW
    assert plan(demand(start=(48, 50))).offers[0].start == at(48)


def test_negative_minimum_and_non_positive_duration() -> None:
    assert plan(demand(cores=(-1, 4))).reasons == ("cores: minimum -1 must not be negative",)
    assert plan(demand(duration=(0, 0))).reasons == ("duration: maximum P0D must be positive",)


# --- sizes ---------------------------------------------------------------------------------------


def test_sizes_without_units_are_max_mid_min_largest_first() -> None:
    p = plan(demand(cores=(2, 8), memory=(4, 32), storage=(10, 101)))
    sizes = [o.resources for o in p.offers]
    assert sizes == [Resources(8, 32, 101), Resources(5, 18, 55), Resources(2, 4, 10)]
    assert all(o.start == NOW and o.duration == hours(2) for o in p.offers)


def test_identical_sizes_are_offered_once() -> None:
    p = plan(demand(cores=(4, 4), memory=(8, 8), storage=(50, 50)))
    assert [o.resources for o in p.offers] == [Resources(4, 8, 50)]


def test_max_is_clamped_to_quota() -> None:
    p = plan(demand(cores=(1, 100), memory=(1, 1000), storage=(1, 5000), duration=(1, 10)))
    top = p.offers[0]
    assert top.resources == Resources(16, 64, 1000)
    assert top.duration == QUOTA.max_duration


def test_units_give_every_fitting_multiple_largest_first() -> None:
    rules = OfferRules(
        max_offers=10,
        units=(
            Unit("desktop", Resources(4, 16, 250)),
            Unit("small", Resources(1, 4, 50), multiples=(1, 3)),
        ),
    )
    p = plan(demand(cores=(2, 12), memory=(8, 64), storage=(100, 1000)), rules=rules)
    assert [o.resources for o in p.offers] == [
        Resources(8, 32, 500),  # desktop x2 (x4 = 16 cores is above the requested 12)
        Resources(4, 16, 250),  # desktop x1
        Resources(3, 12, 150),  # small x3 (small x1 is below the minimum)
    ]


def test_units_clamped_by_quota() -> None:
    rules = OfferRules(units=(Unit("desktop", Resources(4, 16, 250)),))
    quota = Quota(Resources(8, 64, 1000), 4, hours(4))
    p = plan(demand(cores=(1, 64), memory=(1, 256), storage=(1, 2000)), quota=quota, rules=rules)
    assert [o.resources for o in p.offers] == [Resources(8, 32, 500), Resources(4, 16, 250)]


def test_no_unit_fits_is_a_reason_naming_the_units() -> None:
    rules = OfferRules(units=(Unit("desktop", Resources(4, 16, 250)),))
    p = plan(demand(cores=(1, 2)), rules=rules)
    assert not p.accepted
    (reason,) = p.reasons
    assert "desktop" in reason and "4 cores" in reason


# --- durations and starts -----------------------------------------------------------------------


def test_longest_duration_first_and_minimum_only_if_earlier() -> None:
    # Everything is free, so the minimum duration would start no earlier: not offered.
    p = plan(demand(cores=(4, 4), memory=(4, 4), storage=(10, 10), duration=(1, 3)))
    assert [(o.start, o.duration) for o in p.offers] == [(NOW, hours(3))]


def test_minimum_duration_offered_when_it_starts_earlier() -> None:
    cal = Calendar([full(2, 5)])
    p = plan(demand(cores=(4, 4), memory=(4, 4), storage=(10, 10), duration=(1, 3)), calendar=cal)
    assert [(o.start, o.duration) for o in p.offers] == [(NOW, hours(1)), (at(5), hours(3))]


def test_start_never_before_now() -> None:
    p = plan(demand(start=(-3, 5)))
    assert all(o.start == NOW for o in p.offers)


def test_start_never_before_window() -> None:
    p = plan(demand(start=(3, 5)))
    assert all(o.start == at(3) for o in p.offers)


def test_start_waits_for_a_release_time() -> None:
    cal = Calendar([full(0, 3), Booking(at(1), at(6), Resources(8, 0, 0))])
    p = plan(demand(cores=(8, 8), memory=(1, 1), storage=(1, 1), duration=(2, 2)), calendar=cal)
    assert [o.start for o in p.offers] == [at(3)]
    p = plan(demand(cores=(9, 9), memory=(1, 1), storage=(1, 1), duration=(2, 2)), calendar=cal)
    assert [o.start for o in p.offers] == [at(6)]


def test_a_gap_too_short_for_the_duration_is_skipped() -> None:
    cal = Calendar([full(0, 1), full(2, 4)])
    p = plan(demand(cores=(1, 1), memory=(1, 1), storage=(1, 1), duration=(2, 2)), calendar=cal)
    assert [o.start for o in p.offers] == [at(4)]


def test_sessions_limit_blocks_like_resources() -> None:
    tiny = Resources(1, 1, 1)
    cal = Calendar([Booking(at(0), at(3), tiny) for _ in range(4)])
    p = plan(demand(cores=(1, 1), memory=(1, 1), storage=(1, 1)), calendar=cal)
    assert [o.start for o in p.offers] == [at(3)]


def test_never_start_after_window_end() -> None:
    cal = Calendar([full(0, 10)])
    p = plan(demand(start=(0, 9)), calendar=cal)
    assert not p.accepted
    (reason,) = p.reasons
    assert reason.startswith("start: this broker's quota is fully booked")
    assert "2030-01-01T00:00:00Z/2030-01-01T09:00:00Z" in reason
    assert plan(demand(start=(0, 10)), calendar=cal).offers[0].start == at(10)


def test_never_start_after_horizon() -> None:
    cal = Calendar([full(0, 49)])
    p = plan(demand(start=(0, 100)), calendar=cal)
    assert not p.accepted
    assert "2030-01-01T00:00:00Z/2030-01-03T00:00:00Z" in p.reasons[0]


def test_partly_booked_calendar_yields_smaller_sizes_sooner() -> None:
    cal = Calendar([Booking(at(0), at(4), Resources(12, 0, 0))])
    p = plan(demand(cores=(2, 8), memory=(1, 1), storage=(1, 1), duration=(1, 1)), calendar=cal)
    assert [(o.start, o.resources.cores) for o in p.offers] == [(NOW, 2), (at(4), 8), (at(4), 5)]


# --- ordering, limits, expiry -------------------------------------------------------------------


def test_offers_are_distinct_best_first_and_limited() -> None:
    cal = Calendar([full(2, 5)])
    d = demand(cores=(2, 8), memory=(2, 8), storage=(2, 8), duration=(1, 3))
    everything = plan(d, calendar=cal, rules=OfferRules(max_offers=100)).offers
    keys = [(o.start, o.resources, o.duration) for o in everything]
    assert keys == [
        (NOW, Resources(8, 8, 8), hours(1)),
        (NOW, Resources(5, 5, 5), hours(1)),
        (NOW, Resources(2, 2, 2), hours(1)),
        (at(5), Resources(8, 8, 8), hours(3)),
        (at(5), Resources(5, 5, 5), hours(3)),
        (at(5), Resources(2, 2, 2), hours(3)),
    ]
    assert len(set(everything)) == len(everything)
    limited = plan(d, calendar=cal, rules=OfferRules(max_offers=4)).offers
    assert limited == everything[:4]


def test_expiry_is_now_plus_ttl_and_end_is_start_plus_duration() -> None:
    now = at(1)
    p = plan(demand(start=(0, 24)), now=now, rules=OfferRules(ttl=timedelta(minutes=7)))
    assert p.accepted and p.reasons == ()
    for o in p.offers:
        assert o.expires == now + timedelta(minutes=7)
        assert o.end == o.start + o.duration
        assert o.cost is None


def test_ties_on_start_prefer_larger_resources_then_longer_duration() -> None:
    cal = Calendar([full(1, 2)])
    d = demand(cores=(4, 4), memory=(4, 4), storage=(4, 4), duration=(0.5, 2))
    offers = plan(d, calendar=cal).offers
    # 2 h cannot start until 2; 30 min starts now.
    assert [(o.start, o.duration) for o in offers] == [(NOW, hours(0.5)), (at(2), hours(2))]


# --- pricing --------------------------------------------------------------------------------------

PRICING = Pricing(per_core_hour=0.5, per_memory_gib_hour=0.01, per_storage_gib_hour=0.001)


def test_pricing_cost_formula_and_rounding() -> None:
    assert PRICING.cost(Resources(4, 16, 250), hours(2)) == pytest.approx(2 * (2 + 0.16 + 0.25))
    assert Pricing().cost(Resources(4, 16, 250), hours(2)) == 0.0
    third = Pricing(per_core_hour=1.0).cost(Resources(1, 0, 0), timedelta(minutes=20))
    assert third == 0.3333


def test_offers_carry_their_cost() -> None:
    rules = OfferRules(pricing=PRICING)
    p = plan(demand(cores=(2, 8), memory=(4, 4), storage=(10, 10), duration=(2, 2)), rules=rules)
    assert [o.cost for o in p.offers] == [PRICING.cost(o.resources, o.duration) for o in p.offers]
    assert all(o.cost is not None and o.cost > 0 for o in p.offers)


def test_offers_above_max_cost_are_dropped_with_a_reason() -> None:
    rules = OfferRules(pricing=Pricing(per_core_hour=1.0))
    d = demand(cores=(2, 8), duration=(1, 1))
    p = plan(d, rules=rules, max_cost=5.0)
    assert [o.resources.cores for o in p.offers] == [5, 2]
    assert all(o.cost is not None and o.cost <= 5.0 for o in p.offers)
    assert len(p.reasons) == 1 and "5" in p.reasons[0] and p.reasons[0].startswith("cost:")


def test_all_offers_above_max_cost_is_no_naming_cheapest_and_max() -> None:
    rules = OfferRules(pricing=Pricing(per_core_hour=1.0))
    p = plan(demand(cores=(2, 8), duration=(1, 1)), rules=rules, max_cost=1.5)
    assert not p.accepted
    assert p.reasons == ("cost: the cheapest offer would cost 2, more than the maximum cost 1.5",)


def test_max_cost_without_pricing_is_ignored() -> None:
    assert plan(demand(), max_cost=0.0).accepted


# --- check_accept ---------------------------------------------------------------------------------


def test_check_accept_passes_when_room_is_still_there() -> None:
    (offer, *_) = plan(demand()).offers
    assert check_accept(offer, quota=QUOTA, calendar=EMPTY) is None


def test_check_accept_explains_which_component_ran_out() -> None:
    offer = Offer(at(0), hours(2), Resources(8, 8, 8), expires=at(0.1))
    cal = Calendar([Booking(at(1), at(3), Resources(10, 60, 8))])
    reason = check_accept(offer, quota=QUOTA, calendar=cal)
    assert reason is not None
    assert "2030-01-01T00:00:00Z/2030-01-01T02:00:00Z" in reason
    assert "cores: up to 10 of this broker's 16" in reason
    assert "memory_gib" in reason and "storage_gib" not in reason


def test_check_accept_explains_sessions() -> None:
    offer = Offer(at(0), hours(1), Resources(1, 1, 1), expires=at(0.1))
    cal = Calendar([Booking(at(0), at(1), Resources(1, 1, 1)) for _ in range(4)])
    reason = check_accept(offer, quota=QUOTA, calendar=cal)
    assert reason is not None and "sessions: up to 4 of this broker's 4" in reason


def test_check_accept_rejects_a_duration_above_the_longest_session() -> None:
    offer = Offer(at(0), hours(5), Resources(1, 1, 1), expires=at(0.1))
    reason = check_accept(offer, quota=QUOTA, calendar=EMPTY)
    assert reason == "duration: PT5H exceeds this broker's longest session PT4H"


def test_check_accept_ignores_the_offers_own_group_once_removed() -> None:
    offers = plan(demand(cores=(16, 16))).offers
    cal = Calendar(Booking(o.start, o.end, o.resources, group="set-1") for o in offers)
    assert check_accept(offers[0], quota=QUOTA, calendar=cal) is not None
    assert check_accept(offers[0], quota=QUOTA, calendar=cal.without_group("set-1")) is None
