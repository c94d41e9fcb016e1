"""Showing brokers' answers, choices and sessions to people (the CLI and the demo share it).

Everything prints through a Rich console; on a terminal a session being followed gets a
live status line, elsewhere (logs, CI, tests) only plain lines come out, one per change.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Iterable
from datetime import datetime

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from execbroker.client.broker import BrokerClient
from execbroker.client.fanout import BrokerAnswer, Choice, Outcome
from execbroker.client.results import FINAL_PHASES, Logs, Session, cores
from execbroker.timeutil import format_duration, format_instant

# Each outcome: its colour, and what the broker did, as a reason list's heading says it.
_OUTCOMES = {
    Outcome.YES: ("green", "said YES"),
    Outcome.NO: ("yellow", "said NO"),
    Outcome.REFUSED: ("red", "refused the request"),
    Outcome.UNREACHABLE: ("red", "is unreachable"),
    Outcome.TIMEOUT: ("red", "did not answer in time"),
    Outcome.INVALID: ("red", "answered with something that is not an offer set"),
}
_OUTCOME_STYLE = {outcome: style for outcome, (style, _) in _OUTCOMES.items()}
_PHASE_STYLE = {
    "COMPLETED": "green",
    "AVAILABLE": "green",
    "RUNNING": "cyan",
    "FAILED": "red",
    "CANCELLED": "yellow",
    "EXPIRED": "yellow",
    "REJECTED": "dim",
}


def make_console(*, stderr: bool = False) -> Console:
    """A console that does not squeeze tables to 80 columns when writing to a file or pipe,
    and never breaks a line of text (commands and URLs in it must stay copyable)."""
    stream = sys.stderr if stderr else sys.stdout
    return Console(
        stderr=stderr, width=None if stream.isatty() else 120, highlight=False, soft_wrap=True
    )


def _start(session: Session, now: datetime | None) -> str:
    if session.start is None:
        return "?"
    if now is not None and session.start <= now:
        return "now"
    return format_instant(session.start)


def _note(choice: Choice, uuid: str) -> str:
    if choice.chosen is not None and choice.chosen.offer.uuid == uuid:
        return "[bold green]accepted[/]" if choice.accepted else "[bold]best[/]"
    if any(attempt.candidate.offer.uuid == uuid for attempt in choice.passed_over):
        return "[red]gone (409)[/]"
    if any(candidate.offer.uuid == uuid for candidate in choice.rejected):
        return "[dim]rejected[/]"
    if choice.accepted and choice.chosen and choice.chosen.answer.offerset:
        same_set = {offer.uuid for offer in choice.chosen.answer.offers}
        if uuid in same_set:
            return "[dim]rejected (sibling)[/]"
    return ""


def answers_table(choice: Choice) -> Table:
    """Every broker's answer: one row per offer (ranked), one row per broker without offers."""
    table = Table(title="Answers", title_justify="left", expand=False)
    for column in ("rank", "broker", "answer", "offer", "grant", "start", "duration", "cost", ""):
        table.add_column(column, no_wrap=column not in ("",))
    rank = {candidate.offer.uuid: index for index, candidate in enumerate(choice.ranked, 1)}
    for answer in choice.answers:
        style = _OUTCOME_STYLE[answer.outcome]
        outcome = f"[{style}]{answer.outcome}[/]"
        if not answer.offers:
            note = "no offers: a kind-only question" if answer.outcome == Outcome.YES else ""
            table.add_row("", escape(answer.name), outcome, "", "", "", "", "", note)
            continue
        for offer in sorted(answer.offers, key=lambda item: rank.get(item.uuid, 0)):
            table.add_row(
                str(rank.get(offer.uuid, "")),
                escape(answer.name),
                outcome,
                offer.uuid[:8],
                f"{cores(offer.cores)}, {offer.memory} GiB"
                + (f", {offer.storage} GiB disk" if offer.storage else ""),
                _start(offer, choice.ranked_at),
                format_duration(offer.duration) if offer.duration else "?",
                f"{offer.cost:g}" if offer.cost is not None else "-",
                _note(choice, offer.uuid),
            )
    return table


