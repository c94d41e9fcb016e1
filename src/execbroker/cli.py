"""The ``execbroker`` command."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

app = typer.Typer(
    help="An IVOA ExecutionBroker: offers, sessions and real execution.", no_args_is_help=True
)


def _load_config(path: Path) -> Any:
    """The broker's config, or an exit with one line per problem (field: what is wrong),
    not a traceback: a config is an operator's input like any other."""
    import yaml
    from pydantic import ValidationError

    from execbroker.config import load_config

    try:
        return load_config(path)
    except ValidationError as error:
        problems = [
            f"  {'.'.join(str(part) for part in item['loc']) or '(top level)'}: {item['msg']}"
            for item in error.errors()
        ]
        said = "\n".join(problems)
        raise SystemExit(f"execbroker serve: {path} is not a valid config:\n{said}") from None
    except yaml.YAMLError as error:
        raise SystemExit(f"execbroker serve: {path} is not valid YAML: {error}") from None


@app.command()
def serve(
    config: Annotated[
        Path, typer.Option("--config", "-c", exists=True, dir_okay=False, help="broker YAML")
    ],
    host: Annotated[str, typer.Option(help="address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port to listen on")] = 8000,
    log_level: Annotated[str, typer.Option(help="debug, info, warning")] = "info",
    workers: Annotated[
        int,
        typer.Option(
            min=1,
            envvar="EXECBROKER_WORKERS",
            help="worker processes on one socket, each a replica of the broker (uses more cores)",
        ),
    ] = 1,
    reuse_port: Annotated[
        bool,
        typer.Option(help="share the port with other processes of this user (as workers do)"),
    ] = False,
) -> None:
    """Run one broker."""
    from execbroker import logs

    broker = _load_config(config)
    logs.setup(log_level, broker.logging.format)
    if workers > 1:
        raise SystemExit(_supervise(broker, config, host, port, log_level, workers))
    _serve_one(broker, host=host, port=port, reuse_port=reuse_port, log_level=log_level)


def _serve_one(broker: Any, *, host: str, port: int, reuse_port: bool, log_level: str) -> None:
    import uvicorn

    from execbroker import workers
    from execbroker.api.app import create_app
    from execbroker.platforms.accounts import IsolationError

    try:
        application = create_app(broker)
    except IsolationError as error:  # it would run one user's tasks where another can reach
        raise SystemExit(f"execbroker serve: refusing to start: {error}") from None
    # Keep idle connections longer than clients do (httpx: 5 s), or a client may reuse one
    # the server is closing at that moment and see a reset.
    server = uvicorn.Server(
        uvicorn.Config(
            application,
            host=host,
            port=port,
            log_level=log_level,
            log_config=None,  # logs.setup's handlers, not uvicorn's own
            access_log=False,  # the app writes its own, naming user and session
            timeout_keep_alive=75,
        )
    )
    application.state.server = server  # open event streams end when it is told to stop
    server.run(sockets=[workers.listen(host, port)] if reuse_port else None)


def _supervise(broker: Any, path: Path, host: str, port: int, log_level: str, workers: int) -> int:
    """Serve with ``workers`` processes (see ``execbroker.workers``); the exit code."""
    from execbroker import workers as supervision
    from execbroker.store.engine import Database

    found = supervision.problems(broker, workers)
    if found:
        said = "\n".join(f"  {line}" for line in found)
        raise SystemExit(f"execbroker serve: refusing {workers} workers:\n{said}")
    Database.open(broker.database_url).close()  # migrated once, before the workers race to
    try:
        held = supervision.hold(host, port)  # the port, while workers come and go
    except OSError as error:
        raise SystemExit(f"execbroker serve: cannot listen on {host}:{port}: {error}") from None
    port = held.getsockname()[1]  # (port 0: the one chosen)
    command = supervision.worker_command(str(path), host=host, port=port, log_level=log_level)
    supervision.log.info("broker %s: %d workers on http://%s:%d", broker.name, workers, host, port)
    try:
        return supervision.Supervisor(command=command, count=workers).run()
    finally:
        held.close()


