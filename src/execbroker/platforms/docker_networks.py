"""Per-session bridge networks, made ahead of the sessions that get them.

Making a bridge network costs the engine ~0.2 s (a bridge, its iptables rules), as much as
starting the container itself. So each broker process keeps ``spares`` networks made
ahead, in the background, and hands each to exactly one session, which removes it with its
container: the isolation is the same as a network made at start (no two sessions ever share
one, and none is used twice). A shared network, or one reused after its session, would be
cheaper still and is not done: one user's container could then reach another's.

A spare belongs to the process that made it (its ``LABEL_SPARE`` names the host and pid), so
replicas on one engine never hand out each other's. Spares left by a process that died on
this host are removed when the next one starts filling its own; spares are made only once
a session has been started (a broker that starts none makes none), and removed on close.
Networks come from the engine's limited address pools, so the default is one spare.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import uuid
from collections.abc import Callable

import docker.errors

from execbroker.platforms.base import PlatformError
from execbroker.platforms.docker_engine import (
    LABEL_BROKER,
    LABEL_PLATFORM,
    Engine,
    ok_or_reason,
)

log = logging.getLogger(__name__)
LABEL_SPARE = "execbroker.spare"  # host:pid of the process that made a spare network
LABEL_NETWORK = "execbroker.network"  # on a container: the network it was given


class NetworkPool:
    def __init__(self, engine: Engine, *, broker: str, platform: str, spares: int) -> None:
        self.engine = engine
        self.broker = broker
        self.platform = platform
        self.spares = spares
        self.maker = f"{socket.gethostname()}:{os.getpid()}"
        self._ready: list[str] = []
        self._lock = threading.Lock()
        self._filling = False
        self._closed = False
        self._swept = False

    def take(self, make: Callable[[], str]) -> str:
        """A network of the session's own: a spare if one is ready, else one ``make``s now.
        Call ``refill`` once the session's container has started: the engine makes one
        network at a time, and a spare being made would slow the start it is for."""
        with self._lock:
            name = self._ready.pop() if self._ready else None
        return name if name is not None else make()

    def close(self) -> None:
        """Remove the spares not handed out; make no more."""
        with self._lock:
            self._closed = True
            spares, self._ready = self._ready, []
        for name in spares:
            remove(self.engine, name)

    def refill(self) -> None:
        with self._lock:
            if self._filling or self._closed or len(self._ready) >= self.spares:
                return
            self._filling = True
        threading.Thread(target=self._fill, name="docker-spare-networks", daemon=True).start()

    def _fill(self) -> None:
        try:
            if not self._swept:
                self._sweep_dead()
                self._swept = True
            while True:
                with self._lock:
                    if self._closed or len(self._ready) >= self.spares:
                        return
                name = self._make()
                with self._lock:
                    if self._closed:
                        break
                    self._ready.append(name)
                    name = ""
            if name:
                remove(self.engine, name)  # closed while it was being made
        except (PlatformError, docker.errors.DockerException) as error:
            log.warning("docker platform: no spare network made: %s", error)
        finally:
            with self._lock:
                self._filling = False

    def _make(self) -> str:
        name = f"execbroker-{self.broker}-net-{uuid.uuid4().hex[:16]}"
        labels = {LABEL_BROKER: self.broker, LABEL_PLATFORM: self.platform, LABEL_SPARE: self.maker}
        try:
            self.engine.client.networks.create(name, driver="bridge", labels=labels)
        except docker.errors.APIError as error:
            raise PlatformError(f"could not make a network: {ok_or_reason(error)}") from None
        return name

    def _sweep_dead(self) -> None:
        """Spares that a process of this broker on this host left when it died."""
        host = socket.gethostname()
        found = self.engine.client.networks.list(
            filters={"label": [f"{LABEL_BROKER}={self.broker}", LABEL_SPARE]}
        )
        for network in found:
            maker_host, _, pid = (
                (network.attrs.get("Labels") or {}).get(LABEL_SPARE, "").rpartition(":")
            )
            if maker_host == host and pid.isdigit() and not _alive(int(pid)):
                log.info("removing spare network %s: the broker that made it is gone", network.name)
                remove(self.engine, network.name)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove(engine: Engine, name: str) -> None:
    with contextlib.suppress(docker.errors.NotFound):
        try:
            engine.client.networks.get(name).remove()
        except docker.errors.APIError as error:
            log.warning("could not remove network %s: %s", name, ok_or_reason(error))
