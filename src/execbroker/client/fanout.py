"""Ask many brokers at once, take the best offer, and let go of all the others.

Three steps, each usable on its own (the demo prints between them):

1. ``ask_all``: one ExecutionRequest to every broker concurrently, each under its own
   timeout. Every broker's answer is kept: YES with offers, NO with reasons, or what went
   wrong (refused, unreachable, timed out). It never raises: one slow or dead broker
   cannot sink the others.
2. ``choose``: rank every offer with a policy and accept the best. If the accept fails
   (409: the offer expired or its capacity went to someone else) fall back to the next best.
   Then reject every other offer on every broker, so none holds capacity for nothing.
3. ``Choice.explain()``: which offer won, from which broker, why (the policy's own
   words) and what the runner-up was.

``fan_out`` runs steps 1 and 2.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass, replace
from datetime import datetime
from enum import StrEnum
from typing import Any, TypeVar
from urllib.parse import urlsplit

import httpx

from execbroker.client.broker import (
    DEFAULT_TIMEOUT,
    BrokerBadAnswer,
    BrokerClient,
    BrokerClientError,
    BrokerNoAnswer,
    BrokerUnreachable,
    shared_pool,
)
from execbroker.client.policy import DEFAULT_POLICY, Policy, explain, get_policy, rank
from execbroker.client.results import Offer, OfferSet, Session
from execbroker.timeutil import utcnow

T = TypeVar("T")

# Phases a session reaches once accepted: an accept whose answer was lost is checked for these.
_TAKEN = frozenset({"ACCEPTED", "WAITING", "PREPARING", "AVAILABLE", "RUNNING", "RELEASING"})


@dataclass(frozen=True, slots=True)
class BrokerTarget:
    """One broker to ask: its URL, the caller's token there, and a name to show."""

    url: str
    token: str | None = None
    name: str | None = None

    @property
    def label(self) -> str:
        if self.name:
            return self.name
        parts = urlsplit(self.url)
        return (parts.netloc + parts.path.rstrip("/")) or self.url

    @classmethod
    def parse(cls, spec: str, token: str | None = None) -> BrokerTarget:
        """``[name=]URL[#token]``: a name to show and a token for this broker alone are optional.

        The token travels after ``#`` because a URL's fragment is never sent anywhere.
        """
        name, sep, rest = spec.partition("=")
        if not sep or "://" in name:
            name, rest = "", spec
        url, _, own_token = rest.partition("#")
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"{spec!r}: a broker is [name=]http(s)://host:port[#token]")
        return cls(url.rstrip("/"), own_token or token, name or None)

    def client(self, timeout: float, pool: httpx.AsyncClient | None = None) -> BrokerClient:
        return BrokerClient(self.url, self.token, timeout=timeout, pool=pool)


class Outcome(StrEnum):
    YES = "YES"  # offers (or, to a kind-only question: it runs that kind)
    NO = "NO"  # with reasons
    REFUSED = "REFUSED"  # an HTTP error: a bad token, a request it finds invalid
    UNREACHABLE = "UNREACHABLE"  # the request never got there
    TIMEOUT = "TIMEOUT"  # no answer within the per-broker timeout
    INVALID = "INVALID"  # an answer that is not an offer set (not JSON, not of its shape)


@dataclass(frozen=True, slots=True)
class BrokerAnswer:
    target: BrokerTarget
    outcome: Outcome
    offerset: OfferSet | None = None
    error: str | None = None
    status_code: int | None = None
    seconds: float = 0.0

    @property
    def name(self) -> str:
        return self.target.label

    @property
    def offers(self) -> tuple[Offer, ...]:
        return self.offerset.offers if self.offerset is not None else ()

    @property
    def reasons(self) -> list[str]:
        """Why NO (the broker's words), or what went wrong reaching it."""
        if self.error is not None:
            return [self.error]
        return self.offerset.reasons if self.offerset is not None else []


@dataclass(frozen=True, slots=True)
class Candidate:
    """One offer together with the broker that made it."""

    answer: BrokerAnswer
    offer: Offer

    @property
    def broker(self) -> str:
        return self.answer.name

    def describe(self) -> str:
        return f"offer {self.offer.uuid[:8]} from {self.broker} ({self.offer.summary()})"


@dataclass(frozen=True, slots=True)
class Attempt:
    """An accept or reject that did not go through, and the broker's reason."""

    candidate: Candidate
    error: str
    status_code: int | None = None