@app.command("hash-token")
def hash_token(
    token: Annotated[
        str | None, typer.Argument(help="the token to hash (default: make a new random one)")
    ] = None,
) -> None:
    """Print a token and the SHA-256 a broker's config keeps of it (``token_sha256``)."""
    import secrets

    from execbroker.config import token_digest

    token = token or secrets.token_urlsafe(32)
    typer.echo(f"token: {token}")
    typer.echo(f"token_sha256: {token_digest(token).hex()}")


# -- the client side ---------------------------------------------------------------------

TOKEN_HELP = "your token (for every broker without its own URL#token)"
Token = Annotated[str | None, typer.Option(envvar="EXECBROKER_TOKEN", help=TOKEN_HELP)]
OneBroker = Annotated[str, typer.Option("--broker", "-b", help="[name=]URL[#token] of the broker")]
SessionId = Annotated[str, typer.Argument(help="the session's UUID")]


def _target(spec: str, token: str | None) -> Any:
    from execbroker.client import BrokerTarget

    try:
        return BrokerTarget.parse(spec, token)
    except ValueError as error:
        raise typer.BadParameter(str(error), param_hint="--broker") from None


def _run(call: Any, *, watching: str | None = None) -> None:
    """Run a client command; broker errors and Ctrl-C become a message and an exit code."""
    import asyncio

    from execbroker.client import BrokerClientError
    from execbroker.client.commands import EXIT_FAILED, report_error
    from execbroker.client.display import make_console

    console = make_console()
    try:
        code = asyncio.run(call(console))
    except BrokerClientError as error:
        code = report_error(console, error)
    except KeyboardInterrupt:
        if watching:
            console.print(f"stopped watching; the session goes on (cancel it with: {watching})")
        code = 130 if watching else EXIT_FAILED
    raise typer.Exit(code)


@app.command()
def request(
    broker: Annotated[
        list[str],
        typer.Option("--broker", "-b", help="[name=]URL[#token] of a broker; repeat for more"),
    ],
    task: Annotated[
        Path | None,
        typer.Option(
            "--task", "-t", exists=True, dir_okay=False, help="an ExecutionRequest (YAML or JSON)"
        ),
    ] = None,
    kind: Annotated[
        str | None,
        typer.Option(help="instead of --task: only ask whether they run this kind (YES/NO)"),
    ] = None,
    token: Token = None,
    policy: Annotated[
        str, typer.Option(help="earliest-start, most-resources or cheapest")
    ] = "earliest-start",
    accept: Annotated[
        bool, typer.Option("--accept/--no-accept", help="take the best offer (or only look)")
    ] = True,
    watch: Annotated[
        bool, typer.Option(help="follow the session until it ends, then print its logs")
    ] = False,
    timeout: Annotated[float, typer.Option(help="seconds each broker has to answer")] = 10.0,
) -> None:
    """Ask every broker, show all offers and NOs, take the best offer, and say why.

    Exit code 0: done (with --watch: the task completed); 1: the task failed; 2: no broker
    said YES, or no offer could be taken.
    """
    from execbroker.client import commands, get_policy

    if (task is None) == (kind is None):
        raise typer.BadParameter("give either --task FILE or --kind KIND", param_hint="--task")
    try:
        chosen_policy = get_policy(policy)
    except ValueError as error:
        raise typer.BadParameter(str(error), param_hint="--policy") from None
    try:
        document = commands.load_task(task) if task is not None else commands.kind_only(kind or "")
    except commands.TaskFileError as error:
        raise typer.BadParameter(str(error), param_hint="--task") from None
    targets = [_target(spec, token) for spec in broker]
    _run(
        lambda console: commands.request(
            console,
            targets,
            document,
            policy=chosen_policy,
            accept=accept,
            watch=watch,
            timeout=timeout,
        ),
        watching="execbroker cancel --broker URL UUID" if watch else None,
    )


@app.command()
def sessions(
    broker: OneBroker,
    token: Token = None,
    phase: Annotated[
        list[str] | None, typer.Option("--phase", "-p", help="only these phases; repeatable")
    ] = None,
) -> None:
    """List your sessions on one broker (an admin token: everyone's), newest first."""
    from execbroker.client import commands

    target = _target(broker, token)
    _run(lambda console: commands.sessions(console, target, phase or []))


