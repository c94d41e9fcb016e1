"""``execbroker demo``: several brokers, one client, every step shown.

Everything the demo does comes from a plan file (``examples/demo.yaml``): the brokers to
start and the tasks to run. Each broker is its own ``execbroker serve`` process on a free
port, with its state in a fresh temporary directory. Each task is sent to every broker at
once; the demo prints every answer (offers, and each NO with its reasons), the choice and
why, follows the accepted session live, prints its result and logs, proves any HTTP
connector answers, and checks the outcome against what the plan says to expect. The
brokers are stopped at the end, also on Ctrl-C or an error.

A broker or task may name the services it ``needs`` (``docker``, ``slurm``, ``postgres``:
as ``scripts/services.sh status NAME`` knows them); when one is not up, the entry is
skipped with a note, so the demo runs on a bare host with the local platform alone.
Exit code 0 when every task that ran ended as expected, 1 otherwise.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import httpx
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from rich.console import Console
from rich.markup import escape
from rich.rule import Rule
from rich.table import Table

from execbroker.client import dialects, display
from execbroker.client.broker import BrokerClient, BrokerClientError
from execbroker.client.commands import TaskFileError, kind_only, load_task
from execbroker.client.fanout import BrokerTarget, Choice, Outcome, ask_all, choose
from execbroker.client.policy import DEFAULT_POLICY, get_policy
from execbroker.client.results import FINAL_PHASES, Connector, Session, cores
from execbroker.launcher import BrokerProcess

LIVE_PHASES = frozenset({"AVAILABLE", "RUNNING"})
DEFAULT_PLAN = Path("examples") / "demo.yaml"
HEALTH_TIMEOUT = 60.0
STOP_TIMEOUT = 10.0
DEMO_LOG_LINES = 12  # of each stream: a server's chatter must not bury the demo's story

# -- the plan -----------------------------------------------------------------------------


class _Plan(BaseModel):
    model_config = ConfigDict(extra="forbid")


class BrokerEntry(_Plan):
    config: Path
    needs: list[str] = Field(default_factory=list)


class Expect(_Plan):
    """What a task must come to; every field is optional and only given ones are checked."""

    result: Literal["YES", "NO"] | None = None  # did any broker say YES?
    answers: dict[str, Outcome] = Field(default_factory=dict)  # per broker (skipped: ignored)
    # the broker whose offer is accepted (or one of these, when the best depends on which
    # services are up)
    chosen: list[str] = Field(default_factory=list)
    phase: str | None = None  # the session's final phase
    stdout: list[str] = Field(default_factory=list)  # text its output must contain
    message: str | None = None  # text one of the session's messages must contain
    connector: Literal["http"] | None = None  # an HTTP connector that answers a GET

    @model_validator(mode="before")
    @classmethod
    def _one_or_many(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for name in ("stdout", "chosen"):
                if isinstance(data.get(name), str):
                    data = {**data, name: [data[name]]}
        return data


class TaskEntry(_Plan):
    name: str
    about: str = ""
    file: Path | None = None  # an ExecutionRequest (YAML or JSON), relative to the plan
    kind: str | None = None  # or only a kind: the YES/NO question
    # or a UWS job's parameters / a TES task (the file), run through that dialect on one
    # broker (the first of ``brokers``): phase, stdout and message are checked
    dialect: Literal["uws", "tes"] | None = None
    needs: list[str] = Field(default_factory=list)
    brokers: list[str] | None = None  # ask only these (default: every broker started)
    policy: str | None = None
    token: str | None = None
    timeout: float | None = None  # seconds for its session to end
    cancel_when_available: bool = False  # for servers: cancel once up (and proven)
    expect: Expect = Expect()

    @model_validator(mode="after")
    def _file_or_kind(self) -> TaskEntry:
        if (self.file is None) == (self.kind is None):
            raise ValueError(f"task {self.name}: give either file or kind")
        if self.dialect is not None:
            if self.file is None:
                raise ValueError(f"task {self.name}: a {self.dialect} task needs a file")
            expect = self.expect
            if expect.answers or expect.chosen or expect.result or expect.connector:
                raise ValueError(
                    f"task {self.name}: a {self.dialect} task is checked by phase, stdout "
                    "and message only"
                )
        return self


class DemoPlan(_Plan):
    services_script: Path | None = None  # ``SCRIPT status NAME`` exits 0 when NAME is up
    token: str = "demo-alice"
    policy: str = DEFAULT_POLICY
    timeout: float = 30.0
    brokers: list[BrokerEntry]
    tasks: list[TaskEntry]


def find_plan(path: Path | None) -> Path:
    """The plan given, else ``examples/demo.yaml`` here or in the source tree."""
    if path is not None:
        return path
    for base in (Path.cwd(), Path(__file__).resolve().parents[2]):
        if (base / DEFAULT_PLAN).is_file():
            return base / DEFAULT_PLAN
    raise FileNotFoundError(f"no {DEFAULT_PLAN} here; give the plan with --config")


def load_plan(path: Path) -> tuple[DemoPlan, Path]:
    """The plan, and the directory its relative paths are relative to."""
    try:
        data = yaml.safe_load(path.read_text())
        return DemoPlan.model_validate(data), path.resolve().parent
    except (OSError, yaml.YAMLError, ValidationError) as error:
        raise ValueError(f"{path}: {error}") from error


# -- services -----------------------------------------------------------------------------


class Services:
    """Which of the services entries need are up; asked once each, with the reason if not."""

    def __init__(self, script: Path | None, *, use: bool = True) -> None:
        self.script = script
        self.use = use
        self._known: dict[str, str | None] = {}

    def missing(self, names: Sequence[str]) -> str | None:
        """Why an entry needing ``names`` cannot run (None when all are up)."""
        for name in names:
            if name not in self._known:
                self._known[name] = self._check(name)
            if self._known[name] is not None:
                return self._known[name]
        return None

    def _check(self, name: str) -> str | None:
        if not self.use:
            return f"{name} is not used (--local-only)"
        if self.script is None or not self.script.is_file():
            return f"{name} is not available (no services script to ask)"
        try:
            done = subprocess.run(
                [str(self.script), "status", name],
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as error:
            return f"{name} is not available ({error})"
        if done.returncode == 0:
            return None
        said = (done.stdout.strip() or done.stderr.strip()).splitlines()
        return f"{name} is not up ({said[-1] if said else f'status exit {done.returncode}'})"


# -- brokers ------------------------------------------------------------------------------


def broker_name(config: Path) -> str:
    data = yaml.safe_load(config.read_text()) or {}
    return str(data.get("name") or config.stem)


# -- one task -----------------------------------------------------------------------------


@dataclass
class TaskResult:
    name: str
    skipped: str | None = None
    problems: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.skipped is None and not self.problems


@dataclass
class Outcomes:
    """What a task came to, to compare with its expectations."""

    choice: Choice | None = None
    session: Session | None = None
    stdout: str = ""
    connectors_ok: list[str] = field(default_factory=list)


async def probe_connector(console: Console, connector: Connector, *, timeout: float = 15.0) -> bool:
    """GET an HTTP connector until it answers (a server may still be starting)."""
    deadline = time.monotonic() + timeout
    last = "no answer"
    async with httpx.AsyncClient(timeout=3, follow_redirects=True) as http:
        while time.monotonic() < deadline:
            try:
                response = await http.get(connector.location)
            except httpx.HTTPError as error:
                last = str(error) or type(error).__name__
            else:
                if response.status_code < 400:
                    first = response.text.strip().splitlines()[:1]
                    console.print(
                        f"  GET {escape(connector.location)} -> {response.status_code} "
                        f"({len(response.content)} bytes)"
                        + (f": {escape(first[0][:80])}" if first else "")
                    )
                    return True
                last = f"HTTP {response.status_code}"
            await asyncio.sleep(0.3)
    console.print(f"  [red]GET {escape(connector.location)} failed: {escape(last)}[/]")
    return False


class Demo:
    def __init__(self, console: Console, plan: DemoPlan, base: Path) -> None:
        self.console = console
        self.plan = plan
        self.base = base
        self.brokers: dict[str, BrokerProcess] = {}
        self.active: dict[str, BrokerTarget] = {}  # sessions to cancel if the demo is stopped

    async def run_task(self, task: TaskEntry, services: Services) -> TaskResult:
        result = TaskResult(task.name)
        began = time.monotonic()
        missing = services.missing(task.needs)
        wanted = task.brokers or list(self.brokers)
        names = [name for name in wanted if name in self.brokers]
        if missing is None and not names:
            missing = f"none of its brokers ({', '.join(wanted)}) was started"
        if missing is not None:
            result.skipped = missing
            self.console.print(f"[yellow]skipped:[/] {escape(missing)}")
            return result
        if task.dialect is not None:
            return await self._run_dialect(task, names[0], result, began)
        try:
            request = (
                load_task(self.base / task.file)
                if task.file is not None
                else kind_only(task.kind or "")
            )
        except TaskFileError as error:
            result.problems.append(str(error))
            return result
        try:
            outcomes = await self._negotiate(task, request, names)
        except BrokerClientError as error:  # this task went wrong; the others may still run
            result.problems.append(f"{type(error).__name__}: {error}")
            await self.cancel_active()
            return result
        result.problems = self._check(task.expect, outcomes)
        result.seconds = time.monotonic() - began
        return result

    async def _run_dialect(
        self, task: TaskEntry, name: str, result: TaskResult, began: float
    ) -> TaskResult:
        """A UWS job or TES task on one broker: the same sessions, another client's view."""
        assert task.file is not None and task.dialect is not None
        try:
            document = yaml.safe_load((self.base / task.file).read_text()) or {}
        except (OSError, yaml.YAMLError) as error:
            result.problems.append(f"{task.file}: {error}")
            return result
        token = task.token or self.plan.token
        timeout = task.timeout or self.plan.timeout
        broker = self.brokers[name]
        target = BrokerTarget(broker.url, token, name)
        try:
            if task.dialect == "uws":
                url = await dialects.create_uws(broker.url, token, document)
                self.console.print(f"UWS job created on {name}, PHASE=RUN: {escape(url)}")
                self.active[url.rsplit("/", 1)[1]] = target  # a job is a session
                job = await dialects.follow_uws(url, token, timeout=timeout)
                dialects.print_uws(self.console, job, last=DEMO_LOG_LINES)
                phase, stdout, said = job.phase, job.stdout, [job.error or ""]
            else:
                task_id = await dialects.create_tes(broker.url, token, document)
                self.console.print(f"TES task created on {name}: {task_id}")
                self.active[task_id] = target
                found = await dialects.follow_tes(broker.url, token, task_id, timeout=timeout)
                dialects.print_tes(self.console, found, last=DEMO_LOG_LINES)
                phase, stdout, said = found.state, found.stdout, found.system_logs
        except (BrokerClientError, httpx.HTTPError) as error:
            result.problems.append(f"{type(error).__name__}: {error}")
            await self.cancel_active()
            return result
        self.active.clear()
        expect = task.expect
        if expect.phase is not None and phase != expect.phase:
            result.problems.append(f"expected it to end {expect.phase}, it ended {phase}")
        result.problems += [
            f"expected its output to contain {text!r}"
            for text in expect.stdout
            if text not in stdout
        ]
        if expect.message is not None and not any(expect.message in text for text in said):
            result.problems.append(f"expected a message containing {expect.message!r}")
        result.seconds = time.monotonic() - began
        return result

    async def _negotiate(
        self, task: TaskEntry, request: dict[str, Any], names: list[str]
    ) -> Outcomes:
        console = self.console
        token = task.token or self.plan.token
        policy = get_policy(task.policy or self.plan.policy)
        targets = [BrokerTarget(self.brokers[name].url, token, name) for name in names]
        console.print(f"asking {len(targets)} broker(s): {', '.join(names)} (policy {policy.name})")
        answers = await ask_all(targets, request, timeout=10)
        choice = await choose(answers, policy=policy, timeout=10)
        outcomes = Outcomes(choice=choice)
        display.print_choice(console, choice)
        if not choice.accepted or choice.chosen is None:
            return outcomes
        target = choice.chosen.answer.target
        uuid = choice.chosen.offer.uuid
        self.active[uuid] = target  # until it has ended: an interrupted demo cancels it
        async with target.client(timeout=10) as client:
            outcomes.session = await self._follow(client, task, uuid, outcomes)
            logs = await client.logs(uuid)
        self.active.pop(uuid, None)
        outcomes.stdout = logs.stdout
        session = outcomes.session
        console.print(
            f"result: {display.phase_text(session.phase)}"
            + (f" ({escape(session.last_message() or '')})" if session.messages else "")
        )
        display.print_logs(console, logs, last=DEMO_LOG_LINES)
        return outcomes

    async def _follow(
        self, client: BrokerClient, task: TaskEntry, uuid: str, outcomes: Outcomes
    ) -> Session:
        """Follow the session; once it is up, prove its connectors (and cancel a server)."""
        timeout = task.timeout or self.plan.timeout
        deadline = time.monotonic() + timeout
        printer = display.SessionPrinter(self.console)
        self.console.print(f"following session {uuid} on {client.url}")
        session = await client.wait(
            uuid, LIVE_PHASES | FINAL_PHASES, on_change=printer, timeout=timeout
        )
        if not session.final and (task.expect.connector or task.cancel_when_available):
            while not session.connectors and not session.final and task.expect.connector:
                if time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.25)
                session = await client.session(uuid)
                printer(session)
        for connector in session.connectors:
            if connector.is_http and await probe_connector(self.console, connector):
                outcomes.connectors_ok.append(connector.location)
        if task.cancel_when_available and not session.final:
            self.console.print("cancelling it: it has shown what it serves")
            printer(await client.cancel(uuid))
        remaining = max(1.0, deadline - time.monotonic())
        return await client.wait(uuid, FINAL_PHASES, on_change=printer, timeout=remaining)

    def _check(self, expect: Expect, outcomes: Outcomes) -> list[str]:
        """Every way the outcome differs from what the plan expects."""
        problems: list[str] = []
        choice, session = outcomes.choice, outcomes.session
        if choice is None:
            return ["no answers"]
        if expect.result is not None:
            said = "YES" if choice.any_yes else "NO"
            if said != expect.result:
                problems.append(f"expected a {expect.result} from some broker, got {said}")
        for name, outcome in expect.answers.items():
            answer = choice.answer_of(name)
            if answer is not None and answer.outcome != outcome:
                problems.append(
                    f"expected {name} to answer {outcome}, it answered {answer.outcome}"
                )
        if expect.chosen:
            chosen = choice.chosen.broker if choice.chosen and choice.accepted else None
            if chosen not in expect.chosen:
                wanted = " or ".join(expect.chosen)
                problems.append(f"expected an offer of {wanted} to be accepted, got {chosen}")
        if expect.phase is not None:
            phase = session.phase if session else None
            if phase != expect.phase:
                problems.append(f"expected the session to end {expect.phase}, it ended {phase}")
        problems += [
            f"expected its output to contain {text!r}"
            for text in expect.stdout
            if text not in outcomes.stdout
        ]
        if expect.message is not None and not any(
            expect.message in message.text for message in (session.messages if session else ())
        ):
            problems.append(f"expected a message containing {expect.message!r}")
        if expect.connector and not outcomes.connectors_ok:
            problems.append("expected an HTTP connector that answers")
        return problems

    async def cancel_active(self) -> None:
        """Cancel what the demo started and has not seen end (interrupted, or gone wrong)."""
        while self.active:
            uuid, target = self.active.popitem()
            with contextlib.suppress(BrokerClientError, TimeoutError):
                async with target.client(timeout=5) as client:
                    await asyncio.wait_for(client.cancel(uuid), 10)
                    self.console.print(f"cancelled session {uuid} on {target.label}")


