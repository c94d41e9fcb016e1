"""The ranking policies: pure functions of offers, so no broker is needed."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from execbroker.client.policy import (
    CHEAPEST,
    EARLIEST_START,
    MOST_RESOURCES,
    POLICIES,
    get_policy,
    key_policy,
    rank_offers,
    register,
)
from tests.client.offers import offer


def test_earliest_start_prefers_the_soonest_then_the_largest_grant() -> None:
    late_big = offer(cores=8, memory=16, start=30)
    soon_small = offer(cores=1, memory=2)
    soon_big = offer(cores=4, memory=2)
    assert rank_offers([late_big, soon_small, soon_big], EARLIEST_START) == [
        soon_big,
        soon_small,
        late_big,
    ]


def test_earliest_start_breaks_a_tie_on_cores_by_memory_then_duration() -> None:
    short = offer(cores=2, memory=4, minutes=5)
    long = offer(cores=2, memory=4, minutes=50)
    less_memory = offer(cores=2, memory=2, minutes=90)
    assert rank_offers([less_memory, short, long], EARLIEST_START) == [long, short, less_memory]


def test_most_resources_prefers_the_largest_grant_even_if_later() -> None:
    late_big = offer(cores=8, memory=16, start=30)
    soon_small = offer(cores=1, memory=2)
    same_later = offer(cores=8, memory=16, start=45)
    assert rank_offers([soon_small, same_later, late_big], MOST_RESOURCES) == [
        late_big,
        same_later,
        soon_small,
    ]


def test_cheapest_counts_an_unpriced_offer_as_free_then_prefers_the_soonest() -> None:
    priced = offer(cores=4, cost=1.5)
    cheap_late = offer(cores=1, cost=0.25, start=60)
    cheap_soon = offer(cores=1, cost=0.25)
    free = offer(cores=1, cost=None, start=5)
    assert rank_offers([priced, cheap_late, cheap_soon, free], CHEAPEST) == [
        free,
        cheap_soon,
        cheap_late,
        priced,
    ]


def test_ties_keep_the_order_given() -> None:
    first, second = offer(cores=2), offer(cores=2)
    assert rank_offers([first, second], EARLIEST_START) == [first, second]
    assert rank_offers([second, first], EARLIEST_START) == [second, first]


def test_explain_names_the_deciding_criterion_and_both_values() -> None:
    winner, runner_up = offer(cores=4, memory=8), offer(cores=2, memory=8)
    text = EARLIEST_START.explain(winner, runner_up)
    assert text == "same start; more cores: 4 against 2 for the runner-up"
    later = offer(cores=4, start=90)
    assert EARLIEST_START.explain(winner, later).startswith("starts earlier: 2030-01-01T12:00:00Z")
    assert "costs less: 0.5 against 2" in CHEAPEST.explain(offer(cost=0.5), offer(cost=2))


def test_explain_without_a_runner_up_and_for_a_full_tie() -> None:
    assert EARLIEST_START.explain(offer(), None) == "it is the only offer"
    text = MOST_RESOURCES.explain(offer(cores=2), offer(cores=2))
    assert "ties with the runner-up on cores, memory, storage, start, duration" in text


def test_policies_are_found_by_name_case_insensitively() -> None:
    assert get_policy("Most-Resources") is MOST_RESOURCES
    assert get_policy(CHEAPEST) is CHEAPEST
    with pytest.raises(ValueError, match="cheapest, earliest-start, most-resources"):
        get_policy("fastest")


def test_a_key_function_is_a_policy_and_can_be_registered() -> None:
    policy = key_policy("most-memory", lambda o: -o.memory)
    small, big = offer(memory=1), offer(memory=64)
    assert rank_offers([small, big], policy) == [big, small]
    assert policy.explain(big, small) == "it ranks first by most-memory"
    try:
        register(policy)
        assert get_policy("most-memory") is policy
    finally:
        POLICIES.pop("most-memory", None)


offers = st.builds(
    offer,
    cores=st.integers(1, 16),
    memory=st.integers(1, 64),
    start=st.integers(0, 600),
    minutes=st.integers(1, 120),
    cost=st.none() | st.floats(0, 100, allow_nan=False),
)


# a loaded machine draws slowly; that is no fault of the property
@settings(suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(offers, min_size=1, max_size=12))
def test_the_first_offer_is_never_beaten_on_the_first_criterion(found) -> None:
    for policy, value in (
        (EARLIEST_START, lambda o: o.start),
        (MOST_RESOURCES, lambda o: -o.cores),
        (CHEAPEST, lambda o: o.cost or 0),
    ):
        best = rank_offers(found, policy)[0]
        assert all(value(best) <= value(other) for other in found)


def test_starts_are_compared_as_of_the_moment_of_ranking() -> None:
    from datetime import timedelta

    from tests.client.offers import NOW

    answered_earlier = offer(cores=1, start=-1 / 60)  # its broker said "now" a second before
    bigger = offer(cores=4)
    assert rank_offers([answered_earlier, bigger], EARLIEST_START) == [answered_earlier, bigger]
    assert rank_offers([answered_earlier, bigger], EARLIEST_START, now=NOW) == [
        bigger,
        answered_earlier,
    ]
    later = offer(cores=8, start=10)
    assert rank_offers([later, bigger], EARLIEST_START, now=NOW + timedelta(minutes=5))[0] is bigger
