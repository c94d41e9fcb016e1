"""What the ``docker`` and ``compose`` backends share about talking to one Docker Engine.

Options common to both, the labels that tie a container to its broker and session, local
image lookup and pulls, the endpoints a container's published ports make, whether those
endpoints answer yet, and the one table that maps a container's state onto a RunState.
Everything here reads from the engine (never from memory only), so a restarted broker
sees exactly what a running one does. Files go into a container and come back out through
the engine's archive API (``put_files``, ``read_file``, ``copy_out``), never a host mount:
what comes out is the task's, so it is read under a byte limit and only plain files with
plain names are kept.
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
import logging
import os
import re
import shutil
import socket
import tarfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path, PurePosixPath
from typing import IO, Any, Literal

import docker
import docker.errors
import httpx
import requests
from docker.models.containers import Container
from docker.models.images import Image
from pydantic import BaseModel, ConfigDict, Field

from execbroker.model.executables import DockerImageSpec
from execbroker.platforms.base import Endpoint, PlatformError, RunState, RunStatus
from execbroker.platforms.container_policy import Allow

log = logging.getLogger(__name__)

LABEL_BROKER = "execbroker.broker"
LABEL_SESSION = "execbroker.session"
LABEL_OWNER = "execbroker.owner"
LABEL_PLATFORM = "execbroker.platform"
LABEL_DEADLINE = "execbroker.deadline"  # epoch seconds: the sweep's safety net
LABEL_PORTS = "execbroker.ports"  # JSON: which published port is which protocol
LABEL_NOTEBOOK = "execbroker.notebook"  # batch | interactive: a notebook task's container
# JSON, port -> host port: where the holder whose network namespace a container joined
# publishes that container's ports (the engine lists them under the holder only)
LABEL_PUBLISHED = "execbroker.published"
SWEEP_EVERY = 30.0  # seconds between safety-net sweeps
SWEEP_AFTER = 60  # seconds past its deadline before a sweep ends a container
GIB = 1024**3
LOG_TAIL_CHARS = 1_000_000
MESSAGE_TAIL_LINES = 8
MESSAGE_TAIL_CHARS = 600
# Storage drivers that can hold a container's writable layer to a size (overlay2 only on xfs).
_SIZE_LIMITING_DRIVERS = {"btrfs", "zfs", "devicemapper", "windowsfilter"}


class EngineOptions(BaseModel):
    """Options of a Docker Engine backend in a broker config (``platforms: [{type: docker}]``)."""

    model_config = ConfigDict(extra="forbid")

    docker_host: str | None = Field(
        default=None, description="engine URL; default: DOCKER_HOST or the local socket"
    )
    pull: Literal["never", "missing"] = "missing"
    publish_host: str = Field(default="127.0.0.1", description="host address ports publish on")
    endpoint_host: str | None = Field(
        default=None, description="host name in connector URLs; default: publish_host"
    )
    pids_limit: int = Field(default=1024, ge=16)
    stop_timeout: int = Field(default=2, ge=0, description="seconds between SIGTERM and SIGKILL")
    init: bool = Field(default=True, description="run an init (tini) as PID 1 so SIGTERM works")
    probe_grace: float = Field(
        default=30, ge=0, description="seconds an HTTP port may stay silent before AVAILABLE"
    )
    allow: Allow = Allow()

    def url_host(self) -> str:
        host = self.endpoint_host or self.publish_host
        if host in ("0.0.0.0", "::"):
            host = socket.getfqdn()
        return f"[{host}]" if ":" in host else host


@contextlib.contextmanager
def engine_errors(doing: str) -> Iterator[None]:
    """Turn what the engine (or the connection to it) raises into a PlatformError."""
    try:
        yield
    except docker.errors.DockerException as error:
        raise PlatformError(f"{doing}: {ok_or_reason(error)}") from None
    except requests.exceptions.RequestException as error:
        raise PlatformError(f"{doing}: the Docker engine did not answer ({error})") from None


def ok_or_reason(error: Exception) -> str:
    """A Docker error as a sentence for the session's owner."""
    if isinstance(error, docker.errors.APIError):
        return str(error.explanation or error)
    return str(error) or type(error).__name__