# -- the whole demo -----------------------------------------------------------------------


def _describe(info: dict[str, Any]) -> str:
    quota = info.get("quota") or {}
    parts = [
        f"{cores(quota.get('cores'))}, {quota.get('memory')} GiB",
        f"sessions up to {quota.get('max_duration')}",
        f"runs {', '.join(kind['alias'] for kind in info.get('kinds') or []) or 'nothing'}",
    ]
    if info.get("units"):
        parts.append("sizes " + ", ".join(unit["name"] for unit in info["units"]))
    if info.get("pricing"):
        pricing = info["pricing"]
        parts.append(
            f"priced {pricing['per_core_hour']:g}/core-hour + "
            f"{pricing['per_memory_gib_hour']:g}/GiB-hour"
        )
    return "; ".join(parts)


async def _start_brokers(demo: Demo, entries: list[tuple[str, Path]], root: Path) -> None:
    began = time.monotonic()
    for name, config in entries:
        broker = BrokerProcess.from_file(config, root / name, log_level="warning")
        demo.brokers[name] = broker
        broker.spawn()
    await asyncio.gather(*(broker.wait_ready(HEALTH_TIMEOUT) for broker in demo.brokers.values()))
    async with httpx.AsyncClient(timeout=10) as http:
        for broker in demo.brokers.values():
            info = (await http.get(f"{broker.url}/info")).json()
            demo.console.print(
                f"started [bold]{broker.name}[/] at {broker.url}: {escape(_describe(info))}"
            )
    demo.console.print(f"{len(demo.brokers)} broker(s) up in {time.monotonic() - began:.1f}s")


