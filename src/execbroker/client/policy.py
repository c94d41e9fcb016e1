"""How a client ranks the offers of many brokers: pluggable, pure, and able to say why.

A policy is anything with a ``name``, a ``key(offer)`` to sort by (smaller is better) and
an ``explain(winner, runner_up)`` sentence. Most are an ordered list of criteria
(``CriteriaPolicy``), which explains itself by naming the first criterion on which the
winner beat the runner-up; a plain key function becomes a policy with ``key_policy``.

Shipped, selectable by name (``get_policy``):

* ``earliest-start``: the soonest start, then the largest grant (cores, memory, storage),
  then the longest duration;
* ``most-resources``: the largest grant, then the soonest start, then the longest duration;
* ``cheapest``: the lowest quoted cost, then as ``earliest-start``. An offer without a
  price comes from a broker that charges nothing, so it counts as costing 0.

Ties are left in the order the offers were given (brokers in the order listed, each
broker's offers in its own order), so ranking is deterministic.

Starts are compared *as of* the moment of ranking (``as_of``): an offer to start "now" says
so with its broker's clock at the moment it answered, to the second, so two brokers
answering either side of a second boundary would otherwise differ on a start that means
the same thing. (Brokers on other hosts are trusted to keep their clocks in sync.)
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, Protocol, TypeVar, runtime_checkable

from execbroker.client.results import Offer
from execbroker.timeutil import format_duration, format_instant

T = TypeVar("T")
_NEVER = datetime.max.replace(tzinfo=UTC)


@runtime_checkable
class Policy(Protocol):
    name: str
    description: str

    def key(self, offer: Offer) -> Any:
        """A sort key: the offer with the smallest key is the best."""

    def explain(self, winner: Offer, runner_up: Offer | None) -> str:
        """Why ``winner`` ranks above ``runner_up``, in one sentence for people."""


@dataclass(frozen=True, slots=True)
class Criterion:
    """One thing a policy compares, e.g. the start time (earlier is better)."""

    label: str  # "start"
    better: str  # how a win reads: "starts earlier"
    value: Callable[[Offer], Any]
    prefer: Literal["lower", "higher"] = "lower"
    show: Callable[[Any], str] = str

    def sort_value(self, offer: Offer) -> Any:
        value = self.value(offer)
        return value if self.prefer == "lower" else -value


@dataclass(frozen=True, slots=True)
class CriteriaPolicy:
    name: str
    description: str
    criteria: tuple[Criterion, ...]

    def key(self, offer: Offer) -> tuple[Any, ...]:
        return tuple(criterion.sort_value(offer) for criterion in self.criteria)

    def explain(self, winner: Offer, runner_up: Offer | None) -> str:
        if runner_up is None:
            return "it is the only offer"
        ties = []
        for criterion in self.criteria:
            mine, theirs = criterion.value(winner), criterion.value(runner_up)
            if mine != theirs:
                tied = f"same {', '.join(ties)}; " if ties else ""
                return (
                    f"{tied}{criterion.better}: {criterion.show(mine)} against "
                    f"{criterion.show(theirs)} for the runner-up"
                )
            ties.append(criterion.label)
        return (
            f"it ties with the runner-up on {', '.join(ties)}; the broker listed first wins the tie"
        )


@dataclass(frozen=True, slots=True)
class KeyPolicy:
    """A policy made from a plain key function (see ``key_policy``)."""

    name: str
    description: str
    function: Callable[[Offer], Any]

    def key(self, offer: Offer) -> Any:
        return self.function(offer)

    def explain(self, winner: Offer, runner_up: Offer | None) -> str:
        if runner_up is None:
            return "it is the only offer"
        return f"it ranks first by {self.name}"


def key_policy(name: str, function: Callable[[Offer], Any], description: str = "") -> KeyPolicy:
    """Make a policy of a key function (smaller is better), e.g. ``lambda o: -o.memory``."""
    return KeyPolicy(name, description or f"ranked by {name}", function)


# -- the criteria the shipped policies are made of ---------------------------------------


def _start(offer: Offer) -> datetime:
    return offer.start or _NEVER


def _duration(offer: Offer) -> timedelta:
    return offer.duration or timedelta(0)


def _cost(offer: Offer) -> float:
    return offer.cost if offer.cost is not None else 0.0


def _show_start(value: datetime) -> str:
    return "never" if value == _NEVER else format_instant(value)


def _show_duration(value: timedelta) -> str:
    return format_duration(value) if value else "none"


START = Criterion("start", "starts earlier", _start, "lower", _show_start)
CORES = Criterion("cores", "more cores", lambda o: o.cores, "higher")
MEMORY = Criterion("memory", "more memory", lambda o: o.memory, "higher", lambda v: f"{v} GiB")
STORAGE = Criterion("storage", "more storage", lambda o: o.storage, "higher", lambda v: f"{v} GiB")
DURATION = Criterion("duration", "runs longer", _duration, "higher", _show_duration)
COST = Criterion("cost", "costs less", _cost, "lower", lambda v: f"{v:g}")

GRANT = (CORES, MEMORY, STORAGE)

EARLIEST_START = CriteriaPolicy(
    "earliest-start",
    "the soonest start, then the largest grant (cores, memory, storage), then the longest run",
    (START, *GRANT, DURATION),
)
MOST_RESOURCES = CriteriaPolicy(
    "most-resources",
    "the largest grant (cores, memory, storage), then the soonest start, then the longest run",
    (*GRANT, START, DURATION),
)
CHEAPEST = CriteriaPolicy(
    "cheapest",
    "the lowest quoted cost (no price counts as 0), then the soonest start, then the largest grant",
    (COST, START, *GRANT, DURATION),
)

POLICIES: dict[str, Policy] = {
    policy.name: policy for policy in (EARLIEST_START, MOST_RESOURCES, CHEAPEST)
}
DEFAULT_POLICY = EARLIEST_START.name


def register(policy: Policy) -> Policy:
    """Make a policy selectable by its name (e.g. from the command line)."""
    POLICIES[policy.name] = policy
    return policy


def get_policy(name: str | Policy) -> Policy:
    """The policy called ``name`` (a policy object is returned as it is)."""
    if not isinstance(name, str):
        return name
    try:
        return POLICIES[name.strip().lower()]
    except KeyError:
        known = ", ".join(sorted(POLICIES))
        raise ValueError(f"no policy called {name!r}; choose one of {known}") from None


def as_of(offer: Offer, now: datetime | None) -> Offer:
    """The offer as seen at ``now``: one that could have started earlier starts now."""
    if now is None or offer.start is None or offer.start >= now:
        return offer
    return replace(offer, start=now.replace(microsecond=0))


def rank(
    items: Iterable[T],
    policy: Policy,
    offer: Callable[[T], Offer],
    *,
    now: datetime | None = None,
) -> list[T]:
    """``items`` best first by ``policy`` as of ``now``; ties keep the order they were given in."""
    return sorted(items, key=lambda item: policy.key(as_of(offer(item), now)))


def rank_offers(
    offers: Sequence[Offer], policy: Policy, *, now: datetime | None = None
) -> list[Offer]:
    return rank(offers, policy, lambda item: item, now=now)


def explain(
    policy: Policy, winner: Offer, runner_up: Offer | None, *, now: datetime | None = None
) -> str:
    """``policy.explain`` as of ``now`` (see ``as_of``)."""
    return policy.explain(
        as_of(winner, now), as_of(runner_up, now) if runner_up is not None else None
    )
