"""An ended container's outputs read straight from its writable layer, when the broker can;
and its empty outputs directory made there before it starts.

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

What the task left is read as a stranger's: names are those ``copy_out`` keeps, files are
opened without following links and checked to be the regular files listed. The upper
directory's name is the engine's random id, so a path that exists on this host is that
container's layer.

The one write (``place_untouched``): before a created container first starts, its empty
``$EXECBROKER_OUTPUTS`` is made in its upper directory instead of through the archive API
(whose tar helper costs ~60-100 ms a launch), exactly as that extraction leaves it (owned by
root, the modes and mtimes ``put_files`` gives, the epoch as atime). Only where nothing can
differ: the container's layers are not mounted (overlay does not expect its layers to change
under a mount), they are root's (no remapped engine), no lower layer has anything at the
top directory, and the upper one has at most the empty, unmarked top directory the engine
made for the working directory; else Unsure, and the engine places it as before.
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


def place_untouched(
    layers: Layers, path: PurePosixPath, mode: int, *, top_mode: int, now: float
) -> None:
    """Make ``path`` (``/top/name``) an empty directory in a created, never started
    container's upper layer, as ``put_files`` with it ``untouched`` would through the
    engine: ``/top`` with ``top_mode`` and ``now`` as its mtime, ``path`` with ``mode`` and
    UNTOUCHED_MTIME, both owned by root. Unsure when not certain that is the same."""
    parts = path.relative_to("/").parts
    if len(parts) != 2 or not all(FILE_NAME.match(part) for part in parts):
        raise Unsure("not a plain directory one level down")
    top, name = parts
    try:
        if Path(layers.upper).parent.name in Path("/proc/self/mountinfo").read_text():
            raise Unsure("its layers are mounted")
        for lower in layers.lowers:
            with _opened_path(lower) as root:
                if _exists(root, top):
                    raise Unsure("the image has something there")
        with _opened_path(layers.upper) as upper:
            found = os.fstat(upper)
            if (found.st_uid, found.st_gid) != (0, 0):
                raise Unsure("the layer is not root's")
            with _plain_directory(upper, top, top_mode, existing=True) as directory:
                with _plain_directory(directory, name, mode, existing=False) as made:
                    _stamp(made, mode, UNTOUCHED_MTIME)
                _stamp(directory, top_mode, now)  # (after making ``name`` in it)
    except OSError as error:  # (a partial write is fine: the engine's copy then redoes all)
        raise Unsure(str(error)) from None


def _exists(directory: int, name: str) -> bool:
    try:
        os.stat(name, dir_fd=directory, follow_symlinks=False)
    except FileNotFoundError:
        return False
    return True


@contextlib.contextmanager
def _plain_directory(parent: int, name: str, mode: int, *, existing: bool) -> Iterator[int]:
    """``name`` in ``parent``, made (with ``mode``, before the umask), or if ``existing``
    may be, found there: a directory, not a link, empty, with no extended attributes."""
    try:
        os.mkdir(name, mode, dir_fd=parent)
    except FileExistsError:
        if not existing:
            raise Unsure(f"{name} is there already") from None
    with _opened(name, _DIR, parent) as fd:
        if os.listdir(fd) or os.listxattr(fd):
            raise Unsure(f"{name} is not an empty, unmarked directory")
        yield fd


def _stamp(fd: int, mode: int, mtime: float) -> None:
    """The directory's owner, mode and times, as the engine's extraction of a tar member
    owned by root sets them (it gives a directory the epoch as its atime)."""
    os.fchown(fd, 0, 0)
    os.fchmod(fd, mode)
    os.utime(fd, (0, mtime))


@contextlib.contextmanager
def _opened_path(path: str) -> Iterator[int]:
    """The absolute directory ``path``, opened step by step from ``/``, following no link."""
    parts = PurePosixPath(path).parts
    if not parts or parts[0] != "/" or any(part in (".", "..") for part in parts):
        raise Unsure(f"{path}: not a plain absolute path")
    with contextlib.ExitStack() as stack:
        current = stack.enter_context(_opened("/", _DIR))
        for part in parts[1:]:
            current = stack.enter_context(_opened(part, _DIR, current))
        yield current


def _nothing_in(lower: str, relative: tuple[str, ...]) -> None:
    """The image's layer ``lower`` has nothing at ``relative`` but an empty directory."""
    with _opened_path(lower) as root, _walk(root, relative) as found:
        if found is not None and os.listdir(found):
            raise Unsure("the image has files there")


def _copy_upper(upper: str, relative: tuple[str, ...], target: Path, limit: int) -> list[str]:
    with _opened_path(upper) as root, _walk(root, relative) as directory:
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
