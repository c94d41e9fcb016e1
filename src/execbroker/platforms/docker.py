"""The ``docker`` backend: one docker-container or jupyter-notebook, one container on an Engine.

The handle is the container's id. The container carries everything a restarted broker needs
(labels for broker, session, owner, deadline and its planned ports), and has a name made from
the broker and session, so the engine itself refuses to start a session twice.

Limits are the grant's, as hard limits: CPU time (``nano_cpus``; a host has no more CPUs than
it has, so a grant beyond them is held to the host's), memory with no extra swap, a pids
limit, and the writable layer's size where the storage driver can hold it to one (a log line
says so when it cannot). Each session gets a bridge network of its own, so one user's
container cannot reach another's over docker's shared default bridge; networks are made
ahead (``docker_networks``: ``network_spares``), each with a holder container whose network
namespace a session joins (``holder_image``), and each is given to one session only, which
removes it with its container; for a session that publishes ports, only a holder that
publishes the same ones (``port_spares``: for the sets of ports sessions published lately),
else it gets the spare's network and publishes them itself. Ports are published on
the broker's ``publish_host`` at random host ports and reported as connectors; an HTTP(S) one
only once it answers (or after ``probe_grace`` seconds), so AVAILABLE means reachable. A port
with ``access: false`` is not published; ``external`` ports and addresses a request names are
not honoured (the broker chooses where its hosts' ports go). ``entrypoint`` is one program, as
``docker run --entrypoint`` takes it; ``command`` its arguments.

Jupyter notebooks run in the ``notebook_image`` (default ``execbroker/python:local``: python3,
ipykernel, papermill and jupyter_server) under the same grant and hardening, as
``notebooks.prepare`` describes them: its self-contained runner, at ``/session`` in the
container. A batch notebook runs to completion with papermill; an interactive one is a
Jupyter server on port 8888 behind its random token, published like any port and reported
(with the token) once the runner says it answers. The task's files are *copied* in with the
engine's archive API before the container starts, and the outputs (the executed or saved
notebook) and the runner's result are copied back into the session's work directory when it
ends (status at exit, or release), under ``notebook_outputs_limit`` bytes. Copies, not a
bind mount of the work directory, because: the container then writes only its own
writable layer (held to the storage grant where the driver can), never the broker's disk;
nothing the task writes lands on the broker's host as root, so nothing it leaves there can
be a link or a device the broker trips over; and it works the same with an engine on
another host (``docker_host``). The price: outputs appear when the session ends, not while
it runs, and the root file system cannot be read-only (``/session`` is in it), so ``HOME``
is ``/session/work`` to keep Jupyter's own files with the task.

Options (``platforms: [{type: docker, ...}]``): see ``DockerOptions`` and ``EngineOptions``,
e.g. ``pull: never``, ``publish_host: 0.0.0.0``, ``endpoint_host: broker.example.org``,
``allow: {privileged: true}``, ``isolate: false``, ``notebook_image: null`` (no notebooks).

Every container also gets an empty ``/session/outputs`` (``$EXECBROKER_OUTPUTS``) before it
starts; the regular files it leaves there are copied back like a notebook's when it ends, and
a TES task's outputs are copied out of the ended container at their own paths (``collect``)
for the broker to deliver. The directory is placed with the epoch as its mtime, so one the
task never touched is known empty from the engine's stat of it (~10 ms) without a copy (the
engine's tar helper costs ~100 ms); a task that sets that time back itself loses only its
own outputs, and files an image itself has there are not outputs unless the task makes one.
Where the broker can read the engine's overlay2 layers (it runs as root on the engine's
host: ``read_layers``), an ended task's outputs are read from its container's writable
layer instead (``docker_layer``, learned from one inspect before its start), at once and
with the same result, and the engine is asked only where the layer alone cannot tell; the
empty directory is made there too before the start (no archive copy-in, whose tar helper
costs ~60-100 ms a launch), where nothing in the image or the layer can make it differ.

The monitor hears of a container starting or ending from the engine's event stream
(``watch``) rather than at its next pass; a container that ended with exit code 0 is not
inspected after its ``die`` event (the event names its session), so its session is COMPLETED
as soon as its outputs are in place (from its layer: at once; through the engine: once the
engine has let go of the container).
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import Any

import docker.errors
from docker.models.containers import Container
from docker.types import LogConfig
from pydantic import Field

from execbroker import kinds, notebooks
from execbroker.model.executables import (
    DockerContainer,
    DockerImageSpec,
    Executable,
    JupyterNotebook,
)
from execbroker.notebooks import task as notebook_files
from execbroker.outputs import OUTPUTS_DIR
from execbroker.planner import Resources
from execbroker.platforms import docker_data, docker_layer
from execbroker.platforms import docker_engine as engine_
from execbroker.platforms.base import LaunchSpec, Logs, PlatformError, RunState, RunStatus
from execbroker.platforms.container_policy import check_container, hardening
from execbroker.platforms.docker_engine import (
    GIB,
    LABEL_BROKER,
    LABEL_NOTEBOOK,
    LABEL_PLATFORM,
    LABEL_PORTS,
    LABEL_PUBLISHED,
    LABEL_SESSION,
    Engine,
    EngineOptions,
    EventFollower,
    Known,
    PortPlan,
    engine_errors,
)
from execbroker.platforms.docker_networks import (
    LABEL_HOLDER,
    LABEL_NETWORK,
    NetworkPool,
    discard,
    remove_holder,
)
from execbroker.platforms.docker_networks import remove as remove_network
from execbroker.platforms.docker_prepared import PreparedImages

log = logging.getLogger(__name__)

_GONE = docker.errors.NotFound
_TRANSPORT = {"HTTP": "tcp", "HTTPS": "tcp", "TCP": "tcp", "UDP": "udp"}

# What the notebook image has (``scripts/images/python``): papermill, jupyter_server, and
# ipykernel's python3 kernel only.
NOTEBOOK_SUPPORT = notebooks.Support(
    batch="papermill", interactive="jupyter_server", kernels=frozenset({"python3"})
)
SESSION_DIR = PurePosixPath("/session")  # the session's files, as the container sees them
NOTEBOOK_PORT = 8888  # the Jupyter server's port inside the container
NOTEBOOK_STOP_TIMEOUT = 10  # seconds the runner gets to end its kernels and say how it ended
# The task's files: what ``notebooks.prepare`` writes, and the directories the task needs.
_NOTEBOOK_FILES = {
    notebook_files.RUNNER_FILE: 0o644,
    notebook_files.TASK_FILE: 0o600,
    notebook_files.INPUT_FILE: 0o644,
}
_NOTEBOOK_DIRS = {OUTPUTS_DIR: 0o755, "work": 0o700}
_OUTPUTS_MODE = 0o777  # a task's $EXECBROKER_OUTPUTS: writable by any user the image runs as
# On a container: "image" when its image has $EXECBROKER_OUTPUTS already (docker_prepared).
LABEL_OUTPUTS = "execbroker.outputs"


class DockerOptions(EngineOptions):
    isolate: bool = True  # a bridge network per session (else: docker's shared default bridge)
    network_spares: int = Field(
        default=1, ge=0, le=8, description="per-session networks made ahead (0: at each start)"
    )
    port_spares: int = Field(
        default=1,
        ge=0,
        le=8,
        description="networks made ahead whose holder publishes the ports that sessions "
        "published lately, one for each of the last this many sets of ports (0: none)",
    )
    holder_image: str | None = Field(
        default="busybox:local",
        description="a tiny local image with sleep, whose container holds a spare network's "
        "namespace for a session to join (docker_networks); null: spare networks only",
    )
    notebook_image: str | None = Field(
        default="execbroker/python:local", description="runs notebooks; null: no notebooks"
    )
    notebook_outputs_limit: int = Field(
        default=256 * 1024**2, ge=0, description="bytes of a task's outputs copied back"
    )
    # Off by default: the prepared images are never removed, and each keeps its base image's
    # layers (``docker rmi`` of the base must remove it first), a cost an operator opts into.
    prepare_images: bool = Field(
        default=False,
        description="derive from each image sessions run one with /session/outputs in it "
        "(docker_prepared), so no start waits to copy it in; false: copy it in at each start",
    )
    read_layers: bool = Field(
        default=True,
        description="read an ended task's outputs straight from its container's overlay2 "
        "layer where the broker can (root on the engine's host; docker_layer), without the "
        "engine's tar helper; false: always through the archive API",
    )


class DockerPlatform:
    name = "docker"
    stages_data = True  # a named volume per resource (``docker_data``)

    def __init__(self, options: DockerOptions, *, broker: str, state_dir: Path) -> None:
        self.options = options
        self.broker = broker
        self.engine = Engine(options)
        self.networks = NetworkPool(
            self.engine,
            broker=broker,
            platform=self.name,
            spares=options.network_spares,
            holder_image=options.holder_image,
            port_spares=options.port_spares,
            publish_host=options.publish_host,
        )
        self.events = EventFollower(self.engine, broker=broker, platform=self.name)
        self.prepared = PreparedImages(self.engine, {str(SESSION_DIR / OUTPUTS_DIR): 0o777})
        self.logs_dir = state_dir / "docker-logs"
        self.sessions_dir = state_dir / "sessions"  # the broker's session work directories
        self._ready: set[str] = set()  # handles whose HTTP endpoints have answered
        self._known: dict[str, Known] = {}  # handles' statuses, kept until an event says more
        self._collected: set[str] = set()  # notebook handles whose files are copied back
        # handles' writable layers, where the outputs can be read from them (docker_layer)
        self._layers: dict[str, docker_layer.Layers] = {}
        self._read_layers = options.read_layers and docker_layer.can_read_layers()
        self._storage_checked = False

    # -- offers -------------------------------------------------------------------------

    def check(self, executable: Executable) -> str | None:
        if isinstance(executable, JupyterNotebook):
            return self._notebook_reason(executable)
        if not isinstance(executable, DockerContainer):
            return (
                "the docker platform runs docker-container and jupyter-notebook executables, "
                f"not {kinds.alias(executable.kind)}"
            )
        refusal = check_container(executable, self.options.allow)
        if refusal is not None or executable.image is None or not executable.image.locations:
            return refusal
        try:
            with engine_errors("the Docker engine failed"):
                return engine_.image_reason(self.engine, executable.image, pull=self.options.pull)
        except PlatformError as error:
            return str(error)

    def _notebook_reason(self, executable: JupyterNotebook) -> str | None:
        image = self.options.notebook_image
        if not image:
            return "the docker platform here runs no notebooks (it has no notebook_image)"
        refusal = notebooks.refusal(executable, NOTEBOOK_SUPPORT, platform=self.name)
        if refusal is not None or self.options.pull != "never":
            return refusal
        try:
            with engine_errors("the Docker engine failed"):
                found = engine_.find_image(self.engine, DockerImageSpec(locations=[image]))
        except PlatformError as error:
            return str(error)
        if found is None:
            return (
                f"the docker platform's notebook image {image} is not on this host "
                "and this platform does not pull"
            )
        return None

    def free(self) -> Resources | None:
        return None

    def image_ports(self, reference: str) -> list[int]:
        """The TCP ports a local image declares (EXPOSE); [] for an image not on this host."""
        try:
            with engine_errors("the Docker engine failed"):
                image = self.engine.local_image(reference)
        except PlatformError:
            return []
        exposed = (image.attrs.get("Config") or {}).get("ExposedPorts") or {} if image else {}
        port_of = (key.partition("/") for key in exposed)
        return sorted(int(port) for port, _, proto in port_of if proto in ("", "tcp"))

    # -- running ------------------------------------------------------------------------

    def start(self, spec: LaunchSpec) -> str:
        executable = spec.executable
        if isinstance(executable, JupyterNotebook):
            refusal = self._notebook_reason(executable)
            if refusal is not None:
                raise PlatformError(refusal)
            with engine_errors("starting the notebook's container"):
                return self._start_notebook(spec)
        if not isinstance(executable, DockerContainer) or executable.missing():
            raise PlatformError("a docker-container with image.locations is needed")
        refusal = check_container(executable, self.options.allow)
        if refusal is not None:
            raise PlatformError(refusal)
        with engine_errors("starting the container"):
            return self._start(spec, executable)

    def _start(self, spec: LaunchSpec, executable: DockerContainer) -> str:
        # Started before a crash: the container's name is the session's, so ``_create``
        # finds it (the engine refuses a second) and starts no other.
        assert executable.image is not None
        image = engine_.obtain_image(self.engine, executable.image, pull=self.options.pull)
        # the same image with an empty $EXECBROKER_OUTPUTS in it, once made: nothing to copy in
        prepared = self.prepared.get(image) if self.options.prepare_images else None
        arguments: dict[str, Any] = {
            "image": prepared or image.id,
            "command": executable.command or None,
            "entrypoint": [executable.entrypoint] if executable.entrypoint else None,
            "environment": {**executable.environment, **_session_environment(spec)},
            "labels": {LABEL_OUTPUTS: "image"} if prepared else {},
        }
        return self._run(spec, arguments, _port_plans(executable), executable.privileged)

    def _start_notebook(self, spec: LaunchSpec) -> str:
        """The notebook's files in the work directory (the copy the container gets), then
        the container: the runner as its command, 8888 published when it is a server."""
        existing = self._container_of(spec.session_id)
        if existing is not None:  # started before a crash: same files, never a second one
            return self._started(existing)
        task = notebooks.prepare(
            spec, python="python3", task_dir=SESSION_DIR, host="0.0.0.0", port=NOTEBOOK_PORT
        )
        task.write(spec.workdir)
        assert self.options.notebook_image
        wanted = DockerImageSpec(locations=[self.options.notebook_image])
        image = engine_.obtain_image(self.engine, wanted, pull=self.options.pull)
        plans = [PortPlan(NOTEBOOK_PORT, "tcp", "HTTP")] if task.mode == "interactive" else []
        arguments: dict[str, Any] = {
            "image": image.id,
            "command": list(task.argv),
            "working_dir": str(SESSION_DIR),
            "environment": {
                "HOME": str(SESSION_DIR / "work"),
                # ipykernel's debugpy warns on every kernel start about frozen modules
                "PYDEVD_DISABLE_FILE_VALIDATION": "1",
                **_session_environment(spec),
            },
            "labels": {LABEL_NOTEBOOK: task.mode},
        }
        return self._run(spec, arguments, plans)

    def _run(
        self,
        spec: LaunchSpec,
        arguments: dict[str, Any],
        plans: list[PortPlan],
        privileged: bool = False,
    ) -> str:
        """Create (on a network of its own) and start the session's container, under the
        grant's limits and the hardening every container gets."""
        labels = engine_.labels(
            broker=self.broker,
            session=spec.session_id,
            owner=spec.owner,
            platform=self.name,
            deadline=spec.deadline,
        )
        name = f"execbroker-{self.broker}-{spec.session_id}"
        arguments = {
            **arguments,
            "name": name,
            "labels": {
                **arguments.get("labels", {}),
                **labels,
                LABEL_PORTS: engine_.ports_label(plans),
            },
            "ports": {p.key: (self.options.publish_host, None) for p in plans},
            "detach": True,
            "init": self.options.init,
            "log_config": LogConfig(type="json-file", config={"max-size": "10m", "max-file": "2"}),
            **self._limits(spec.resources),
            **hardening(privileged=privileged),
        }
        if spec.data:
            arguments["volumes"] = docker_data.stage_volumes(
                self.engine.client, spec, image=arguments["image"], prefix=name, labels=labels
            )
        if not self.options.isolate:
            container, fresh = self._create(arguments)
            return self._started(container, fresh=fresh)
        ports = [p.key for p in plans]
        spare = self.networks.take(lambda: self._network(name, labels), ports)
        arguments["labels"][LABEL_NETWORK] = spare.network
        if spare.holder is not None:
            arguments["labels"][LABEL_HOLDER] = spare.holder
        if spare.holder is not None and spare.ports == tuple(sorted(ports)):
            # joins the namespace made ahead, whose holder publishes exactly its ports
            arguments["network_mode"] = f"container:{spare.holder}"
            del arguments["ports"]
            if spare.published:
                arguments["labels"][LABEL_PUBLISHED] = json.dumps(spare.published)
        else:  # its ports are published from its own namespace
            arguments["network"] = spare.network
        try:
            container, fresh = self._create(arguments)
        except PlatformError:
            discard(self.engine, spare)
            raise
        if container.labels.get(LABEL_NETWORK) != spare.network:  # another start's container
            discard(self.engine, spare)
        try:
            return self._started(container, fresh=fresh)
        finally:
            self.networks.refill()

    def _limits(self, grant: Resources) -> dict[str, Any]:
        cpus = min(grant.cores, self.engine.host_cpus())
        if cpus < grant.cores:
            log.info("a grant of %d cores is held to this host's %d CPUs", grant.cores, cpus)
        memory = grant.memory_gib * GIB
        limits: dict[str, Any] = {
            "nano_cpus": int(cpus * 1e9),
            "mem_limit": memory,
            "memswap_limit": memory,
            "pids_limit": self.options.pids_limit,
        }
        if grant.storage_gib and self._storage_limits():
            limits["storage_opt"] = {"size": f"{grant.storage_gib}G"}
        return limits

    def _storage_limits(self) -> bool:
        supported = self.engine.storage_limits()
        if not supported and not self._storage_checked:
            log.warning("docker platform: %s", self.engine.storage_note())
        self._storage_checked = True
        return supported

    def _network(self, name: str, labels: dict[str, str]) -> str:
        client = self.engine.client
        try:
            client.networks.create(name, driver="bridge", labels=labels, check_duplicate=True)
        except docker.errors.APIError as error:
            if error.status_code != 409:  # 409: made before a crash; use it
                reason = engine_.ok_or_reason(error)
                raise PlatformError(f"could not make a network: {reason}") from None
        return name

    def _create(self, arguments: dict[str, Any]) -> tuple[Container, bool]:
        """The session's container, and whether this call made it. A new one is described
        from what the engine was just told (``containers.create`` would inspect it back)."""
        client = self.engine.client
        try:
            made = engine_.create_container(client.api, arguments)
        except docker.errors.APIError as error:
            if error.status_code == 409:  # made before a crash, or by a start racing a
                # re-adoption: take the one there
                return client.containers.get(arguments["name"]), False
            reason = engine_.ok_or_reason(error)
            raise PlatformError(f"could not create the container: {reason}") from None
        attrs = {
            "Id": made,
            "Name": f"/{arguments['name']}",
            "Config": {"Labels": arguments["labels"]},
            "State": {"Status": "created"},
        }
        return client.containers.prepare_model(attrs), True

    def _started(self, container: Container, *, fresh: bool = False) -> str:
        """Start a container that is only created; ``fresh`` (made just now by this call),
        it is not asked for its state first, and one with no ports to report is known to be
        running once its start returns, until the engine tells of a change."""
        if not fresh:
            container.reload()  # another start may be under way
        if container.status == "created":
            if fresh and self._read_layers and LABEL_NOTEBOOK not in container.labels:
                with contextlib.suppress(docker.errors.APIError):  # (then the engine copies)
                    self._learn_layers(container.client.api.inspect_container(container.id))
            before = self.events.token(container.id)
            try:
                if LABEL_NOTEBOOK in container.labels:  # its files, from the work directory
                    self._place_notebook(container)
                elif container.labels.get(LABEL_OUTPUTS) != "image":
                    self._place_outputs(container, fresh=fresh)
                container.start()
            except docker.errors.APIError as error:
                reason = engine_.ok_or_reason(error)
                self.release(container.id)
                raise PlatformError(f"could not start the container: {reason}") from None
            if fresh:
                self._know_started(container, before)
        return container.id

    def _place_outputs(self, container: Container, *, fresh: bool) -> None:
        """An empty $EXECBROKER_OUTPUTS, whatever user the image runs as: made in the layer
        of a container made just now where the broker can (``docker_layer``: no tar helper),
        else through the engine, with the same result."""
        layers = self._layers.get(container.id) if fresh else None
        if layers is not None:
            path, now = SESSION_DIR / OUTPUTS_DIR, time.time()
            try:
                top_mode = engine_.PUT_ROOT_MODE
                docker_layer.place_untouched(
                    layers, path, _OUTPUTS_MODE, top_mode=top_mode, now=now
                )
                return
            except docker_layer.Unsure as why:
                log.debug("container %s: outputs placed by the engine (%s)", container.id[:12], why)
        engine_.put_files(
            container,
            str(SESSION_DIR),
            {},
            {OUTPUTS_DIR: _OUTPUTS_MODE},
            untouched=frozenset({OUTPUTS_DIR}),
        )

    def _know_started(self, container: Container, before: tuple[int, int] | None) -> None:
        """Its start returned: RUNNING, if the event stream was open all along (``before``:
        its token from before the start) and has not brought the container's end already; an
        end it brings later changes the token, and then the engine is asked."""
        token = self.events.token(container.id)
        plain = LABEL_NOTEBOOK not in container.labels and not engine_.planned_ports(container)
        if token is None or before is None or token[0] != before[0] or not plain:
            return
        if self.events.last_action(container.id) in (None, "start"):
            self._known[container.id] = Known(RunStatus(RunState.RUNNING), token, time.monotonic())

    def watch(self, notify: Callable[[str], None]) -> None:
        """Tell ``notify`` the session id of each container that starts or ends."""
        self.events.start(notify)

    def close(self) -> None:
        self.events.stop()
        self.networks.close()

    def find(self, session_id: str) -> str | None:
        with engine_errors("looking for the session's container"):
            container = self._container_of(session_id)
            return None if container is None else self._started(container)

    def status(self, handle: str) -> RunStatus:
        self._sweep()
        session = self.events.completed.get(handle)
        if session is not None:  # as ``container_state`` would say, sooner
            if handle not in self._collected:  # its outputs, before its session ends
                with engine_errors("copying the outputs"):
                    self._collect(self._ended(handle, session), ended=True)
            return RunStatus(RunState.COMPLETED, "completed", 0)
        token = self.events.token(handle)  # before asking: a change after it is heard of
        known = self._known.get(handle)
        if known is not None and known.holds(token):
            return known.status
        status, keep = self._status(handle)
        if token is not None and keep:
            self._known[handle] = Known(status, token, time.monotonic())
        else:
            self._known.pop(handle, None)
        return status

    def _status(self, handle: str) -> tuple[RunStatus, bool]:
        """The engine's answer, and whether it holds until an event says otherwise: a
        running container's does (not a notebook's, whose runner tells more in files; not a
        server's still waiting to answer, which no event will announce)."""
        with engine_errors("asking the Docker engine"):
            try:
                container = self.engine.client.containers.get(handle)
            except docker.errors.NotFound:
                return RunStatus(RunState.LOST, f"container {handle[:12]} is gone"), False
            state = engine_.container_state(container)
            if LABEL_NOTEBOOK in container.labels:
                return self._notebook_status(container, state), False
            if state.state.final:  # its outputs are in place before its session ends
                if self._read_layers and handle not in self._layers:  # (started before a restart)
                    self._learn_layers(container.attrs)
                self._collect(container, ended=True)
        if state.state != RunState.RUNNING:
            return state, False
        found = engine_.endpoints(container, self.options.url_host())
        if not found:
            return state, True
        if handle not in self._ready and not self._answering(container, found):
            return RunStatus(RunState.PREPARING, "waiting for its ports to answer"), False
        self._ready.add(handle)
        return RunStatus(RunState.AVAILABLE, endpoints=tuple(found)), True

    def _notebook_status(self, container: Container, state: RunStatus) -> RunStatus:
        """A notebook task as its runner tells it: a server is AVAILABLE (with its URL and
        token) once the runner has found it answering; an ended task is what the runner
        said (a failing cell's error), else the container's own state (killed, out of memory)."""
        workdir = self._workdir(container)
        if state.state == RunState.RUNNING:
            if container.labels[LABEL_NOTEBOOK] == "interactive":
                self._copy_back(container, workdir, notebook_files.SERVER_FILE)
            port = engine_.published_port(container, f"{NOTEBOOK_PORT}/tcp")
            if port is None and container.labels[LABEL_NOTEBOOK] == "interactive":
                return RunStatus(RunState.PREPARING, "waiting for the server's port")
            host = self.options.url_host().strip("[]")
            return notebooks.running(workdir, host=host, port=port)
        if not state.state.final:
            return state
        self._collect(container)
        said = notebooks.result(workdir)
        return state if said is None else RunStatus(said.state, said.message, state.exit_code)

    def _answering(self, container: Container, found: list[engine_.Endpoint]) -> bool:
        if all(engine_.answers(endpoint) for endpoint in found):
            return True
        started = container.attrs["State"].get("StartedAt", "")
        return engine_.age(started) > self.options.probe_grace

    def logs(self, handle: str) -> Logs:
        with engine_errors("reading the logs"):
            try:
                return Logs(*engine_.read_logs(self.engine.client.containers.get(handle)))
            except docker.errors.APIError as error:
                # Released (maybe while we read; 409: being removed): ``release`` saved its
                # logs before removing it.
                if error.status_code not in (404, 409):
                    raise
                return Logs(
                    engine_.read_text(self.logs_dir / f"{handle}.stdout"),
                    engine_.read_text(self.logs_dir / f"{handle}.stderr"),
                )

    def stop(self, handle: str) -> None:
        with engine_errors("stopping the container"), contextlib.suppress(_GONE):
            container = self.engine.client.containers.get(handle)
            timeout = self.options.stop_timeout
            if LABEL_NOTEBOOK in container.labels:
                timeout = max(timeout, NOTEBOOK_STOP_TIMEOUT)
            container.stop(timeout=timeout)

    def release(self, handle: str) -> None:
        """Keep the logs (a finished task's output can still be fetched) and a notebook's
        outputs, then remove the container and its network."""
        self._ready.discard(handle)
        self._known.pop(handle, None)
        self._layers.pop(handle, None)
        self.events.forget(handle)
        with engine_errors("removing the container"):
            try:
                container = self.engine.client.containers.get(handle)
            except docker.errors.NotFound:
                return
            self._keep_logs(container)
            self._collect(container)
            self._collected.discard(container.id)
            try:
                container.remove(force=True, v=True)
            except docker.errors.APIError as error:
                if error.status_code not in (404, 409):  # 409: a removal under way already
                    raise
            if self.options.isolate:  # before spares, a network was named after its container
                holder = container.labels.get(LABEL_HOLDER)
                if holder:
                    remove_holder(self.engine, holder)
                self._remove_network(container.labels.get(LABEL_NETWORK, container.name))
            session = container.labels.get(LABEL_SESSION)
            if session:
                docker_data.remove_volumes(self.engine.client, broker=self.broker, session=session)

    # -- helpers ------------------------------------------------------------------------

    def _container_of(self, session_id: str) -> Container | None:
        found = self.engine.client.containers.list(
            all=True,
            ignore_removed=True,
            filters={
                "label": [
                    f"{LABEL_BROKER}={self.broker}",
                    f"{LABEL_SESSION}={session_id}",
                    f"{LABEL_PLATFORM}={self.name}",
                ]
            },
        )
        return found[0] if found else None

    def _workdir(self, container: Container) -> Path:
        session = container.labels.get(LABEL_SESSION, "")
        if not session or "/" in session or session.startswith("."):
            raise PlatformError(f"container {container.name} has no session label")
        return self.sessions_dir / session

    def _place_notebook(self, container: Container) -> None:
        """Copy the task's files (written by ``notebooks.prepare``) into the container."""
        workdir = self._workdir(container)
        try:
            files = {
                name: ((workdir / name).read_bytes(), mode)
                for name, mode in _NOTEBOOK_FILES.items()
            }
        except FileNotFoundError as error:
            raise PlatformError(f"the notebook task's files are gone: {error}") from None
        engine_.put_files(container, str(SESSION_DIR), files, _NOTEBOOK_DIRS)

    def _copy_back(self, container: Container, workdir: Path, name: str) -> None:
        """A file the runner writes (once) at the top of ``/session``, into the work
        directory unless it is there already."""
        if (workdir / name).exists():
            return
        content = engine_.read_file(container, str(SESSION_DIR / name))
        if content is not None:
            temporary = workdir / f".{name}.part"
            temporary.write_bytes(content)
            temporary.replace(workdir / name)

    def _ended(self, handle: str, session: str) -> Container:
        """A container the event stream saw end well, described from what that event told
        (its session's label): asking the engine would wait for it to finish tearing the
        container down, and nothing more is needed to copy its outputs out."""
        labels = {LABEL_SESSION: session}
        attrs = {"Id": handle, "Name": f"/{handle[:12]}", "Config": {"Labels": labels}}
        return self.engine.client.containers.prepare_model(attrs)

    def _learn_layers(self, attrs: dict[str, Any]) -> None:
        """Where the container's outputs can be read from its layer (none of its mounts in
        /session: the archive API would read a mount's files, which are not in the layer)."""
        mounts = [str(m.get("Destination", "/")) for m in attrs.get("Mounts") or []]
        mounts += [str(path) for path in (attrs.get("HostConfig") or {}).get("Tmpfs") or {}]
        layers = docker_layer.layers_of(attrs)
        if layers is not None and not any(_under(SESSION_DIR, m) for m in mounts):
            self._layers[str(attrs["Id"])] = layers

    def _collect(self, container: Container, *, ended: bool = False) -> None:
        """Copy an ended task's outputs ($EXECBROKER_OUTPUTS) and a notebook's result into
        its work directory, once: when its end is first seen (before the session is final),
        else at its release. Outputs the task never touched (the empty directory as it was
        placed, ``is_untouched``) need only the engine's stat, not a copy; when the task has
        ``ended``, its layer is read instead where it can be (``docker_layer``)."""
        if container.id in self._collected:
            return
        workdir = self._workdir(container)
        source = str(SESSION_DIR / OUTPUTS_DIR)
        notebook = LABEL_NOTEBOOK in container.labels  # (its runner writes outputs anyway)
        if ended and not notebook and self._from_layers(container.id, workdir):
            self._collected.add(container.id)
            return
        api = container.client.api
        if not notebook and engine_.is_untouched(engine_.path_stat(api, container.id, source)):
            (workdir / OUTPUTS_DIR).mkdir(parents=True, exist_ok=True)  # as a copy leaves it
        else:
            limit = self.options.notebook_outputs_limit
            engine_.copy_out(container, source, workdir / OUTPUTS_DIR, limit=limit)
        if notebook:
            self._copy_back(container, workdir, notebook_files.RESULT_FILE)
        self._collected.add(container.id)

    def _from_layers(self, handle: str, workdir: Path) -> bool:
        """Its outputs, copied from its layer if that alone can say what they are."""
        layers = self._layers.get(handle)
        if layers is None:
            return False
        target, limit = workdir / OUTPUTS_DIR, self.options.notebook_outputs_limit
        try:
            docker_layer.copy_outputs(layers, SESSION_DIR / OUTPUTS_DIR, target, limit=limit)
        except docker_layer.Unsure as why:
            log.debug("container %s: outputs through the engine (%s)", handle[:12], why)
            return False
        return True

    def collect(self, handle: str, path: str, target: Path, *, limit: int) -> None:
        """Copy the file or directory ``path`` of an ended task's container to ``target``
        on the broker's host: regular files and directories only, at most ``limit`` bytes
        (PlatformError saying which is wrong otherwise)."""
        with engine_errors("copying an output out of the container"):
            try:
                container = self.engine.client.containers.get(handle)
            except docker.errors.NotFound:
                raise PlatformError(f"the task's container is gone: no {path}") from None
            engine_.copy_tree_out(container, path, target, limit=limit)

    def _keep_logs(self, container: Container) -> None:
        try:
            stdout, stderr = engine_.read_logs(container)
        except docker.errors.DockerException:
            return
        self.logs_dir.mkdir(parents=True, exist_ok=True)
        (self.logs_dir / f"{container.id}.stdout").write_text(stdout)
        (self.logs_dir / f"{container.id}.stderr").write_text(stderr)

    def _remove_network(self, name: str) -> None:
        remove_network(self.engine, name)

    def _sweep(self) -> None:
        for container in self.engine.expired(broker=self.broker, platform=self.name):
            log.warning("removing container %s: past its session's deadline", container.name)
            with contextlib.suppress(PlatformError):
                self.release(container.id)


def _port_plans(executable: DockerContainer) -> list[PortPlan]:
    ports = executable.network.ports if executable.network else []
    plans = {}
    for port in ports:
        if port.access:
            plan = PortPlan(
                port.internal.port, _TRANSPORT[port.protocol], port.protocol, port.path or "/"
            )
            plans.setdefault(plan.key, plan)
    return list(plans.values())


def _under(top: PurePosixPath, path: str) -> bool:
    """Is ``path`` ``top``, in it, or above it?"""
    other = PurePosixPath(path)
    return other == top or top in other.parents or other in top.parents


def _session_environment(spec: LaunchSpec) -> dict[str, str]:
    return {
        "EXECBROKER_SESSION": spec.session_id,
        "EXECBROKER_CORES": str(spec.resources.cores),
        "EXECBROKER_MEMORY_GIB": str(spec.resources.memory_gib),
        "EXECBROKER_OUTPUTS": str(SESSION_DIR / OUTPUTS_DIR),
    }


def create(options: dict[str, Any], *, broker: Any) -> DockerPlatform:
    return DockerPlatform(
        DockerOptions.model_validate(options), broker=broker.name, state_dir=broker.state_path
    )
