"""A TES task's outputs, delivered by the broker itself once the task has ended well.

The task writes each output at its path in its own area: a container's path (copied out by
the platform into the session's ``tes/`` directory), or a batch task's ``$TES_ROOT``, which
is that directory. The area is the task's, so nothing in it is trusted: it is read without
following a link at any step (nor opening a FIFO), regular files and directories only, at
most ``limit`` bytes in all. The broker then writes the files where the sandboxed task could
not: under a ``file://`` URL in one of the task owner's roots (``tes.file_roots``, written
as ``file_roots`` says: no link followed, never another's file replaced), or to an
``http(s)`` URL by PUT, under the platform's fetch rules (``fetch.upload``).
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from urllib.parse import quote, urlparse

from execbroker import fetch, file_roots
from execbroker.config import UserRoot
from execbroker.model.tes_script import TASK_ROOT  # the folder that holds a task's paths


class DeliveryError(Exception):
    """An output could not be delivered; the message is fit to show the task's owner."""


@dataclass(frozen=True, slots=True)
class Delivered:
    url: str
    path: str  # as the task saw it
    size: int


def source_of(workdir: Path, path: str) -> Path:
    """Where a task's ``path`` lies on the broker's host (the path was checked: absolute,
    no ``..``)."""
    return workdir / TASK_ROOT / path.lstrip("/")


def deliver(
    workdir: Path,
    output: dict[str, str],
    *,
    roots: list[UserRoot],
    policy: fetch.FetchPolicy | None,
    limit: int,
) -> list[Delivered]:
    """Deliver one output (``url``, ``path``, ``type``) of the session whose directory is
    ``workdir``: one entry per file (a directory's are flattened, as TES logs them).
    Raises DeliveryError (or fetch.FetchError) saying what went wrong."""
    url, path = output["url"], output["path"]
    scheme = urlparse(url).scheme
    put = _file_sink(url, roots) if scheme == "file" else _http_sink(url, policy)
    delivered = []
    for relative, content in read_output(workdir, path, output.get("type", "FILE"), limit):
        where = put(relative, content)
        shown = str(PurePosixPath(path, relative)) if relative.parts else path
        delivered.append(Delivered(url=where, path=shown, size=len(content)))
    return delivered


def read_output(
    workdir: Path, path: str, kind: str, limit: int
) -> Iterator[tuple[PurePosixPath, bytes]]:
    """The files of one output, each with its path below the output (empty for a FILE)."""
    parts = PurePosixPath(path).parts[1:]
    try:
        fd = file_roots.open_below(workdir / TASK_ROOT, parts)
    except FileNotFoundError:
        raise DeliveryError(f"{path}: the task left no such file or directory") from None
    except OSError as error:  # ELOOP, ENOTDIR: a link or a file on the way
        raise DeliveryError(f"{path}: not readable as an output ({error.strerror})") from None
    budget = [limit]
    try:
        mode = os.fstat(fd).st_mode
        if stat.S_ISREG(mode):
            if kind == "DIRECTORY":
                raise DeliveryError(f"{path}: a file, but the output is a DIRECTORY")
            yield PurePosixPath(), _read(fd, path, budget)
        elif stat.S_ISDIR(mode):
            if kind != "DIRECTORY":
                raise DeliveryError(f"{path}: a directory, but the output is a FILE")
            yield from _walk(fd, PurePosixPath(), path, budget)
        else:
            raise DeliveryError(f"{path}: neither a regular file nor a directory")
    finally:
        os.close(fd)


def _walk(
    fd: int, relative: PurePosixPath, path: str, budget: list[int]
) -> Iterator[tuple[PurePosixPath, bytes]]:
    for name in sorted(os.listdir(fd)):
        info = os.stat(name, dir_fd=fd, follow_symlinks=False)
        below = relative / name
        if stat.S_ISLNK(info.st_mode) or not (
            stat.S_ISREG(info.st_mode) or stat.S_ISDIR(info.st_mode)
        ):
            raise DeliveryError(
                f"{path}/{below}: a link or a special file (outputs are regular files and "
                "directories; links are never followed)"
            )
        child = os.open(
            name, file_roots.READ | (os.O_DIRECTORY if stat.S_ISDIR(info.st_mode) else 0), dir_fd=fd
        )
        try:
            if stat.S_ISDIR(info.st_mode):
                yield from _walk(child, below, path, budget)
            else:
                yield below, _read(child, f"{path}/{below}", budget)
        finally:
            os.close(child)


def _read(fd: int, shown: str, budget: list[int]) -> bytes:
    """A regular file's content, counted against what is left of the task's budget."""
    try:
        content = file_roots.read_regular(fd, budget[0])
    except file_roots.NotRegular:
        raise DeliveryError(f"{shown}: not a regular file") from None
    except file_roots.TooLarge:
        raise DeliveryError(f"{shown}: the task's outputs are larger than its limit") from None
    budget[0] -= len(content)
    return content


def _file_sink(url: str, roots: list[UserRoot]) -> Callable[[PurePosixPath, bytes], str]:
    found = file_roots.locate(url, roots)
    if found is None:
        raise DeliveryError(f"{url}: not under a directory this broker allows the task's owner")

    def put(relative: PurePosixPath, content: bytes) -> str:
        try:
            return file_roots.write_file(found, relative.parts, content)
        except file_roots.RootError as error:
            raise DeliveryError(str(error)) from None

    return put


def _http_sink(url: str, policy: fetch.FetchPolicy | None) -> Callable[[PurePosixPath, bytes], str]:
    def put(relative: PurePosixPath, content: bytes) -> str:
        where = url
        if relative.parts:
            where = url.rstrip("/") + "/" + "/".join(quote(part) for part in relative.parts)
        fetch.upload(where, content, policy=policy)
        return where

    return put