class Engine:
    """One connection to a Docker Engine, opened on first use (a broker starts without it)."""

    def __init__(self, options: EngineOptions) -> None:
        self.options = options
        self._client: docker.DockerClient | None = None
        self._lock = threading.Lock()
        self._info: dict[str, Any] | None = None
        self._last_sweep = 0.0

    @property
    def client(self) -> docker.DockerClient:
        with self._lock:
            if self._client is None:
                try:
                    if self.options.docker_host:
                        self._client = docker.DockerClient(base_url=self.options.docker_host)
                    else:
                        self._client = docker.from_env()
                except docker.errors.DockerException as error:
                    raise PlatformError(f"the Docker engine is not reachable: {error}") from error
            return self._client

    def info(self) -> dict[str, Any]:
        if self._info is None:
            self._info = self.client.info()
        return self._info

    def expired(self, *, broker: str, platform: str) -> list[Container]:
        """The deadline's safety net: ``platform``'s containers of ``broker`` well past their
        session's deadline, at most once per SWEEP_EVERY (the monitor stops tasks at their
        deadline; this catches what a crash between a cancel and its stop left running)."""
        now = time.time()
        with self._lock:
            if now - self._last_sweep < SWEEP_EVERY:
                return []
            self._last_sweep = now
        labels = [f"{LABEL_BROKER}={broker}", f"{LABEL_PLATFORM}={platform}"]
        try:
            found = self.client.containers.list(
                all=True, filters={"label": labels}, ignore_removed=True
            )
        except (docker.errors.DockerException, requests.exceptions.RequestException):
            return []
        return [
            container
            for container in found
            if 0 < int(container.labels.get(LABEL_DEADLINE) or 0) < now - SWEEP_AFTER
        ]

    def host_cpus(self) -> int:
        return int(self.info().get("NCPU") or 1)

    def storage_limits(self) -> bool:
        """Can this engine's storage driver hold a container's writable layer to a size?"""
        info = self.info()
        driver = info.get("Driver", "")
        backing = dict(info.get("DriverStatus") or []).get("Backing Filesystem", "")
        return driver in _SIZE_LIMITING_DRIVERS or (driver == "overlay2" and backing == "xfs")

    def storage_note(self) -> str:
        info = self.info()
        backing = dict(info.get("DriverStatus") or []).get("Backing Filesystem", "?")
        return (
            f"storage limits are not enforced: the storage driver {info.get('Driver')} on "
            f"{backing} cannot limit a container's size (needs xfs with pquota, btrfs or zfs)"
        )

    # -- images -------------------------------------------------------------------------

    def local_image(self, reference: str, digest: str | None = None) -> Image | None:
        """The image on this host for ``reference`` (and ``digest``, if given), or None."""
        try:
            image = self.client.images.get(f"{reference}@{digest}" if digest else reference)
        except docker.errors.ImageNotFound:
            if digest is None:
                return None
            try:  # a locally built image has no repo digest: its id is its digest
                image = self.client.images.get(reference)
            except docker.errors.ImageNotFound:
                return None
            return image if image.id == digest else None
        except docker.errors.APIError as error:
            if error.status_code in (400, 404):
                return None
            raise PlatformError(f"the Docker engine failed: {ok_or_reason(error)}") from error
        return image

    def pull(self, reference: str, digest: str | None = None) -> Image:
        target = f"{reference}@{digest}" if digest else reference
        try:
            return self.client.images.pull(target)
        except docker.errors.DockerException as error:
            raise PlatformError(f"could not pull {target}: {ok_or_reason(error)}") from error