@dataclass(frozen=True, slots=True)
class Choice:
    policy: Policy
    answers: tuple[BrokerAnswer, ...]
    ranked: tuple[Candidate, ...]  # every offer, best first
    ranked_at: datetime  # starts are compared as of this moment (see policy.as_of)
    chosen: Candidate | None = None  # the best offer (accepted, unless accepting was off)
    session: Session | None = None  # the chosen offer as its accept returned it
    # The best offer after the chosen one from another broker (if none: from the same one).
    runner_up: Candidate | None = None
    passed_over: tuple[Attempt, ...] = ()  # better offers whose accept failed
    rejected: tuple[Candidate, ...] = ()
    reject_failures: tuple[Attempt, ...] = ()

    @property
    def accepted(self) -> bool:
        return self.session is not None

    @property
    def any_yes(self) -> bool:
        return any(answer.outcome == Outcome.YES for answer in self.answers)

    def answer_of(self, name: str) -> BrokerAnswer | None:
        return next((answer for answer in self.answers if answer.name == name), None)

    def why(self) -> str:
        if self.chosen is None:
            return ""
        runner_up = self.runner_up.offer if self.runner_up is not None else None
        return explain(self.policy, self.chosen.offer, runner_up, now=self.ranked_at)

    def explain(self) -> list[str]:
        """The choice in a few lines for people: which offer, from where, why, and what else."""
        yes = [answer for answer in self.answers if answer.outcome == Outcome.YES]
        if self.chosen is None:
            if not yes:
                return [f"no broker said YES (asked {len(self.answers)})"]
            if not self.ranked:
                return [f"{len(yes)} broker(s) said YES but made no offers (a kind-only question)"]
            return [f"none of the {len(self.ranked)} offers could be accepted"] + [
                f"  {attempt.candidate.describe()}: {attempt.error}" for attempt in self.passed_over
            ]
        verb = "accepted" if self.accepted else "best"
        lines = [
            f"{verb}: {self.chosen.describe()}",
            f"  policy {self.policy.name}: {self.policy.description}",
            f"  why: {self.why()}",
            f"  out of {len(self.ranked)} offer(s) from {len(yes)} broker(s) saying YES",
        ]
        if self.runner_up is not None:
            lines.append(f"  runner-up: {self.runner_up.describe()}")
        lines += [
            f"  passed over {attempt.candidate.describe()}: {attempt.error}"
            for attempt in self.passed_over
        ]
        if self.rejected:
            brokers = sorted({candidate.broker for candidate in self.rejected})
            lines.append(f"  rejected {len(self.rejected)} other offer(s) on {', '.join(brokers)}")
        lines += [
            f"  could not reject {attempt.candidate.describe()}: {attempt.error}"
            for attempt in self.reject_failures
        ]
        return lines


# -- step 1: ask ------------------------------------------------------------------------


async def _limited(call: Awaitable[T], timeout: float) -> T:
    return await asyncio.wait_for(call, timeout)


async def ask(
    target: BrokerTarget,
    request: dict[str, Any],
    *,
    timeout: float = DEFAULT_TIMEOUT,
    pool: httpx.AsyncClient | None = None,
) -> BrokerAnswer:
    """One broker's answer to ``request``; every failure becomes an answer, never an exception.

    ``pool``: the HTTP pool to send it through (see ``shared_pool``); else one of its own.
    """
    began = time.monotonic()

    def answer(outcome: Outcome, **details: Any) -> BrokerAnswer:
        return BrokerAnswer(target, outcome, seconds=time.monotonic() - began, **details)

    try:
        async with target.client(timeout, pool) as client:
            offerset = await _limited(client.request_offers(request), timeout)
    except TimeoutError:
        return answer(Outcome.TIMEOUT, error=f"no answer within {timeout:g}s")
    except BrokerUnreachable as error:
        return answer(Outcome.UNREACHABLE, error=error.detail)
    except BrokerNoAnswer as error:
        return answer(Outcome.TIMEOUT, error=error.detail)
    except BrokerBadAnswer as error:
        return answer(Outcome.INVALID, error=error.detail)
    except BrokerClientError as error:
        return answer(
            Outcome.REFUSED,
            error=f"{error.status_code}: {error.detail}",
            status_code=error.status_code,
        )
    return answer(Outcome.YES if offerset.yes else Outcome.NO, offerset=offerset)


async def ask_all(
    targets: Sequence[BrokerTarget], request: dict[str, Any], *, timeout: float = DEFAULT_TIMEOUT
) -> list[BrokerAnswer]:
    """Every broker's answer, in the order the brokers were given, asked concurrently
    through one HTTP pool (every request is on its way before the first answer is read)."""
    async with shared_pool(timeout) as pool:
        asked = (ask(target, request, timeout=timeout, pool=pool) for target in targets)
        return list(await asyncio.gather(*asked))


def candidates(
    answers: Iterable[BrokerAnswer], policy: Policy, *, now: datetime | None = None
) -> list[Candidate]:
    """Every offer of every answer, best first by ``policy`` (ties: brokers in order given)."""
    found = [Candidate(answer, offer) for answer in answers for offer in answer.offers]
    return rank(found, policy, lambda candidate: candidate.offer, now=now)


# -- step 2: choose ---------------------------------------------------------------------


