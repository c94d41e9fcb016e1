"""The ``compose`` backend: a docker-compose application per session on a Docker Engine.

The handle is the compose project's name, ``eb-<session id>``; the session's work directory
holds the file the broker runs (``compose.yaml``, rewritten from the user's by
``compose_file``: limits that sum to the grant, hardening, labels, ports), so re-adopting
after a crash is running ``up -d`` on it again, which compose makes idempotent. ``docker
compose`` runs with argument lists, in the work directory, with an environment of its own
(nothing of the broker's). State and ports are read from the engine by label, like
``docker compose ps`` does, without a process per poll; the monitor hears of a service's
container starting or ending from the engine's event stream (``watch``), not at its next pass.

Compose text that is not a compose file at all (not YAML, not a mapping, no services) is
the client's mistake, not something this platform lacks: ``check`` raises InvalidRequest
naming ``executable.compose`` (a 422). What is wrong with one service (no image, say) or
what the policy refuses is a NO with its reason, as before.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import docker.errors
from docker.models.containers import Container

from execbroker import fetch, kinds
from execbroker.errors import InvalidRequest
from execbroker.model.executables import DockerCompose, DockerImageSpec, Executable
from execbroker.planner import Resources
from execbroker.platforms import compose_file
from execbroker.platforms import docker_engine as engine_
from execbroker.platforms.base import LaunchSpec, Logs, PlatformError, RunState, RunStatus
from execbroker.platforms.compose_file import ComposeError, RunSettings
from execbroker.platforms.container_policy import check_compose
from execbroker.platforms.docker_engine import (
    LABEL_BROKER,
    Engine,
    EngineOptions,
    EventFollower,
    engine_errors,
)

log = logging.getLogger(__name__)

PROJECT_PREFIX = "eb-"
LABEL_PROJECT = "com.docker.compose.project"
LABEL_SERVICE = "com.docker.compose.service"
COMPOSE_FILE = "compose.yaml"
_PROJECT = re.compile(r"^eb-[a-z0-9][a-z0-9_-]*$")
# The state of a whole project is its worst container's: first match in this order wins.
_PRECEDENCE = (RunState.FAILED, RunState.PREPARING, RunState.RUNNING, RunState.COMPLETED)
MAX_REASONS = 4
# How compose_file names the document as a whole in its errors (not YAML, no services ...).
_WHOLE_DOCUMENT = "executable.compose:"


class ComposeOptions(EngineOptions):
    max_bytes: int = 256 * 1024  # of a compose file, given inline or fetched
    command: list[str] | None = None  # default: docker-compose, else docker compose
    up_timeout: float = 600  # seconds for ``up`` (pulls included)


def project_name(session_id: str) -> str:
    return PROJECT_PREFIX + session_id.lower()


class ComposePlatform:
    name = "compose"

    def __init__(self, options: ComposeOptions, *, broker: str, sessions_dir: Path) -> None:
        self.options = options
        self.broker = broker
        self.sessions_dir = sessions_dir
        self.engine = Engine(options)
        self.command = options.command or _compose_command()
        self.events = EventFollower(self.engine, broker=broker, platform=self.name)
        self._ready: set[str] = set()
        self._storage_checked = False

    # -- offers -------------------------------------------------------------------------

    def check(self, executable: Executable) -> str | None:
        if not isinstance(executable, DockerCompose):
            return (
                "the compose platform runs docker-compose executables, "
                f"not {kinds.alias(executable.kind)}"
            )
        if executable.location is not None:
            reason = fetch.location_reason(executable.location)
            return f"executable.location: {reason}" if reason else None
        if not executable.compose:
            return None  # the kind-only question
        too_large = self._too_large(executable.compose)
        if too_large is not None:  # a limit of this platform's: a NO
            return too_large
        try:
            document = compose_file.parse(executable.compose)
        except ComposeError as error:
            if str(error).startswith(_WHOLE_DOCUMENT):  # malformed, not unsupported
                raise InvalidRequest(str(error), field="executable.compose") from None
            return str(error)
        try:
            self._allowed(document)
            with engine_errors("the Docker engine failed"):
                return self._images_reason(document)
        except (ComposeError, PlatformError) as error:
            return str(error)

    def _checked(self, text: str) -> dict[str, Any]:
        """The parsed, interpolated document; ComposeError naming what this platform refuses."""
        too_large = self._too_large(text)
        if too_large is not None:
            raise ComposeError(too_large)
        document = compose_file.parse(text)
        self._allowed(document)
        return document

    def _too_large(self, text: str) -> str | None:
        if len(text.encode()) > self.options.max_bytes:
            return f"executable.compose: larger than {self.options.max_bytes} bytes"
        return None

    def _allowed(self, document: dict[str, Any]) -> None:
        """ComposeError naming what this platform refuses in a parsed document."""
        reasons = check_compose(document, self.options.allow)
        if reasons:
            more = len(reasons) - MAX_REASONS
            tail = f" (and {more} more)" if more > 0 else ""
            raise ComposeError("; ".join(reasons[:MAX_REASONS]) + tail)
        for name, service in document["services"].items():
            compose_file.port_plans(name, service)

    def _images_reason(self, document: dict[str, Any]) -> str | None:
        if self.options.pull != "never":
            return None
        for name, service in document["services"].items():
            spec = DockerImageSpec(locations=[service["image"]])
            reason = engine_.image_reason(self.engine, spec, pull="never")
            if reason is not None:
                return (
                    f"services.{name}.image: {service['image']} is not on this host "
                    "and this platform does not pull"
                )
        return None

    def free(self) -> Resources | None:
        return None

    # -- running ------------------------------------------------------------------------

    def start(self, spec: LaunchSpec) -> str:
        executable = spec.executable
        if not isinstance(executable, DockerCompose) or executable.missing():
            raise PlatformError("a docker-compose executable with compose or location is needed")
        text = executable.compose or self._fetch(executable.location or "")
        try:
            document = self._checked(text)
            limits = compose_file.shares(
                document["services"], spec.resources, host_cpus=self.engine.host_cpus()
            )
            settings = RunSettings(
                labels=engine_.labels(
                    broker=self.broker,
                    session=spec.session_id,
                    owner=spec.owner,
                    platform=self.name,
                    deadline=spec.deadline,
                ),
                publish_host=self.options.publish_host,
                pids_limit=self.options.pids_limit,
                init=self.options.init,
                storage_gib=spec.resources.storage_gib if self._storage_limits() else None,
            )
            runnable = compose_file.rewrite(document, limits, settings)
        except ComposeError as error:
            raise PlatformError(str(error)) from None
        spec.workdir.mkdir(parents=True, exist_ok=True)
        (spec.workdir / COMPOSE_FILE).write_text(compose_file.dump(runnable))
        project = project_name(spec.session_id)
        try:
            self._up(project)
        except PlatformError:
            with contextlib.suppress(PlatformError):
                self.release(project)
            raise
        return project

    def _fetch(self, url: str) -> str:
        """The compose file at ``url`` (in PREPARING), no larger than ``max_bytes``, from
        where this platform's fetch policy allows (``execbroker.fetch``)."""
        try:
            data = fetch.fetch(
                url, max_bytes=self.options.max_bytes, timeout=10, what="the compose file"
            )
        except fetch.FetchError as error:
            raise PlatformError(f"executable.location: {error}") from None
        try:
            return data.body.decode()
        except UnicodeDecodeError:
            raise PlatformError(f"{url}: not UTF-8 text") from None

    def _storage_limits(self) -> bool:
        supported = self.engine.storage_limits()
        if not supported and not self._storage_checked:
            log.warning("compose platform: %s", self.engine.storage_note())
        self._storage_checked = True
        return supported

    def _up(self, project: str) -> None:
        pull = "never" if self.options.pull == "never" else "missing"
        self._compose(
            project,
            ["up", "-d", "--no-build", "--pull", pull, "--quiet-pull", "--remove-orphans"],
            timeout=self.options.up_timeout,
        )

    def watch(self, notify: Callable[[str], None]) -> None:
        """Tell ``notify`` the session id of each project whose container starts or ends."""
        self.events.start(notify)

    def close(self) -> None:
        self.events.stop()

    def find(self, session_id: str) -> str | None:
        project = project_name(session_id)
        if not (self.sessions_dir / session_id / COMPOSE_FILE).exists():
            return None
        try:
            self._up(project)  # converges: starts only what a crash left unstarted
        except PlatformError as error:
            log.warning("re-adopting %s: %s", project, error)
        with engine_errors("looking for the session's containers"):
            return project if self._containers(project) else None

    def status(self, handle: str) -> RunStatus:
        self._sweep()
        with engine_errors("asking the Docker engine"):
            containers = self._containers(handle)
            states = {_service(c): engine_.container_state(c) for c in containers}
        if not containers:
            return RunStatus(RunState.LOST, f"project {handle} has no containers")
        worst = min(states.values(), key=lambda s: _PRECEDENCE.index(s.state))
        if worst.state == RunState.FAILED:
            service = next(name for name, s in states.items() if s is worst)
            return RunStatus(
                RunState.FAILED, f"service {service}: {worst.message}", worst.exit_code
            )
        if worst.state != RunState.RUNNING:
            return worst
        running = [c for c in containers if states[_service(c)].state == RunState.RUNNING]
        found = [
            e
            for c in sorted(running, key=_service)
            for e in engine_.endpoints(c, self.options.url_host())
        ]
        if not found:
            return worst
        if handle not in self._ready and not self._answering(running, found):
            return RunStatus(RunState.PREPARING, "waiting for its ports to answer")
        self._ready.add(handle)
        return RunStatus(RunState.AVAILABLE, endpoints=tuple(found))

    def _answering(self, running: list[Container], found: list[engine_.Endpoint]) -> bool:
        if all(engine_.answers(endpoint) for endpoint in found):
            return True
        oldest = min(_started(c) for c in running)
        return time.time() - oldest > self.options.probe_grace

    def logs(self, handle: str) -> Logs:
        with engine_errors("reading the logs"):
            return self._logs(handle)

    def _logs(self, handle: str) -> Logs:
        containers = self._containers(handle)
        if not containers:
            workdir = self._workdir(handle)
            return Logs(
                engine_.read_text(workdir / "logs.stdout"),
                engine_.read_text(workdir / "logs.stderr"),
            )
        outs, errs = [], []
        for container in sorted(containers, key=_service):
            stdout, stderr = engine_.read_logs(container)
            outs.append(_prefixed(_service(container), stdout))
            errs.append(_prefixed(_service(container), stderr))
        return Logs("".join(outs), "".join(errs))

    def stop(self, handle: str) -> None:
        with engine_errors("stopping the containers"):
            for container in self._containers(handle):
                if container.status in ("running", "restarting", "paused"):
                    with contextlib.suppress(docker.errors.NotFound):
                        container.stop(timeout=self.options.stop_timeout)

    def release(self, handle: str) -> None:
        """Keep the logs, then ``down -v`` (containers, networks, volumes), then remove
        by label whatever compose left."""
        self._ready.discard(handle)
        workdir = self._workdir(handle)
        with engine_errors("reading the logs"):
            containers = self._containers(handle)
        if containers and workdir.exists():
            logs = self.logs(handle)
            (workdir / "logs.stdout").write_text(logs.stdout)
            (workdir / "logs.stderr").write_text(logs.stderr)
        if (workdir / COMPOSE_FILE).exists():
            try:
                self._compose(
                    handle,
                    ["down", "-v", "--remove-orphans", "-t", str(self.options.stop_timeout)],
                    timeout=120,
                )
            except PlatformError as error:
                log.warning("compose down %s: %s", handle, error)
        with engine_errors("removing what compose left"):
            self._remove_leftovers(handle)

    def _sweep(self) -> None:
        expired = self.engine.expired(broker=self.broker, platform=self.name)
        for project in sorted({c.labels.get(LABEL_PROJECT, "") for c in expired}):
            if _PROJECT.match(project):
                log.warning("removing project %s: past its session's deadline", project)
                with contextlib.suppress(PlatformError):
                    self.release(project)

    # -- helpers ------------------------------------------------------------------------

    def _workdir(self, project: str) -> Path:
        if not _PROJECT.match(project):
            raise PlatformError(f"{project!r} is not a compose project of this broker")
        return self.sessions_dir / project.removeprefix(PROJECT_PREFIX)

    def _filters(self, project: str) -> dict[str, Any]:
        return {"label": [f"{LABEL_PROJECT}={project}", f"{LABEL_BROKER}={self.broker}"]}

    def _containers(self, project: str) -> list[Container]:
        client = self.engine.client
        return client.containers.list(all=True, filters=self._filters(project), ignore_removed=True)

    def _remove_leftovers(self, project: str) -> None:
        client = self.engine.client
        for container in self._containers(project):
            with contextlib.suppress(docker.errors.NotFound):
                container.remove(force=True, v=True)
        for collection in (client.networks, client.volumes):
            for item in collection.list(filters=self._filters(project)):
                try:
                    item.remove()
                except docker.errors.APIError as error:
                    if error.status_code != 404:
                        log.warning("removing %s of %s: %s", item.name, project, error)

    def _compose(self, project: str, arguments: list[str], *, timeout: float) -> str:
        """Run ``docker compose`` on the project's file: an argument list, a clean environment."""
        workdir = self._workdir(project)
        environment = {
            "PATH": os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin"),
            "HOME": str(workdir),
            "DOCKER_CONFIG": str(workdir / ".docker"),
        }
        docker_host = self.options.docker_host or os.environ.get("DOCKER_HOST")
        if docker_host:
            environment["DOCKER_HOST"] = docker_host
        command = [
            *self.command,
            "--ansi",
            "never",
            "--project-name",
            project,
            "--project-directory",
            str(workdir),
            "--file",
            str(workdir / COMPOSE_FILE),
            *arguments,
        ]
        try:
            done = subprocess.run(
                command,
                cwd=workdir,
                env=environment,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise PlatformError(f"docker compose {arguments[0]} took over {timeout:.0f}s") from None
        if done.returncode != 0:
            tail = done.stderr.strip()[-engine_.MESSAGE_TAIL_CHARS :]
            raise PlatformError(f"docker compose {arguments[0]} failed: {tail}")
        return done.stdout


def _compose_command() -> list[str]:
    binary = shutil.which("docker-compose")
    if binary:
        return [binary]
    return [shutil.which("docker") or "docker", "compose"]


def _service(container: Container) -> str:
    name = container.labels.get(LABEL_SERVICE, container.name)
    number = container.labels.get("com.docker.compose.container-number", "1")
    return name if number == "1" else f"{name}-{number}"


def _started(container: Container) -> float:
    started = container.attrs.get("State", {}).get("StartedAt", "")
    return time.time() - engine_.age(started)


def _prefixed(service: str, text: str) -> str:
    return "".join(f"{service} | {line}\n" for line in text.splitlines())


def create(options: dict[str, Any], *, broker: Any) -> ComposePlatform:
    return ComposePlatform(
        ComposeOptions.model_validate(options),
        broker=broker.name,
        sessions_dir=broker.state_path / "sessions",
    )