async def _run_tasks(demo: Demo, tasks: list[TaskEntry], services: Services) -> list[TaskResult]:
    results = []
    for index, task in enumerate(tasks, 1):
        demo.console.print(Rule(f"task {index}/{len(tasks)}: {task.name}", align="left"))
        if task.about:
            demo.console.print(escape(task.about.strip()))
        result = await demo.run_task(task, services)
        if result.skipped is None:
            if result.ok:
                demo.console.print(f"[green]as expected[/] ({result.seconds:.1f}s)")
            else:
                for problem in result.problems:
                    demo.console.print(f"[red]NOT as expected:[/] {escape(problem)}")
        results.append(result)
    return results


def _summary(console: Console, results: list[TaskResult]) -> int:
    table = Table(title="Demo summary", title_justify="left")
    for column in ("task", "outcome", "detail"):
        table.add_column(column)
    for result in results:
        if result.skipped is not None:
            table.add_row(result.name, "[yellow]skipped[/]", escape(result.skipped))
        elif result.ok:
            table.add_row(result.name, "[green]as expected[/]", f"{result.seconds:.1f}s")
        else:
            table.add_row(
                result.name, "[red]NOT as expected[/]", escape("; ".join(result.problems))
            )
    console.print(table)
    ran = [result for result in results if result.skipped is None]
    failed = [result for result in ran if not result.ok]
    skipped = len(results) - len(ran)
    note = f" ({skipped} skipped)" if skipped else ""
    if failed:
        console.print(
            f"[red]demo: {len(failed)} of {len(ran)} tasks did not end as expected{note}[/]"
        )
        return 1
    tasks = "task" if len(ran) == 1 else "tasks"
    console.print(f"[green]demo: all {len(ran)} {tasks} ended as expected{note}[/]")
    return 0