def print_reasons(console: Console, answers: Iterable[BrokerAnswer]) -> None:
    """Why each broker said NO (or could not answer), one reason a line; and notes on a YES."""
    for answer in answers:
        if answer.outcome == Outcome.YES and not answer.reasons:
            continue
        label = _OUTCOMES[answer.outcome][1]
        console.print(f"[{_OUTCOME_STYLE[answer.outcome]}]{escape(answer.name)} {label}:[/]")
        for reason in answer.reasons or ["(no reason given)"]:
            console.print(f"  - {escape(reason)}")


def print_choice(console: Console, choice: Choice) -> None:
    console.print(answers_table(choice))
    print_reasons(console, choice.answers)
    for index, line in enumerate(choice.explain()):
        console.print(f"[bold]{escape(line)}[/]" if index == 0 else escape(line))


def phase_text(phase: str) -> str:
    style = _PHASE_STYLE.get(phase)
    return f"[{style}]{phase}[/]" if style else phase


def sessions_table(sessions: Iterable[Session], *, title: str = "Sessions") -> Table:
    table = Table(title=title, title_justify="left")
    for column in ("session", "phase", "kind", "grant", "start", "duration"):
        table.add_column(column, no_wrap=column in ("session", "phase"), overflow="fold")
    table.add_column("last message", min_width=24)
    for session in sessions:
        table.add_row(
            session.uuid,
            phase_text(session.phase),
            session.executable_kind,
            f"{cores(session.cores)}, {session.memory} GiB",
            format_instant(session.start) if session.start else "?",
            format_duration(session.duration) if session.duration else "?",
            escape(session.last_message() or ""),
        )
    return table


def print_session(console: Console, session: Session) -> None:
    console.print(
        f"session {session.uuid}: {phase_text(session.phase)} ({escape(session.summary())})"
    )
    for message in session.messages:
        console.print(f"  {message.level:5} {escape(message.text)}")
    for connector in session.connectors:
        console.print(f"  connector {connector.protocol} {escape(connector.location)}")


def print_logs(console: Console, logs: Logs, *, last: int | None = None) -> None:
    """Both streams, or only each one's ``last`` lines (saying how many were left out)."""
    for name, text in (("stdout", logs.stdout), ("stderr", logs.stderr)):
        if not text:
            console.print(f"[dim]--- {name}: empty[/]")
            continue
        lines = text.rstrip("\n").splitlines()
        hidden = len(lines) - last if last is not None and len(lines) > last else 0
        more = f" (last {last} of {len(lines)} lines)" if hidden else ""
        console.print(f"[dim]--- {name}{more}[/]")
        console.print(escape("\n".join(lines[hidden:])))


class SessionPrinter:
    """Prints what changed each time it is called with a session: phase, messages, connectors.

    Pass it as ``on_change`` to ``BrokerClient.wait`` (several waits may share one printer).
    """

    def __init__(self, console: Console) -> None:
        self.console = console
        self.began = time.monotonic()
        self.phase = "?"
        self._messages: set[tuple[str, str]] = set()
        self._connectors: set[str] = set()

    def __call__(self, session: Session) -> None:
        elapsed = f"+{time.monotonic() - self.began:5.1f}s"
        pad = " " * len(elapsed)
        if session.phase != self.phase:
            self.phase = session.phase
            self.console.print(f"  {elapsed} {phase_text(session.phase)}")
        for message in session.messages:
            key = (message.level, message.text)
            if key not in self._messages:
                self._messages.add(key)
                self.console.print(f"  {pad} {message.level}: {escape(message.text)}")
        for connector in session.connectors:
            if connector.location not in self._connectors:
                self._connectors.add(connector.location)
                self.console.print(
                    f"  {pad} connector {connector.protocol} {escape(connector.location)}"
                )


async def follow(
    console: Console,
    client: BrokerClient,
    uuid: str,
    *,
    timeout: float | None = None,
) -> Session:
    """Follow a session until it ends, printing each change (and a live line on a terminal)."""
    printer = SessionPrinter(console)
    with console.status("following the session") as status:

        async def tick() -> None:
            while True:
                status.update(
                    f"session {uuid[:8]} is {printer.phase} "
                    f"({time.monotonic() - printer.began:.0f}s; Ctrl-C stops watching)"
                )
                await asyncio.sleep(0.2)

        ticker = asyncio.create_task(tick())
        try:
            return await client.wait(uuid, FINAL_PHASES, on_change=printer, timeout=timeout)
        finally:
            ticker.cancel()