def image_references(spec: DockerImageSpec) -> list[str]:
    """The image's locations as engine references (``docker://`` prefixes dropped)."""
    return [location.removeprefix("docker://") for location in spec.locations if location]


def find_image(engine: Engine, spec: DockerImageSpec) -> Image | None:
    for reference in image_references(spec):
        image = engine.local_image(reference, spec.digest)
        if image is not None:
            return image
    return None


def image_reason(engine: Engine, spec: DockerImageSpec, *, pull: str) -> str | None:
    """Why this image cannot be had here (only asks what is local: quick enough for offers)."""
    image = find_image(engine, spec)
    if image is None:
        if pull == "never":
            names = ", ".join(image_references(spec))
            return f"executable.image: {names} is not on this host and this platform does not pull"
        return None
    wanted = spec.platform
    if wanted is not None:
        have = (image.attrs.get("Os", "linux"), image.attrs.get("Architecture", "amd64"))
        if (wanted.os, wanted.architecture) != have:
            return (
                f"executable.image.platform: the image here is {have[0]}/{have[1]}, "
                f"not {wanted.os}/{wanted.architecture}"
            )
    return None


def obtain_image(engine: Engine, spec: DockerImageSpec, *, pull: str) -> Image:
    """The local image, pulled first if allowed and needed (only ever from ``start``)."""
    image = find_image(engine, spec)
    if image is not None:
        return image
    references = image_references(spec)
    if pull == "never" or not references:
        raise PlatformError(f"image {', '.join(references) or '?'} is not on this host")
    errors = []
    for reference in references:
        try:
            return engine.pull(reference, spec.digest)
        except PlatformError as error:
            errors.append(str(error))
    raise PlatformError("; ".join(errors))


# -- creating -------------------------------------------------------------------------

# ``containers.create`` keywords that describe the container itself; all others but
# ``ports``, ``volumes`` and ``network`` are its host config's.
_CONFIG_KEYS = frozenset(
    {"image", "command", "entrypoint", "environment", "name", "labels", "working_dir", "detach"}
)


def create_container(api: docker.APIClient, arguments: dict[str, Any]) -> str:
    """Create a container from ``containers.create``'s keywords (``ports`` as
    ``{"8080/tcp": (host, None)}``, ``volumes`` as ``{name: {"bind": path, "mode": m}}``,
    ``network`` by name) through the engine's low-level API, without asking the engine to
    describe it back as ``containers.create`` does (one round trip fewer); its id."""
    host = dict(arguments)
    config = {key: host.pop(key) for key in _CONFIG_KEYS & host.keys()}
    ports: dict[str, Any] = host.pop("ports", None) or {}
    volumes: dict[str, dict[str, str]] = host.pop("volumes", None) or {}
    network: str | None = host.pop("network", None)
    if network:
        host["network_mode"] = network
    made = api.create_container(
        **config,
        ports=[tuple(key.split("/", 1)) for key in sorted(ports)] or None,
        volumes=[volume["bind"] for volume in volumes.values()] or None,
        host_config=api.create_host_config(
            **host, port_bindings=ports or None, binds=volumes or None
        ),
        networking_config=(
            api.create_networking_config({network: api.create_endpoint_config()})
            if network
            else None
        ),
    )
    return str(made["Id"])


# -- labels and ports -------------------------------------------------------------------


def labels(*, broker: str, session: str, owner: str, platform: str, deadline: datetime) -> dict:
    return {
        LABEL_BROKER: broker,
        LABEL_SESSION: session,
        LABEL_OWNER: owner,
        LABEL_PLATFORM: platform,
        LABEL_DEADLINE: str(int(deadline.timestamp())),
    }


@dataclass(frozen=True, slots=True)
class PortPlan:
    """One port to publish: the container's ``port/transport`` and what speaks on it."""

    port: int
    transport: str  # tcp | udp
    protocol: str  # HTTP | HTTPS | TCP | UDP
    path: str = "/"

    @property
    def key(self) -> str:
        return f"{self.port}/{self.transport}"


