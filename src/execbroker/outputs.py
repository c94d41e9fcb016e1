"""A session's outputs: the files its task leaves in ``outputs/`` of its work directory.

The task writes that directory (in a container, as root, through a bind mount), so
nothing in it is trusted: only regular files directly in it are outputs, opened without
following symbolic links at any step (``outputs`` itself may have been replaced by one),
so a link to ``/etc/shadow`` or the broker's database is never served.
"""

from __future__ import annotations

import contextlib
import os
import re
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from execbroker.errors import NotFound

OUTPUTS_DIR = "outputs"
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,254}$")
_NOFOLLOW = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC


@dataclass(frozen=True, slots=True)
class OutputFile:
    name: str
    size: int


@contextlib.contextmanager
def _directory(workdir: Path) -> Iterator[int | None]:
    """The outputs directory, opened without following links; None if there is none."""
    try:
        fd = os.open(workdir / OUTPUTS_DIR, _NOFOLLOW | os.O_DIRECTORY)
    except (FileNotFoundError, NotADirectoryError):
        yield None
        return
    except OSError:  # ELOOP: a symbolic link where the directory should be
        yield None
        return
    try:
        yield fd
    finally:
        os.close(fd)


def list_outputs(workdir: Path) -> list[OutputFile]:
    """The regular files directly in ``workdir/outputs``, by name."""
    with _directory(workdir) as fd:
        if fd is None:
            return []
        found = []
        for name in os.listdir(fd):
            if not NAME.match(name):
                continue
            try:
                info = os.stat(name, dir_fd=fd, follow_symlinks=False)
            except FileNotFoundError:
                continue
            if stat.S_ISREG(info.st_mode):
                found.append(OutputFile(name, info.st_size))
    return sorted(found, key=lambda item: item.name)


def open_output(workdir: Path, name: str) -> BinaryIO:
    """The output ``name`` opened for reading; NotFound if there is no such regular file.
    The caller closes it."""
    if not NAME.match(name):
        raise NotFound(f"no output {name[:100]!r}")
    with _directory(workdir) as directory:
        if directory is None:
            raise NotFound(f"no output {name!r}: the session has no outputs")
        try:
            fd = os.open(name, _NOFOLLOW | os.O_NONBLOCK, dir_fd=directory)
        except OSError:
            raise NotFound(f"no output {name!r}") from None
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):  # a FIFO or device would never end
        os.close(fd)
        raise NotFound(f"no output {name!r}")
    return os.fdopen(fd, "rb")
