"""An ended container's outputs read straight from its writable layer, when the broker can.

The engine's archive API (``docker_engine.copy_out``) waits until the engine has let go of
an ended container (~20-40 ms) and then runs a tar helper process (~100 ms, even for one
small file). On an overlay2 engine whose files this broker can read (it runs as root, with
CAP_SYS_ADMIN, on the engine's host), the same files are in the container's upper directory
(``GraphDriver.Data.UpperDir`` of its inspect), there at once when the task ends.

Only a case whose answer is certain to be the archive API's is read here; anything else
raises ``Unsure``, and the caller asks the engine as before:

- the path is a plain directory in the upper layer (each step opened without following
  links), or absent from it; no lower layer (the image's) has anything in it, so the
  merged view the task saw is the upper one alone (whiteouts and opaque marks then hide
  nothing); no overlay ``redirect`` or ``metacopy`` mark (whose data would be elsewhere);
- it holds only regular files, each with one link (tar writes a second link as a link),
  and all of them fit well inside the byte limit (so the archive's limit would cut nothing);
- the epoch as the directory's mtime means untouched, as ``is_untouched`` says of the
  engine's stat: nothing is read, as the archive path copies nothing then.

Nothing here writes to the layer; what the task left is read as a stranger's: names are
those ``copy_out`` keeps, files are opened without following links and checked to be the
regular files listed. The upper directory's name is the engine's random id, so a path that
exists on this host is that container's layer.
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from execbroker.platforms.docker_engine import FILE_NAME, UNTOUCHED_MTIME, keep_file

_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
# overlay's marks that put a directory's or file's content elsewhere (trusted.overlay.* as
# root, user.overlay.* for a rootless engine)
_ELSEWHERE = ("overlay.redirect", "overlay.metacopy")
# More than a tar member's header takes (with a PAX header for a long name), and than the
# directory's own header and the end blocks: a directory that fits with these fits the tar.
_MEMBER_BYTES = 4096
_FIXED_BYTES = 16 * 1024
_TAR_BLOCK = 512
_CAP_SYS_ADMIN = 21  # the bit in /proc/self/status's CapEff


class Unsure(Exception):
    """The layer alone cannot say what the archive API would: ask the engine."""


@dataclass(frozen=True, slots=True)
class Layers:
    """A container's overlay2 directories, as the engine's inspect names them."""

    upper: str
    lowers: tuple[str, ...]  # topmost first


def layers_of(attrs: dict[str, Any]) -> Layers | None:
    """The overlay2 layers of an inspected container; None for another storage driver."""
    driver = attrs.get("GraphDriver") or {}
    data = driver.get("Data") or {}
    upper, lower = data.get("UpperDir"), data.get("LowerDir") or ""
    if driver.get("Name") != "overlay2" or not isinstance(upper, str):
        return None
    lowers = tuple(path for path in str(lower).split(":") if path)
    if not all(os.path.isabs(path) for path in (upper, *lowers)):
        return None
    return Layers(upper, lowers)


def can_read_layers(status: str | None = None) -> bool:
    """Does this process see every file of a layer and overlay's trusted marks (root, with
    CAP_SYS_ADMIN; without it they are silently hidden)? ``status``: /proc/self/status."""
    if os.geteuid() != 0:
        return False
    if status is None:
        try:
            status = Path("/proc/self/status").read_text()
        except OSError:
            return False
    for line in status.splitlines():
        if line.startswith("CapEff:"):
            return bool(int(line.split()[1], 16) >> _CAP_SYS_ADMIN & 1)
    return False


def fits(sizes: list[int], limit: int) -> bool:
    """Would a tar of files of these sizes (and their directory) stay within ``limit``?"""
    padded = sum(-(-size // _TAR_BLOCK) * _TAR_BLOCK + _MEMBER_BYTES for size in sizes)
    return _FIXED_BYTES + padded <= limit


def copy_outputs(layers: Layers, path: PurePosixPath, target: Path, *, limit: int) -> list[str]:
    """Copy the regular files directly in the container's directory ``path`` (absolute)
    into ``target``, as ``copy_out`` would; the names copied. Unsure when not certain."""
    relative = path.relative_to("/").parts
    try:
        for lower in layers.lowers:
            _nothing_in(lower, relative)
        target.mkdir(parents=True, exist_ok=True)
        return _copy_upper(layers.upper, relative, target, limit)
    except OSError as error:  # (not one the archive API would have: ask it)
        raise Unsure(str(error)) from None


def _nothing_in(lower: str, relative: tuple[str, ...]) -> None:
    """The image's layer ``lower`` has nothing at ``relative`` but an empty directory."""
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC  # (the engine's own directory)
    with _opened(lower, flags) as root, _walk(root, relative) as found:
        if found is not None and os.listdir(found):
            raise Unsure("the image has files there")


def _copy_upper(upper: str, relative: tuple[str, ...], target: Path, limit: int) -> list[str]:
    with _opened(upper, _DIR) as root, _walk(root, relative) as directory:
        if directory is None or os.fstat(directory).st_mtime_ns == UNTOUCHED_MTIME * 10**9:
            return []
        names = sorted(os.listdir(directory))
        entries = {n: os.stat(n, dir_fd=directory, follow_symlinks=False) for n in names}
        if any(not stat.S_ISREG(e.st_mode) or e.st_nlink != 1 for e in entries.values()):
            raise Unsure("not only regular files with one link")
        if not fits([entry.st_size for entry in entries.values()], limit):
            raise Unsure("near the byte limit")
        kept = [name for name in entries if FILE_NAME.match(name)]
        for name in kept:
            with _opened(name, _FILE, directory) as fd:
                found = os.fstat(fd)
                if (found.st_ino, found.st_dev) != (entries[name].st_ino, entries[name].st_dev):
                    raise Unsure(f"{name} changed")
                _unmarked(fd)
                with os.fdopen(os.dup(fd), "rb") as source:
                    keep_file(target, name, source)
    return kept


@contextlib.contextmanager
def _opened(path: str, flags: int, directory: int | None = None) -> Iterator[int]:
    try:
        fd = os.open(path, flags, dir_fd=directory)
    except OSError as error:
        raise Unsure(f"{path}: {error.strerror}") from None
    try:
        yield fd
    finally:
        os.close(fd)


@contextlib.contextmanager
def _walk(root: int, parts: tuple[str, ...]) -> Iterator[int | None]:
    """The plain, unmarked directory at ``parts`` under ``root``, opened step by step;
    None where a step is absent; Unsure where one is anything else (a link, a whiteout)."""
    with contextlib.ExitStack() as stack:
        current: int | None = root
        for part in parts:
            try:
                fd = os.open(part, _DIR, dir_fd=current)
            except FileNotFoundError:
                current = None
                break
            except OSError as error:
                raise Unsure(f"{part}: {error.strerror}") from None
            stack.callback(os.close, fd)
            _unmarked(fd)
            current = fd
        yield current


def _unmarked(fd: int) -> None:
    if any(name.endswith(_ELSEWHERE) for name in os.listxattr(fd)):
        raise Unsure("overlay keeps its content elsewhere")