def ports_label(ports: Iterable[PortPlan]) -> str:
    return json.dumps(
        [
            {"port": p.port, "transport": p.transport, "protocol": p.protocol, "path": p.path}
            for p in ports
        ]
    )


def planned_ports(container: Container) -> list[PortPlan]:
    try:
        items = json.loads(container.labels.get(LABEL_PORTS) or "[]")
        return [PortPlan(int(i["port"]), i["transport"], i["protocol"], i["path"]) for i in items]
    except (ValueError, KeyError, TypeError):
        return []


_SCHEMES = {"HTTP": "http", "HTTPS": "https", "TCP": "tcp", "UDP": "udp"}
_WEB = {"HTTP", "HTTPS"}


def host_ports(container: Container) -> dict[str, str]:
    """Port (``8080/tcp``) -> the host port it is published on, for a running container."""
    held = container.labels.get(LABEL_PUBLISHED)
    if held:  # published by the holder whose namespace it joined
        try:
            return {str(key): str(port) for key, port in json.loads(held).items()}
        except (ValueError, AttributeError):
            return {}
    published = container.attrs.get("NetworkSettings", {}).get("Ports") or {}
    found = {key: (bindings or [{}])[0].get("HostPort") for key, bindings in published.items()}
    return {key: str(port) for key, port in found.items() if port}


def endpoints(container: Container, host: str) -> list[Endpoint]:
    """The connectors of a running container: one per published port the broker planned."""
    published = host_ports(container)
    found = []
    for port in planned_ports(container):
        if port.key not in published:
            continue
        address = f"{_SCHEMES[port.protocol]}://{host}:{published[port.key]}"
        if port.protocol in _WEB:
            address += port.path if port.path.startswith("/") else f"/{port.path}"
        found.append(Endpoint(port.protocol, address))
    return found


def published_port(container: Container, key: str) -> int | None:
    """The host port that ``key`` (``8888/tcp``) of a running container is published on."""
    port = host_ports(container).get(key)
    return int(port) if port else None


def answers(endpoint: Endpoint) -> bool:
    """Does an HTTP(S) endpoint answer at all (any status)? Other protocols are taken as up:
    docker's port proxy accepts a TCP connection before the task listens, so a connect proves
    nothing."""
    if endpoint.protocol not in _WEB:
        return True
    try:
        httpx.get(endpoint.location, timeout=0.5, verify=False)
    except httpx.HTTPError:
        return False
    return True


# -- state ----------------------------------------------------------------------------

# Docker's container states → ours; "exited" depends on the exit code (see ``container_state``).
_STATE_OF_STATUS = {
    "created": RunState.PREPARING,
    "running": RunState.RUNNING,
    "restarting": RunState.RUNNING,
    "paused": RunState.RUNNING,
    "removing": RunState.FAILED,
    "dead": RunState.FAILED,
}
_EXIT_STATES = {True: RunState.COMPLETED, False: RunState.FAILED}


def container_state(container: Container) -> RunStatus:
    """One container's state, without endpoints; a finished one says how, with its last lines."""
    state = container.attrs.get("State", {})
    status = state.get("Status", "dead")
    if status != "exited":
        found = _STATE_OF_STATUS.get(status, RunState.FAILED)
        message = None if found != RunState.FAILED else f"the container is {status}"
        return RunStatus(found, message)
    code = int(state.get("ExitCode", -1))
    if code == 0:
        return RunStatus(RunState.COMPLETED, "completed", 0)
    if state.get("OOMKilled"):
        how = "killed: it ran out of the granted memory"
    elif code == 137:
        how = "killed (SIGKILL, exit code 137)"
    else:
        how = f"exited with code {code}"
    tail = last_lines(container)
    return RunStatus(_EXIT_STATES[False], f"{how}; last output: {tail}" if tail else how, code)