@app.command()
def watch(
    uuid: SessionId,
    broker: OneBroker,
    token: Token = None,
    timeout: Annotated[float | None, typer.Option(help="give up after this many seconds")] = None,
) -> None:
    """Follow a session until it ends, then print its logs (exit 0 if it completed, else 1)."""
    from execbroker.client import commands

    target = _target(broker, token)
    _run(
        lambda console: commands.follow(console, target, uuid, timeout=timeout),
        watching=f"execbroker cancel --broker {target.url} {uuid}",
    )


@app.command()
def logs(uuid: SessionId, broker: OneBroker, token: Token = None) -> None:
    """Print what a session's task has written so far."""
    from execbroker.client import commands

    target = _target(broker, token)
    _run(lambda console: commands.logs(console, target, uuid))


def _update(phase: str, doc: str) -> Any:
    def command(uuid: SessionId, broker: OneBroker, token: Token = None) -> None:
        from execbroker.client import commands

        target = _target(broker, token)
        _run(lambda console: commands.update(console, target, uuid, phase))

    command.__doc__ = doc
    return command


app.command("accept")(_update("ACCEPTED", "Accept an offer (the broker rejects its siblings)."))
app.command("reject")(_update("REJECTED", "Reject an offer, freeing what it holds."))
app.command("cancel")(_update("CANCELLED", "Cancel a session: its task is stopped."))


# -- the other dialects: one broker's sessions as UWS jobs and TES tasks --------------------

uws_app = typer.Typer(help="IVOA UWS 1.1 jobs on one broker (/uws/jobs).", no_args_is_help=True)
tes_app = typer.Typer(
    help="GA4GH TES 1.1 tasks on one broker (/ga4gh/tes/v1).", no_args_is_help=True
)
app.add_typer(uws_app, name="uws")
app.add_typer(tes_app, name="tes")
Timeout = Annotated[float, typer.Option(help="seconds to follow it before giving up")]


def _run_dialect(call: Any, success: frozenset[str]) -> None:
    """Run a dialect command: exit 0 when it ended (or is) in one of ``success``."""
    import httpx

    async def checked(console: Any) -> int:
        try:
            shown = await call(console)
        except httpx.HTTPError as error:
            from execbroker.client import BrokerClientError

            raise BrokerClientError(f"no answer: {error}") from None
        return 0 if shown in success else 1

    _run(checked)


def _document(path: Path, what: str) -> Any:
    import yaml

    try:
        return yaml.safe_load(path.read_text())  # JSON is YAML too
    except (OSError, yaml.YAMLError) as error:
        raise typer.BadParameter(f"{path}: {error}", param_hint=what) from None


@uws_app.command("run")
def uws_run(
    broker: OneBroker,
    param: Annotated[
        list[str] | None,
        typer.Option("--param", "-p", help="NAME=VALUE (image=, script=, cores=, ...)"),
    ] = None,
    file: Annotated[
        Path | None,
        typer.Option("--file", "-f", exists=True, dir_okay=False, help="parameters (YAML)"),
    ] = None,
    token: Token = None,
    timeout: Timeout = 300.0,
) -> None:
    """Create a job with PHASE=RUN, follow it, and print its results (exit 0 if COMPLETED)."""
    from execbroker.client import dialects

    parameters: dict[str, Any] = dict(_document(file, "--file") or {}) if file else {}
    for item in param or []:
        name, sep, value = item.partition("=")
        if not sep:
            raise typer.BadParameter(f"{item!r}: give NAME=VALUE", param_hint="--param")
        parameters[name] = value
    target = _target(broker, token)

    async def call(console: Any) -> str:
        job = await dialects.run_uws(target.url, target.token, parameters, timeout=timeout)
        dialects.print_uws(console, job)
        return job.phase

    _run_dialect(call, frozenset({"COMPLETED"}))


@uws_app.command("show")
def uws_show(
    job: Annotated[str, typer.Argument(help="the job's id")], broker: OneBroker, token: Token = None
) -> None:
    """Print a job: its phase, results and output."""
    from execbroker.client import dialects

    target = _target(broker, token)

    async def call(console: Any) -> str:
        found = await dialects.uws_job(f"{target.url}/uws/jobs/{job}", target.token)
        dialects.print_uws(console, found)
        return found.phase

    _run_dialect(call, frozenset(dialects.UWS_PHASES))


