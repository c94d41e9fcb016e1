"""Connectors to a pod's ports on the broker's own loopback, through the API's port-forward.

A pod's IP is on the node's container bridge, a private range nothing outside the node
should contact (here: docker's bridge; on a real cluster: the pod network). The API server
reaches the pod for us instead (``pods/portforward``, the same channel ``kubectl
port-forward`` uses): a listener on ``127.0.0.1:<random port>`` of the broker's host opens
one port-forward stream per accepted connection and copies bytes both ways.

Listeners live in the broker's process; after a restart the backend opens new ones (on new
ports) for the pods it re-adopts, and the session's connectors say where they are now.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

_CHUNK = 65536


class Forward:
    """One listener for one pod port; ``close`` stops it and the connections it carries."""

    def __init__(self, host: str, open_stream: Callable[[], Any], port: int) -> None:
        self._open_stream = open_stream
        self._remote_port = port
        self._server = socket.create_server((host, 0))
        self._server.settimeout(0.5)
        self._closed = threading.Event()
        self._sockets: set[Any] = set()
        self._lock = threading.Lock()
        self.port: int = self._server.getsockname()[1]
        threading.Thread(target=self._accept, name=f"k8s-forward-{self.port}", daemon=True).start()

    def close(self) -> None:
        self._closed.set()
        with contextlib.suppress(OSError):
            self._server.close()
        with self._lock:
            for sock in list(self._sockets):
                with contextlib.suppress(OSError):
                    sock.close()
            self._sockets.clear()

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                local, _ = self._server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=self._carry, args=(local,), daemon=True).start()

    def _carry(self, local: socket.socket) -> None:
        try:
            stream = self._open_stream()
            remote = stream.socket(self._remote_port)
        except Exception as error:  # the API refused or the pod went: drop this connection
            log.info("port-forward to port %d failed: %s", self._remote_port, error)
            local.close()
            return
        with self._lock:
            self._sockets.update((local, remote))
        remote.setblocking(True)
        left = threading.Thread(target=_copy, args=(local, remote), daemon=True)
        left.start()
        _copy(remote, local)
        left.join(timeout=5)
        for sock in (local, remote):
            with contextlib.suppress(OSError):
                sock.close()
        with self._lock:
            self._sockets.difference_update((local, remote))
        with contextlib.suppress(Exception):
            stream.close()


def _copy(source: Any, target: Any) -> None:
    """Bytes from ``source`` to ``target`` until either end closes; then half-close ``target``."""
    try:
        while True:
            data = source.recv(_CHUNK)
            if not data:
                break
            target.sendall(data)
    except OSError:
        pass
    with contextlib.suppress(OSError):
        target.shutdown(socket.SHUT_WR)