def last_lines(container: Container) -> str:
    try:
        text = container.logs(stdout=True, stderr=True, tail=MESSAGE_TAIL_LINES)
    except docker.errors.DockerException:
        return ""
    return text.decode(errors="replace").strip()[-MESSAGE_TAIL_CHARS:]


def read_logs(container: Container) -> tuple[str, str]:
    def one(**which: bool) -> str:
        data = container.logs(**which, tail=20_000)
        return data.decode(errors="replace")[-LOG_TAIL_CHARS:]

    return one(stdout=True, stderr=False), one(stdout=False, stderr=True)


def age(started: str) -> float:
    """Seconds since docker's ``StartedAt`` (RFC 3339 with nanoseconds); 0 if unreadable."""
    try:
        instant = datetime.fromisoformat(started[:26].rstrip("Z") + "+00:00")
    except ValueError:
        return 0.0
    return max(0.0, time.time() - instant.timestamp())


def read_text(path: Path) -> str:
    try:
        return path.read_text()
    except FileNotFoundError:
        return ""


# -- files in and out of a container ----------------------------------------------------

FILE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,254}$")  # as ``outputs`` serves them
COPY_CHUNK = 64 * 1024
# An empty directory placed with this mtime (the epoch) and found with it still has nothing
# in it: making, removing or renaming an entry sets a directory's mtime to the present.
UNTOUCHED_MTIME = 0
PUT_ROOT_MODE = 0o755  # the directory ``put_files`` places files under
_GO_DIR, _GO_SYMLINK = 1 << 31, 1 << 27  # Go's os.FileMode bits, as the stat has them
_RFC3339 = re.compile(r"^(?P<seconds>[0-9T:-]+)(?P<fraction>\.[0-9]+)?(?P<zone>Z|[+-][0-9:]+)$")


# A tar member: its name, its content (None for a directory), its mode and its mtime.
TarMember = tuple[str, bytes | None, int, float]


def tar_of(members: Iterable[TarMember]) -> bytes:
    """A tar of ``members``, each owned by root: what ``put_archive`` and a build take."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for name, content, mode, mtime in members:
            info = tarfile.TarInfo(name)
            info.mode, info.mtime = mode, mtime
            if content is None:
                info.type = tarfile.DIRTYPE
                archive.addfile(info)
            else:
                info.size = len(content)
                archive.addfile(info, io.BytesIO(content))
    return buffer.getvalue()


def put_files(
    container: Container,
    root: str,
    files: dict[str, tuple[bytes, int]],
    directories: dict[str, int],
    *,
    untouched: frozenset[str] = frozenset(),
) -> None:
    """Place ``files`` (path → content and mode) and ``directories`` (path → mode) under the
    absolute directory ``root`` of a container, owned by root, created or running alike.
    The ``untouched`` directories (empty ones) get UNTOUCHED_MTIME, so ``is_untouched`` can
    tell later that nothing was made in them."""
    now = time.time()
    top = root.strip("/")
    members: list[TarMember] = [
        (f"{top}/{path}".rstrip("/"), None, mode, UNTOUCHED_MTIME if path in untouched else now)
        for path, mode in {"": PUT_ROOT_MODE, **directories}.items()
    ]
    members += [(f"{top}/{path}", content, mode, now) for path, (content, mode) in files.items()]
    if not container.put_archive("/", tar_of(members)):
        raise PlatformError(f"could not copy the task's files into {container.name}")


class TooLarge(Exception):
    """More came out of a container than the broker takes."""


class _Limited(io.RawIOBase):
    """The engine's archive stream as a file, ending in ``TooLarge`` past ``limit`` bytes."""

    def __init__(self, chunks: Iterator[bytes], limit: int) -> None:
        self._chunks = chunks
        self._left = b""
        self._remaining = limit

    def readable(self) -> bool:
        return True

    def readinto(self, target: Any) -> int:
        while not self._left:
            chunk = next(self._chunks, None)
            if chunk is None:
                return 0
            self._left = chunk
        size = min(len(target), len(self._left))
        self._remaining -= size
        if self._remaining < 0:
            raise TooLarge
        target[:size] = self._left[:size]
        self._left = self._left[size:]
        return size


