"""Hearing at once that a process has ended, by its pidfd, for any number of processes on
one thread (Linux 5.3 or later; elsewhere nothing is heard and the monitor's passes remain).

A pidfd names one process for as long as it is open, so a pid checked after its pidfd is
opened cannot have been reused by another process meanwhile."""

from __future__ import annotations

import contextlib
import logging
import os
import select
import threading
from collections.abc import Callable

log = logging.getLogger(__name__)


class ExitWatcher:
    """Calls ``notify(key)`` when a watched process ends."""

    def __init__(self, notify: Callable[[str], None]) -> None:
        self.notify = notify
        self._epoll = select.epoll()
        self._keys: dict[int, str] = {}  # pidfd -> key
        self._lock = threading.Lock()
        self._stop_read, self._stop_write = os.pipe()
        self._epoll.register(self._stop_read, select.EPOLLIN)
        self._thread = threading.Thread(target=self._run, name="process-exits", daemon=True)
        self._thread.start()

    def watching(self, key: str) -> bool:
        with self._lock:
            return key in self._keys.values()

    def add(self, pid: int, key: str, check: Callable[[], bool] | None = None) -> bool:
        """Watch ``pid`` under ``key``; ``check`` (called once its pidfd is open, so the pid
        is pinned) says it is still the process meant. False if it is not (or is gone:
        then ``notify`` is called at once)."""
        try:
            pidfd = os.pidfd_open(pid)
        except ProcessLookupError:
            self.notify(key)
            return False
        except (OSError, AttributeError):  # no pidfds here: the passes will do
            return False
        if check is not None and not check():
            os.close(pidfd)
            return False
        with self._lock:
            self._keys[pidfd] = key
        self._epoll.register(pidfd, select.EPOLLIN | select.EPOLLONESHOT)
        return True

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.write(self._stop_write, b"x")
        self._thread.join(timeout=2)

    def _run(self) -> None:
        try:
            while True:
                for fd, _ in self._epoll.poll():
                    if fd == self._stop_read:
                        return
                    with self._lock:
                        key = self._keys.pop(fd, None)
                    with contextlib.suppress(OSError):
                        self._epoll.unregister(fd)
                    os.close(fd)
                    if key is not None:
                        try:
                            self.notify(key)
                        except Exception:
                            log.exception("telling of the end of %s", key)
        finally:
            with self._lock:
                fds, self._keys = list(self._keys), {}
            for fd in fds:
                os.close(fd)
            self._epoll.close()
            os.close(self._stop_read)
            os.close(self._stop_write)
