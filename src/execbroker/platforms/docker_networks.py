"""Per-session bridge networks, made ahead of the sessions that get them.

Making a bridge network costs the engine ~0.2 s (a bridge, its iptables rules), as much as
starting the container itself. So each broker process keeps ``spares`` networks made
ahead, in the background, and hands each to exactly one session, which removes it with its
container: the isolation is the same as a network made at start (no two sessions ever share
one, and none is used twice). A shared network, or one reused after its session, would be
cheaper still and is not done: one user's container could then reach another's.

Joining a container to a network costs the engine about as much again (its end of the
bridge, the embedded DNS's rules in its namespace). So a spare comes with a *holder*: a
tiny container of the broker's (``holder_image``, running ``sleep``, with no capabilities,
a read-only root and a few pids) already on the network, whose network namespace a session
joins (``network_mode: container:<holder>``). That session's container then starts as fast
as one with no network at all, and is still alone with its own holder on a network of its
own. Each holder goes with its session (removed before its network); a broker without the
holder image makes networks only.

Published ports belong to whoever owns the namespace, and are fixed when it starts: a
session that publishes ports joins only a holder that publishes exactly those (its
``ports``, at random host ports on ``publish_host``). The pool learns which sets of ports
sessions publish again and again (the last ``port_spares`` sets published twice lately)
and keeps one such spare ready for each; a session whose set has none ready gets a plain
spare's network itself, next to its holder, and publishes its ports from its own
namespace. Until its session joins, a holder's port leads nowhere (nothing listens in that
namespace), and it closes with its holder.

A spare belongs to the process that made it (its ``LABEL_SPARE`` names the host and pid), so
replicas on one engine never hand out each other's. Spares left by a process that died on
this host are removed when the next one starts filling its own; spares are made only once
a session has been started (a broker that starts none makes none), and removed on close.
Networks come from the engine's limited address pools, so the defaults are one plain spare
and one with ports.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import docker.errors
from docker.models.containers import Container

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
LABEL_HOLDER = "execbroker.holder"  # on a container: the holder whose network it joined
HOLD_COMMAND = ["sleep", "2147483647"]
SEEN_KEPT = 16  # sets of ports remembered as published once


@dataclass(frozen=True, slots=True)
class Spare:
    """A network made ahead for one session, its holder container (or None), the ports
    the holder publishes (``8080/tcp``, sorted) and the host port each is published on."""

    network: str
    holder: str | None = None
    ports: tuple[str, ...] = ()
    published: dict[str, str] = field(default_factory=dict)


class NetworkPool:
    def __init__(
        self,
        engine: Engine,
        *,
        broker: str,
        platform: str,
        spares: int,
        holder_image: str | None = None,
        port_spares: int = 0,
        publish_host: str = "127.0.0.1",
    ) -> None:
        self.engine = engine
        self.broker = broker
        self.platform = platform
        self.spares = spares
        self.holder_image = holder_image
        self.port_spares = port_spares
        self.publish_host = publish_host
        self.maker = f"{socket.gethostname()}:{os.getpid()}"
        self._ready: list[Spare] = []
        self._port_sets: list[tuple[str, ...]] = []  # those sessions published last, newest first
        self._seen: list[tuple[str, ...]] = []  # sets published once lately: spares if again
        self._ported_last = False  # the last session published ports: its kind is made first
        self._lock = threading.Lock()
        self._filling = False
        self._filler: threading.Thread | None = None
        self._closed = False
        self._swept = False

    def take(self, make: Callable[[], str], ports: Iterable[str] = ()) -> Spare:
        """A network of the session's own: a spare if one is ready, else one ``make``s now
        (without a holder). The spare's holder publishes exactly the session's ``ports``
        when one that does is ready; else it publishes none (and the session, if it has
        ports, must not join its namespace). Call ``refill`` once the session's container
        has started: the engine makes one network at a time, and a spare being made would
        slow the start it is for."""
        wanted = tuple(sorted(set(ports)))
        with self._lock:
            self._ported_last = bool(wanted)
            if wanted and self.port_spares and self.holder_image is not None:
                self._learn(wanted)
            spare = self._pop(wanted) or self._pop(())
        return spare if spare is not None else Spare(make())

    def _learn(self, ports: tuple[str, ...]) -> None:
        """A session publishes ``ports``: from the second time lately, keep a spare for them,
        in place of the set least lately used (a set published once, as by a one-off
        session, is not worth a network and a holder)."""
        if ports in self._port_sets:
            self._port_sets.remove(ports)
        elif ports in self._seen:
            self._seen.remove(ports)
        else:
            self._seen = [ports, *self._seen[: SEEN_KEPT - 1]]
            return
        self._port_sets.insert(0, ports)
        del self._port_sets[self.port_spares :]

    def _pop(self, ports: tuple[str, ...]) -> Spare | None:
        for index, spare in enumerate(self._ready):
            if spare.ports == ports:
                return self._ready.pop(index)
        return None

    def _wanted(self) -> tuple[str, ...] | None:
        """The ports of the next spare to make (``()``: a plain one), or None: all ready;
        of the kind the last session took first, as the next is likely to be alike."""
        plain = () if sum(1 for s in self._ready if not s.ports) < self.spares else None
        ready = {spare.ports for spare in self._ready}
        ported = next((ports for ports in self._port_sets if ports not in ready), None)
        if self.holder_image is None:  # no holder to publish them (its image is gone)
            ported = None
        first, then = (ported, plain) if self._ported_last else (plain, ported)
        return first if first is not None else then

    def close(self) -> None:
        """Make no more spares, and remove those not handed out (the one being made too)."""
        with self._lock:
            self._closed = True
            filler = self._filler
        if filler is not None:
            filler.join(timeout=60)
        with self._lock:
            spares, self._ready = self._ready, []
        for spare in spares:
            discard(self.engine, spare)

    def refill(self) -> None:
        with self._lock:
            if self._filling or self._closed or self._wanted() is None:
                return
            self._filling = True
            self._filler = threading.Thread(
                target=self._fill, name="docker-spare-networks", daemon=True
            )
            self._filler.start()

    def _fill(self) -> None:
        try:
            if not self._swept:
                self._sweep_dead()
                self._swept = True
            while True:
                with self._lock:
                    stale = [s for s in self._ready if s.ports and s.ports not in self._port_sets]
                    self._ready = [s for s in self._ready if s not in stale]
                    ports = None if self._closed else self._wanted()
                for spare in stale:  # ports no session has asked for lately
                    discard(self.engine, spare)
                if ports is None:
                    return
                spare = self._make(ports)
                with self._lock:
                    if not self._closed:
                        self._ready.append(spare)
                        continue
                discard(self.engine, spare)  # closed while it was being made
                return
        except (PlatformError, docker.errors.DockerException) as error:
            log.warning("docker platform: no spare network made: %s", error)
        finally:
            with self._lock:
                self._filling = False

    def _make(self, ports: tuple[str, ...]) -> Spare:
        name = f"execbroker-{self.broker}-net-{uuid.uuid4().hex[:16]}"
        labels = {LABEL_BROKER: self.broker, LABEL_PLATFORM: self.platform, LABEL_SPARE: self.maker}
        try:
            self.engine.client.networks.create(name, driver="bridge", labels=labels)
        except docker.errors.APIError as error:
            raise PlatformError(f"could not make a network: {ok_or_reason(error)}") from None
        image = self.holder_image
        if image is not None and self.engine.local_image(image) is None:
            log.warning("docker platform: no holder image %s here: spare networks only", image)
            image = self.holder_image = None
        if image is None:
            return Spare(name)
        try:
            holder = self.engine.client.containers.run(
                image,
                HOLD_COMMAND,
                name=f"{name}-holder",
                detach=True,
                network=name,
                ports={key: (self.publish_host, None) for key in ports},
                labels=labels,
                cap_drop=["ALL"],
                security_opt=["no-new-privileges"],
                read_only=True,
                pids_limit=16,
                mem_limit=32 * 1024**2,
                nano_cpus=100_000_000,
                log_config={"type": "none"},
            )
            published = _host_ports(holder, ports)
        except (docker.errors.DockerException, PlatformError) as error:
            remove_holder(self.engine, f"{name}-holder")
            remove(self.engine, name)
            raise PlatformError(f"could not start a holder: {ok_or_reason(error)}") from None
        return Spare(name, holder.id, ports, published)

    def _sweep_dead(self) -> None:
        """Spares that a process of this broker on this host left when it died."""
        host = socket.gethostname()
        spares = {"label": [f"{LABEL_BROKER}={self.broker}", LABEL_SPARE]}

        def dead(labels: dict[str, str] | None) -> bool:
            maker_host, _, pid = (labels or {}).get(LABEL_SPARE, "").rpartition(":")
            return maker_host == host and pid.isdigit() and not _alive(int(pid))

        client = self.engine.client
        # A spare handed out before that process died is its session's (re-adopted): kept.
        given = {"label": [f"{LABEL_BROKER}={self.broker}", LABEL_NETWORK]}
        used: set[str] = set()
        for container in client.containers.list(all=True, filters=given, ignore_removed=True):
            used |= {container.labels.get(LABEL_HOLDER, ""), container.labels[LABEL_NETWORK]}
        for holder in client.containers.list(all=True, filters=spares, ignore_removed=True):
            if dead(holder.labels) and holder.id not in used:
                log.info("removing spare holder %s: the broker that made it is gone", holder.name)
                remove_holder(self.engine, holder.id)
        for network in client.networks.list(filters=spares):
            if dead(network.attrs.get("Labels")) and network.name not in used:
                log.info("removing spare network %s: the broker that made it is gone", network.name)
                remove(self.engine, network.name)


def _host_ports(holder: Container, ports: tuple[str, ...]) -> dict[str, str]:
    """The host port each of ``ports`` of a started holder is published on."""
    if not ports:
        return {}
    holder.reload()  # (``run`` describes it as created, before its ports were bound)
    bindings = holder.attrs.get("NetworkSettings", {}).get("Ports") or {}
    published = {key: (bindings.get(key) or [{}])[0].get("HostPort") for key in ports}
    missing = sorted(key for key, port in published.items() if not port)
    if missing:
        raise PlatformError(f"the engine published no host port for {', '.join(missing)}")
    return {key: str(port) for key, port in published.items()}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def discard(engine: Engine, spare: Spare) -> None:
    """Remove a spare: its holder, then its network."""
    if spare.holder is not None:
        remove_holder(engine, spare.holder)
    remove(engine, spare.network)


def remove_holder(engine: Engine, holder: str) -> None:
    with contextlib.suppress(docker.errors.NotFound):
        try:
            engine.client.api.remove_container(holder, force=True)
        except docker.errors.APIError as error:
            if error.status_code != 409:  # 409: a removal under way already
                log.warning("could not remove holder %s: %s", holder, ok_or_reason(error))


def remove(engine: Engine, name: str) -> None:
    with contextlib.suppress(docker.errors.NotFound):
        try:
            engine.client.networks.get(name).remove()
        except docker.errors.APIError as error:
            log.warning("could not remove network %s: %s", name, ok_or_reason(error))