def path_stat(api: docker.APIClient, container_id: str, path: str) -> dict[str, Any] | None:
    """What the engine says of ``path`` in a container, running or ended (name, size, mode,
    mtime, linkTarget), or None if it has none. A HEAD on the archive endpoint: no tar is
    made, so no helper process runs (a copy out of an ended container costs the engine
    ~100 ms of that; this ~10 ms)."""
    # docker-py has no call for this HEAD: made as its own calls are, with its helpers
    url = api._url("/containers/{0}/archive", container_id)
    answer = api.head(url, params={"path": path}, timeout=api.timeout)
    if answer.status_code == 404:
        return None
    api._raise_for_status(answer)
    try:
        found = json.loads(base64.b64decode(answer.headers["X-Docker-Container-Path-Stat"]))
    except (KeyError, ValueError):
        return None
    return found if isinstance(found, dict) else None


def is_untouched(stat: dict[str, Any] | None) -> bool:
    """Is this (``path_stat``'s) a directory that ``put_files`` placed as ``untouched`` and
    that nothing was made in since? Only a task that sets the mtime back itself, on purpose,
    is taken for one that left nothing there: it loses only its own outputs."""
    if stat is None:
        return False
    mode, mtime = stat.get("mode"), stat.get("mtime")
    if not isinstance(mode, int) or mode & (_GO_DIR | _GO_SYMLINK) != _GO_DIR:
        return False
    found = _RFC3339.match(str(mtime))  # in the engine's time zone (``Z`` in UTC)
    if found is None or (found["fraction"] or "").strip(".0"):  # (fromisoformat: no ns)
        return False
    try:
        stamp = datetime.fromisoformat(found["seconds"] + found["zone"]).timestamp()
    except ValueError:
        return False
    return stamp == UNTOUCHED_MTIME and not stat.get("linkTarget")


def _archive(container: Container, path: str, limit: int) -> tarfile.TarFile | None:
    try:
        chunks, _ = container.get_archive(path, chunk_size=COPY_CHUNK)
    except docker.errors.NotFound:
        return None
    stream = io.BufferedReader(_Limited(iter(chunks), limit), COPY_CHUNK)
    return tarfile.open(fileobj=stream, mode="r|")


def read_file(container: Container, path: str, *, limit: int = 64 * 1024) -> bytes | None:
    """A regular file of a container (running or exited), None if it has none (or a larger
    one, or something else at ``path``)."""
    try:
        archive = _archive(container, path, limit + 2 * tarfile.RECORDSIZE)
        if archive is None:
            return None
        with archive:
            member = archive.next()
            if member is None or not member.isfile() or member.size > limit:
                return None
            stream = archive.extractfile(member)
            return stream.read() if stream is not None else None
    except (TooLarge, tarfile.TarError):
        return None


def copy_out(container: Container, path: str, target: Path, *, limit: int) -> list[str]:
    """Copy the regular files directly in the container's directory ``path`` into ``target``
    (links, devices, subdirectories and odd names are left behind), at most ``limit`` bytes
    read; returns the names copied. A file cut short by the limit is not kept."""
    target.mkdir(parents=True, exist_ok=True)
    copied: list[str] = []
    archive = _archive(container, path, limit)
    if archive is None:
        return copied
    try:
        with archive:
            for member in archive:
                parts = member.name.split("/")
                if not member.isfile() or len(parts) != 2 or not FILE_NAME.match(parts[1]):
                    continue
                stream = archive.extractfile(member)
                if stream is None:
                    continue
                keep_file(target, parts[1], stream)
                copied.append(parts[1])
    except TooLarge:
        log.warning("%s: only %d bytes of %s are kept", container.name, limit, path)
    except tarfile.TarError as error:
        log.warning("%s: copying %s out failed: %s", container.name, path, error)
    return copied