class _Clients:
    """One open client per broker for the accepts and rejects of one choice."""

    def __init__(self, stack: AsyncExitStack, timeout: float) -> None:
        self._stack = stack
        self._timeout = timeout
        self._open: dict[BrokerTarget, BrokerClient] = {}

    async def of(self, target: BrokerTarget) -> BrokerClient:
        if target not in self._open:
            client = target.client(self._timeout)
            self._open[target] = await self._stack.enter_async_context(client)
        return self._open[target]


async def _accept(
    clients: _Clients, candidate: Candidate, timeout: float
) -> tuple[Session | None, Attempt | None]:
    """Accept one offer. A lost answer is checked by reading the session back."""
    client = await clients.of(candidate.answer.target)
    uuid = candidate.offer.uuid
    try:
        return await _limited(client.accept(uuid), timeout), None
    except BrokerUnreachable as error:
        return None, Attempt(candidate, error.detail)
    except (BrokerNoAnswer, BrokerBadAnswer, TimeoutError):
        pass  # (an answer that cannot be read may still have been an accept)
    except BrokerClientError as error:
        return None, Attempt(candidate, error.detail, error.status_code)
    try:  # the accept may have happened: ask before passing it over
        session = await _limited(client.session(uuid), timeout)
    except (BrokerClientError, TimeoutError) as error:
        return None, Attempt(candidate, f"no answer to the accept, nor after it: {error}")
    if session.phase in _TAKEN:
        return session, None
    return None, Attempt(candidate, f"no answer to the accept; the offer is {session.phase}")


async def _reject(clients: _Clients, candidate: Candidate, timeout: float) -> Attempt | None:
    client = await clients.of(candidate.answer.target)
    try:
        await _limited(client.reject(candidate.offer.uuid), timeout)
    except BrokerClientError as error:
        if error.conflict:  # no longer OFFERED (expired, rejected): it holds nothing
            return None
        return Attempt(candidate, error.detail, error.status_code)
    except TimeoutError:
        return Attempt(candidate, f"no answer within {timeout:g}s")
    return None


async def choose(
    answers: Sequence[BrokerAnswer],
    *,
    policy: Policy | str = DEFAULT_POLICY,
    accept: bool = True,
    timeout: float = DEFAULT_TIMEOUT,
    on_attempt: Callable[[Candidate], Awaitable[None] | None] | None = None,
) -> Choice:
    """Rank every offer, accept the best that can still be had, and reject all the others.

    With ``accept=False`` nothing is changed on any broker: the offers stay open until they
    expire (so they can be accepted by hand) and the choice only names the best.
    ``on_attempt`` is told of each offer just before its accept is sent.
    """
    chosen_policy = get_policy(policy)
    now = utcnow()
    ranked = candidates(answers, chosen_policy, now=now)
    base = Choice(chosen_policy, tuple(answers), tuple(ranked), now)
    if not ranked:
        return base
    if not accept:
        return replace(base, chosen=ranked[0], runner_up=_runner_up(ranked[0], ranked[1:]))

    async with AsyncExitStack() as stack:
        clients = _Clients(stack, timeout)
        passed: list[Attempt] = []
        chosen: Candidate | None = None
        session: Session | None = None
        for candidate in ranked:
            if on_attempt is not None:
                outcome = on_attempt(candidate)
                if outcome is not None:
                    await outcome
            session, failure = await _accept(clients, candidate, timeout)
            if session is not None:
                chosen = candidate
                break
            passed.append(failure)  # type: ignore[arg-type]

        # The broker itself rejects the accepted offer's siblings (one offer set).
        won_set = chosen.answer.offerset if chosen is not None else None
        others = [
            candidate
            for candidate in ranked
            if candidate is not chosen
            and not (won_set is not None and candidate.answer.offerset is won_set)
        ]
        failures = await asyncio.gather(*(_reject(clients, item, timeout) for item in others))

    if chosen is None:
        return replace(base, passed_over=tuple(passed), rejected=tuple(others))
    later = ranked[ranked.index(chosen) + 1 :]
    return replace(
        base,
        chosen=chosen,
        session=session,
        runner_up=_runner_up(chosen, later),
        passed_over=tuple(passed),
        rejected=tuple(others),
        reject_failures=tuple(item for item in failures if item is not None),
    )


def _runner_up(chosen: Candidate, later: Sequence[Candidate]) -> Candidate | None:
    """The best later offer from another broker, else the best later one at all."""
    other = next((item for item in later if item.answer is not chosen.answer), None)
    return other or (later[0] if later else None)


async def fan_out(
    targets: Sequence[BrokerTarget],
    request: dict[str, Any],
    *,
    policy: Policy | str = DEFAULT_POLICY,
    accept: bool = True,
    timeout: float = DEFAULT_TIMEOUT,
) -> Choice:
    """Ask every broker, accept the best offer (falling back on 409), reject the rest."""
    answers = await ask_all(targets, request, timeout=timeout)
    return await choose(answers, policy=policy, accept=accept, timeout=timeout)