@contextlib.contextmanager
def _terminate_as_interrupt() -> Iterator[None]:
    """SIGTERM stops the demo like Ctrl-C does: sessions cancelled, brokers stopped."""

    def interrupt(_signum: int, _frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def run(
    console: Console,
    plan_path: Path | None = None,
    *,
    only: Sequence[str] = (),
    keep: bool = False,
    local_only: bool = False,
) -> int:
    """Run the demo; the exit code: 0 when every task that ran ended as expected."""
    began = time.monotonic()
    path = find_plan(plan_path)
    plan, base = load_plan(path)
    tasks = [task for task in plan.tasks if not only or task.name in only]
    unknown = set(only) - {task.name for task in plan.tasks}
    if unknown:
        raise ValueError(f"{path}: no task called {', '.join(sorted(unknown))}")
    script = base / plan.services_script if plan.services_script else None
    services = Services(script, use=not local_only)
    demo = Demo(console, plan, base)
    console.print(f"execbroker demo: {path}")

    entries: list[tuple[str, Path]] = []
    for entry in plan.brokers:
        config = base / entry.config
        name = broker_name(config)
        missing = services.missing(entry.needs)
        if missing is not None:
            console.print(f"[yellow]not starting {name}:[/] {escape(missing)}")
            continue
        entries.append((name, config))

    root = Path(tempfile.mkdtemp(prefix="execbroker-demo-"))
    root.chmod(0o711)  # Slurm jobs run as users' own accounts and pass through it
    code = 1
    with _terminate_as_interrupt():
        try:
            asyncio.run(_start_brokers(demo, entries, root))
            results = asyncio.run(_run_tasks(demo, tasks, services))
            console.print(Rule())
            code = _summary(console, results)
        except KeyboardInterrupt:
            console.print("[yellow]interrupted: cancelling sessions and stopping the brokers[/]")
            asyncio.run(demo.cancel_active())
            code = 130
        except Exception as error:
            console.print(f"[red]demo failed: {escape(str(error))}[/]")
            asyncio.run(demo.cancel_active())
            code = 1
        finally:
            stopping = time.monotonic()
            for broker in demo.brokers.values():
                broker.stop(STOP_TIMEOUT)
            console.print(
                f"stopped {len(demo.brokers)} broker(s) in {time.monotonic() - stopping:.1f}s; "
                f"the demo took {time.monotonic() - began:.1f}s"
            )
            if keep or code != 0:
                console.print(f"their state and logs: {root}")
            else:
                shutil.rmtree(root, ignore_errors=True)
    return code
