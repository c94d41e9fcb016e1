"""What the client commands of ``execbroker`` do; each returns the process's exit code.

Exit codes: 0 when all went well (the task completed, the call was answered), 1 when the
task failed (or a broker refused the call), 2 when no broker said YES or no offer could be
taken.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml
from rich.console import Console
from rich.markup import escape

from execbroker.client import display
from execbroker.client.broker import BrokerClientError
from execbroker.client.fanout import BrokerTarget, Choice, ask_all, choose
from execbroker.client.policy import Policy

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_NO = 2


class TaskFileError(ValueError):
    """A task file that cannot be read as an ExecutionRequest document."""


def load_task(path: Path) -> dict[str, Any]:
    """An ExecutionRequest from a YAML or JSON file (JSON is read as JSON, for exact errors)."""
    try:
        text = path.read_text()
    except OSError as error:
        raise TaskFileError(f"{path}: {error.strerror or error}") from error
    try:
        data = json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as error:
        raise TaskFileError(
            f"{path}: not valid {path.suffix.lstrip('.') or 'YAML'}: {error}"
        ) from error
    if not isinstance(data, dict) or "executable" not in data:
        raise TaskFileError(f"{path}: an ExecutionRequest is a mapping with an 'executable'")
    return data


def kind_only(kind: str) -> dict[str, Any]:
    """The seed's simplest question: can you run this kind of task at all (YES or NO)?"""
    return {"executable": {"kind": kind}}


def _exit_of(choice: Choice) -> int:
    if not choice.any_yes:
        return EXIT_NO
    if choice.ranked and choice.chosen is None:
        return EXIT_NO  # offers were made but every one was gone by the time we accepted
    return EXIT_OK


async def request(
    console: Console,
    targets: list[BrokerTarget],
    task: dict[str, Any],
    *,
    policy: Policy | str,
    accept: bool = True,
    watch: bool = False,
    timeout: float = 10.0,
    watch_timeout: float | None = None,
) -> int:
    """Ask every broker, show every answer, take the best offer and (optionally) follow it."""
    with console.status(f"asking {len(targets)} broker(s)"):
        answers = await ask_all(targets, task, timeout=timeout)
        choice = await choose(answers, policy=policy, accept=accept, timeout=timeout)
    display.print_choice(console, choice)
    code = _exit_of(choice)
    if code != EXIT_OK or choice.chosen is None:
        return code
    target = choice.chosen.answer.target
    uuid = choice.chosen.offer.uuid
    if not choice.accepted:
        expires = choice.chosen.offer.expires
        console.print(
            f"nothing accepted (--no-accept); the offers stay open until they expire"
            f"{f' ({expires:%H:%M:%SZ})' if expires else ''}: "
            f"execbroker accept --broker {target.url} {uuid}"
        )
        return EXIT_OK
    if not watch:
        console.print(f"follow it with: execbroker watch --broker {target.url} {uuid}")
        return EXIT_OK
    return await follow(console, target, uuid, timeout=watch_timeout)


async def follow(
    console: Console, target: BrokerTarget, uuid: str, *, timeout: float | None = None
) -> int:
    """Follow a session until it ends, then print its logs; 0 if it completed, else 1."""
    async with target.client(timeout=30) as client:
        console.print(f"following session {uuid} on {escape(target.label)}")
        final = await display.follow(console, client, uuid, timeout=timeout)
        display.print_session(console, final)
        display.print_logs(console, await client.logs(uuid))
    return EXIT_OK if final.succeeded else EXIT_FAILED


async def sessions(console: Console, target: BrokerTarget, phases: list[str]) -> int:
    async with target.client(timeout=30) as client:
        found = await client.sessions(phases)
    console.print(display.sessions_table(found, title=f"Sessions on {target.label}"))
    return EXIT_OK


async def update(console: Console, target: BrokerTarget, uuid: str, phase: str) -> int:
    """Accept, reject or cancel one session."""
    async with target.client(timeout=30) as client:
        session = await client.update(uuid, phase)
    display.print_session(console, session)
    return EXIT_OK


async def logs(console: Console, target: BrokerTarget, uuid: str) -> int:
    async with target.client(timeout=30) as client:
        display.print_logs(console, await client.logs(uuid))
    return EXIT_OK


def report_error(console: Console, error: BrokerClientError) -> int:
    console.print(f"[red]error:[/] {escape(str(error))}")
    return EXIT_FAILED