def keep_file(target: Path, name: str, stream: IO[bytes]) -> None:
    """Write ``stream`` to ``target/name`` (a plain name), whole or not at all: through a
    partial file that is renamed into place, never following a link at ``target``."""
    partial = target / f".{name}.part"
    try:
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW
        with os.fdopen(os.open(partial, flags, 0o644), "wb") as out:
            while chunk := stream.read(COPY_CHUNK):
                out.write(chunk)
        partial.replace(target / name)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise


def copy_tree_out(container: Container, path: str, target: Path, *, limit: int) -> None:
    """Copy the file or directory ``path`` of a container to ``target`` on this host (made
    afresh): regular files and directories only, at most ``limit`` bytes of files. A link,
    a device or an odd name in it is an error, never followed; PlatformError says which."""
    top = PurePosixPath(path).name
    try:
        archive = _archive(container, path, 2 * limit + 16 * 1024**2)  # headers too
    except docker.errors.APIError as error:
        raise PlatformError(f"{path}: {ok_or_reason(error)}") from None
    if archive is None:
        raise PlatformError(f"{path}: no such file or directory in the task")
    if target.is_symlink() or target.is_file():
        target.unlink()
    elif target.exists():
        shutil.rmtree(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    total = 0
    try:
        with archive:
            for member in archive:
                parts = PurePosixPath(member.name).parts
                if not parts or parts[0] != top or any(p in ("..", "/") for p in parts):
                    raise PlatformError(f"{path}: an odd name {member.name[:100]!r} in it")
                place = target.joinpath(*parts[1:])
                if member.isdir():
                    place.mkdir(mode=0o755, parents=True, exist_ok=True)
                    continue
                if not member.isfile():
                    raise PlatformError(
                        f"{path}: {member.name[:100]} is a link or a special file (outputs "
                        "are regular files and directories)"
                    )
                total += member.size
                if total > limit:
                    raise PlatformError(f"{path}: larger than {limit} bytes")
                stream = archive.extractfile(member)
                place.parent.mkdir(parents=True, exist_ok=True)
                flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                with os.fdopen(os.open(place, flags, 0o644), "wb") as out:
                    while stream is not None and (chunk := stream.read(COPY_CHUNK)):
                        out.write(chunk)
    except TooLarge:
        raise PlatformError(f"{path}: larger than {limit} bytes") from None
    except tarfile.TarError as error:
        raise PlatformError(f"{path}: could not be copied out: {error}") from None


# -- events -----------------------------------------------------------------------------

# What may change a container's status (``destroy``: removed by someone else).
EVENTS = ["start", "die", "oom", "health_status", "destroy"]
COMPLETED_KEPT = 10_000
KNOWN_FOR = 5.0  # seconds a container's status is kept from the engine's last answer


@dataclass(frozen=True, slots=True)
class Known:
    """A container's status as the engine last told it, with the event stream's ``token``
    from before it asked: good while the token is the same (nothing changed since) and
    for at most KNOWN_FOR seconds (an event the engine dropped is found by asking)."""

    status: RunStatus
    token: tuple[int, int]
    at: float

    def holds(self, token: tuple[int, int] | None) -> bool:
        return token == self.token and time.monotonic() - self.at < KNOWN_FOR


class EventFollower:
    """The engine's event stream for one broker's containers on one platform, on a thread
    of its own (with a connection of its own): each event that may change a container's
    status is passed on as its session id. A dropped stream is opened again; what happened
    meanwhile is the monitor's passes' to notice.

    A container (not a notebook's) that exits with code 0 is remembered as ``completed``,
    with its session id (the event carries its labels): inspecting it just after it ends
    waits for the engine to tear its network down (~0.1 s), and for exit code 0 there is
    nothing more to learn there.

    ``token`` says where the stream stands for one container, so what was learned of it by
    asking the engine can be kept until the engine tells of a change (see ``Known``): two
    equal tokens mean the stream stayed open in between and brought nothing about it."""

    def __init__(self, engine: Engine, *, broker: str, platform: str) -> None:
        self.engine = engine
        self.filters = {
            "type": "container",
            "event": EVENTS,
            "label": [f"{LABEL_BROKER}={broker}", f"{LABEL_PLATFORM}={platform}"],
        }
        self._stopping = threading.Event()
        self._stream: Any = None
        # ids of containers that exited with code 0 -> their session ids
        self.completed: dict[str, str] = {}
        self._lock = threading.Lock()
        self._open = False
        self._epoch = 0  # moved on whenever the stream opens or ends: tokens then differ
        self._heard = 0  # events so far
        self._last: dict[str, tuple[int, str]] = {}  # container id -> (event number, action)

    def token(self, container_id: str) -> tuple[int, int] | None:
        """Where the stream stands for one container; None while it is not open."""
        with self._lock:
            if not self._open:
                return None
            return self._epoch, self._last.get(container_id, (0, ""))[0]

    def last_action(self, container_id: str) -> str | None:
        """The last event the stream brought about one container (``start``, ``die``...)."""
        with self._lock:
            return self._last.get(container_id, (0, None))[1]

    def forget(self, container_id: str) -> None:
        with self._lock:
            self._last.pop(container_id, None)
        self.completed.pop(container_id, None)

    def _opened(self, now_open: bool) -> None:
        with self._lock:
            self._open = now_open
            self._epoch += 1

    def _heard_of(self, container_id: str, action: str) -> None:
        with self._lock:
            if len(self._last) >= COMPLETED_KEPT:  # others' (replicas'): forget all, and
                self._last.clear()  # every token taken so far with them
                self._epoch += 1
            self._heard += 1
            self._last[container_id] = (self._heard, action)

    def start(self, notify: Callable[[str], None]) -> None:
        thread = threading.Thread(
            target=self._follow, args=(notify,), name="docker-events", daemon=True
        )
        thread.start()

    def stop(self) -> None:
        self._stopping.set()
        stream = self._stream
        if stream is not None:
            with contextlib.suppress(Exception):
                stream.close()

    def _follow(self, notify: Callable[[str], None]) -> None:
        while not self._stopping.is_set():
            try:
                client = self._client()
                self._stream = client.api.events(decode=True, filters=self.filters)
                self._opened(True)  # (the engine answers once it has subscribed us)
                for event in self._stream:
                    self._heard_of(str(event.get("id")), str(event.get("Action")))
                    attributes = (event.get("Actor") or {}).get("Attributes") or {}
                    session = attributes.get(LABEL_SESSION)
                    clean = attributes.get("exitCode") == "0" and LABEL_NOTEBOOK not in attributes
                    if event.get("Action") == "die" and clean and session:
                        if len(self.completed) >= COMPLETED_KEPT:  # others' (replicas'), never
                            self.completed.clear()  # released here: forget (only speed is lost)
                        self.completed[str(event.get("id"))] = str(session)
                    if session:
                        notify(session)
            except Exception as error:  # the engine went away, a timeout: open it again
                if not self._stopping.is_set():
                    log.debug("docker event stream ended (%s); opening it again", error)
            self._opened(False)
            self._stopping.wait(1.0)

    def _client(self) -> docker.DockerClient:
        # No read timeout: the stream is quiet for as long as nothing happens.
        if self.engine.options.docker_host:
            return docker.DockerClient(base_url=self.engine.options.docker_host, timeout=None)
        return docker.from_env(timeout=None)