@tes_app.command("run")
def tes_run(
    broker: OneBroker,
    task: Annotated[
        Path,
        typer.Option("--task", "-t", exists=True, dir_okay=False, help="a TES task (JSON/YAML)"),
    ],
    token: Token = None,
    timeout: Timeout = 300.0,
) -> None:
    """Create a task, follow it, and print its logs (exit 0 if COMPLETE)."""
    from execbroker.client import dialects

    document = _document(task, "--task")
    target = _target(broker, token)

    async def call(console: Any) -> str:
        found = await dialects.run_tes(target.url, target.token, document, timeout=timeout)
        dialects.print_tes(console, found)
        return found.state

    _run_dialect(call, frozenset({"COMPLETE"}))


@tes_app.command("show")
def tes_show(
    task_id: Annotated[str, typer.Argument(help="the task's id")],
    broker: OneBroker,
    token: Token = None,
) -> None:
    """Print a task (FULL view): its state, executors' logs and outputs."""
    from execbroker.client import dialects

    target = _target(broker, token)

    async def call(console: Any) -> str:
        found = await dialects.tes_task(target.url, target.token, task_id)
        dialects.print_tes(console, found)
        return found.state

    _run_dialect(call, frozenset(dialects.TES_STATES))


@app.command()
def dashboard(
    broker: Annotated[
        list[str] | None,
        typer.Option("--broker", "-b", help="[name=]URL[#token] of a broker; repeat for more"),
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option(
            "--config", "-c", exists=True, dir_okay=False, help="a brokers file (brokers: [...])"
        ),
    ] = None,
    token: Token = None,
    policy: Annotated[
        str, typer.Option(help="earliest-start, most-resources or cheapest")
    ] = "earliest-start",
    host: Annotated[str, typer.Option(help="address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port to listen on")] = 8765,
    timeout: Annotated[float, typer.Option(help="seconds each broker has to answer")] = 10.0,
) -> None:
    """A web page over many brokers: their state, the last request's offers and choice, live."""
    import uvicorn

    from execbroker.web.dashboard import create_dashboard, load_targets

    targets = [_target(spec, token) for spec in broker or []]
    if config is not None:
        try:
            targets += load_targets(config, token)
        except ValueError as error:
            raise typer.BadParameter(str(error), param_hint="--config") from None
    if not targets:
        raise typer.BadParameter(
            "give --broker URL (repeatable) or --config", param_hint="--broker"
        )
    try:
        page = create_dashboard(targets, policy=policy, timeout=timeout)
    except ValueError as error:
        raise typer.BadParameter(str(error), param_hint="--policy") from None
    typer.echo(f"dashboard over {len(targets)} brokers: http://{host}:{port}/")
    server = uvicorn.Server(uvicorn.Config(page, host=host, port=port, log_level="warning"))
    page.state.server = server  # open event streams end when it is told to stop
    server.run()


@app.command()
def demo(
    config: Annotated[
        Path | None,
        typer.Option(
            "--config", "-c", exists=True, dir_okay=False, help="the plan (examples/demo.yaml)"
        ),
    ] = None,
    task: Annotated[
        list[str] | None, typer.Option("--task", "-t", help="run only these tasks; repeatable")
    ] = None,
    keep: Annotated[bool, typer.Option(help="keep the brokers' state and logs")] = False,
    local_only: Annotated[
        bool, typer.Option(help="skip every broker and task that needs a service (docker, ...)")
    ] = False,
) -> None:
    """Start the plan's brokers, run its tasks against all of them, and check the outcomes.

    Exit code 0 when every task that ran ended as the plan expects.
    """
    from execbroker import demo as demo_module
    from execbroker.client.display import make_console

    console = make_console()
    try:
        code = demo_module.run(console, config, only=task or [], keep=keep, local_only=local_only)
    except (FileNotFoundError, ValueError) as error:
        console.print(f"[red]error:[/] {error}")
        code = 1
    raise typer.Exit(code)


@app.callback()
def main() -> None:
    """An IVOA ExecutionBroker: offers, sessions and real execution."""


if __name__ == "__main__":
    app()
