"""The broker's own reads and writes of ``file://`` URLs under ``tes.file_roots``.

The broker often runs as root, and the directories it reads and writes are its users', so
nothing below a root is trusted: every path is walked one component at a time from the
root's directory descriptor (``openat``), never following a link, never resolving a path
first and opening it after (a link swapped in between would be followed). A user's roots
are their own (``{user}`` substituted) and the shared ones the config marks as such.

A file the broker writes gets mode 0640 (its folders 0750) and, when the broker is root and
the root is a user's own, the owner of that user's root directory as its owner; an existing
file is replaced only if it is a regular file with one link owned by that same owner.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from urllib.parse import unquote, urlparse

from execbroker.config import UserRoot

_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
READ = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC  # no FIFO blocks the broker
_WRITE = os.O_WRONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
FILE_MODE, DIR_MODE = 0o640, 0o750
_CHUNK = 1024 * 1024


class RootError(Exception):
    """A file:// URL the broker will not read or write; the message is fit for its user."""


class NotRegular(Exception):
    """What a descriptor holds is not a regular file (a directory, a FIFO, a device)."""


class TooLarge(Exception):
    """A file holds more than the bytes a reader takes."""


@dataclass(frozen=True, slots=True)
class Located:
    root: UserRoot
    rest: tuple[str, ...]  # below the root

    def uri(self, *more: str) -> str:
        return Path(self.root.path, *self.rest, *more).as_uri()


@dataclass(frozen=True, slots=True)
class Owner:
    uid: int
    gid: int


def locate(url: str, roots: Sequence[UserRoot]) -> Located | None:
    """Which of ``roots`` a ``file://`` URL lies under (by its spelling: the walk checks the
    files themselves), or None."""
    parsed = urlparse(url)
    spelt = unquote(parsed.path)
    path = PurePosixPath(spelt)
    if parsed.netloc not in ("", "localhost") or "\0" in spelt:
        return None
    if not path.is_absolute() or ".." in path.parts:
        return None
    for root in roots:
        if path.is_relative_to(root.path):
            return Located(root, path.relative_to(root.path).parts)
    return None


def walk(fd: int, parts: Sequence[str], *, make: bool = False, owner: Owner | None = None) -> int:
    """The directory ``parts`` below the directory ``fd`` (which is consumed), each component
    opened beneath the one before without following a link; ``make`` creates those missing
    (mode 0750, given to ``owner``)."""
    for part in parts:
        try:
            try:
                found = os.open(part, _DIR, dir_fd=fd)
            except FileNotFoundError:
                if not make:
                    raise
                made = True
                try:
                    os.mkdir(part, DIR_MODE, dir_fd=fd)
                except FileExistsError:
                    made = False  # made meanwhile by another: opened (and checked) as any
                found = os.open(part, _DIR, dir_fd=fd)
                if made:  # the one just made (a link swapped in is not opened)
                    if owner is not None:
                        os.fchown(found, owner.uid, owner.gid)
                    os.fchmod(found, DIR_MODE)
        finally:
            os.close(fd)
        fd = found
    return fd


def open_below(base: Path, parts: Sequence[str], flags: int = READ) -> int:
    """``base``/``parts`` opened with ``flags``, no link followed below ``base``."""
    fd = walk(os.open(base, _DIR), parts[:-1])
    try:
        return os.open(parts[-1], flags, dir_fd=fd) if parts else os.dup(fd)
    finally:
        os.close(fd)


def _why(error: OSError) -> str:
    if error.errno in (errno.ELOOP, errno.ENOTDIR):
        return "a link or a file where a folder should be (links are never followed)"
    return error.strerror or str(error)


def read_input(url: str, roots: Sequence[UserRoot], limit: int) -> bytes:
    """The content of a regular file of at most ``limit`` bytes a file:// URL names."""
    found = locate(url, roots)
    if found is None or not found.rest:
        raise RootError(f"{url} is not a file under a directory this broker allows you")
    root = found.root
    try:
        fd = open_below(root.base, root.below + found.rest)
    except FileNotFoundError:
        raise RootError(f"{url}: no such file") from None
    except OSError as error:
        raise RootError(f"{url}: not readable ({_why(error)})") from None
    try:
        return read_regular(fd, limit)
    except (NotRegular, TooLarge):
        raise RootError(f"{url}: not a regular file of at most {limit} bytes") from None
    finally:
        os.close(fd)


def read_regular(fd: int, limit: int) -> bytes:
    """The whole content of the regular file open at ``fd``, never more than ``limit`` bytes
    read (one that grows past it while it is read is refused too). Raises NotRegular or
    TooLarge; the descriptor stays open."""
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        raise NotRegular
    if info.st_size > limit:
        raise TooLarge
    chunks, size = [], 0
    while chunk := os.read(fd, min(_CHUNK, limit + 1 - size)):  # one byte past: too large
        size += len(chunk)
        if size > limit:
            raise TooLarge
        chunks.append(chunk)
    return b"".join(chunks)


def write_file(found: Located, relative: Sequence[str], content: bytes) -> str:
    """Write ``content`` at ``relative`` below a located URL, making its folders; its URL."""
    rest = found.rest + tuple(relative)
    if not rest:
        raise RootError(f"{found.uri()}: a root directory, not a file")
    root = found.root
    try:
        top = walk(os.open(root.base, _DIR), root.below)
        try:
            owner = _owner(top, root)
        except OSError:
            os.close(top)
            raise
        parent = walk(top, rest[:-1], make=True, owner=owner)
    except OSError as error:
        raise RootError(f"{found.uri(*relative)}: no folder to write in ({_why(error)})") from None
    try:
        fd = _create(parent, rest[-1], owner, found.uri(*relative))
    finally:
        os.close(parent)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(content)
    except OSError as error:  # a full disk, a quota
        raise RootError(f"{found.uri(*relative)}: could not be written ({_why(error)})") from None
    return found.uri(*relative)


def _owner(fd: int, root: UserRoot) -> Owner | None:
    """Whom a root broker gives what it writes: the owner of the user's root directory (a
    shared root's files stay the broker's own)."""
    if os.geteuid() != 0 or root.shared:
        return None
    info = os.fstat(fd)
    return Owner(info.st_uid, info.st_gid)


def _create(parent: int, name: str, owner: Owner | None, shown: str) -> int:
    """A descriptor to write ``name`` in ``parent`` from its start: a new file, or one the
    owner already has there (never another's file, a link, or a special file)."""
    try:
        try:
            fd = os.open(name, _WRITE | os.O_CREAT | os.O_EXCL, FILE_MODE, dir_fd=parent)
        except FileExistsError:
            fd = os.open(name, _WRITE, dir_fd=parent)
            info = os.fstat(fd)
            mine = owner.uid if owner is not None else os.geteuid()
            if not stat.S_ISREG(info.st_mode) or info.st_nlink != 1 or info.st_uid != mine:
                os.close(fd)
                raise RootError(
                    f"{shown}: exists and is not a file of this user's the broker may replace"
                ) from None
            os.ftruncate(fd, 0)
        if owner is not None:
            os.fchown(fd, owner.uid, owner.gid)
        os.fchmod(fd, FILE_MODE)
    except OSError as error:
        raise RootError(f"{shown}: could not be written ({_why(error)})") from None
    return fd
