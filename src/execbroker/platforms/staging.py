"""Staging a session's data resources: fetched in ``start`` (PREPARING), checked, written.

Every fetch goes through ``execbroker.fetch`` under the platform's own fetch policy (its
``start`` runs inside it), so the address rules hold after DNS and on every redirect, with
a size limit (``MAX_DATA_BYTES``) and a time limit (``STAGING_ALLOWANCE``, which the offer
booked as preparation time). A refused address, an overrun or a checksum mismatch is a
PlatformError naming the resource: the session fails with that reason.

Each platform places the files its own way (local: bound into the sandbox; docker: a
named volume per resource; Slurm: inside the job's work directory); what they share is
here: fetching, checking and writing a staged directory with the right owner and modes.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

from execbroker import fetch
from execbroker.model.data import CONTENT, MAX_DATA_BYTES, STAGING_ALLOWANCE, DataMount
from execbroker.platforms.base import PlatformError

# READONLY: root's, readable by all (the task's account among them), writable by none;
# READWRITE: the account's own.
READONLY_MODES = (0o755, 0o444)
READWRITE_MODES = (0o700, 0o644)


def fetch_data(mount: DataMount) -> bytes:
    """The resource's bytes, fetched under the current policy and checked against its
    checksum; PlatformError saying why not."""
    what = f"data[{mount.index}]"
    try:
        got = fetch.fetch(
            mount.location,
            max_bytes=MAX_DATA_BYTES,
            timeout=STAGING_ALLOWANCE.total_seconds(),
            what=what,
        )
    except fetch.FetchError as error:
        raise PlatformError(f"{what}: {error}") from None
    if mount.checksum is not None:
        algorithm, wanted = mount.checksum
        found = hashlib.new(algorithm, got.body).hexdigest()
        if found != wanted:
            raise PlatformError(
                f"{what}: checksum mismatch: {mount.location} has {algorithm}:{found}, "
                f"not {algorithm}:{wanted}"
            )
    return got.body


def write_staged(
    directory: Path, body: bytes, *, readonly: bool, owner: tuple[int, int] | None
) -> Path:
    """``directory`` (made fresh) holding ``content``: root's and read-only for everyone
    when ``readonly``, else ``owner``'s (uid, gid; None: the broker's own user)."""
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / CONTENT
    if target.is_symlink() or target.exists():
        target.unlink()
    dir_mode, file_mode = READONLY_MODES if readonly else READWRITE_MODES
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "wb") as stream:
        stream.write(body)
    if owner is not None and not readonly:
        os.chown(target, *owner, follow_symlinks=False)
        os.chown(directory, *owner, follow_symlinks=False)
    elif os.geteuid() == 0:
        os.chown(target, 0, 0, follow_symlinks=False)
        os.chown(directory, 0, 0, follow_symlinks=False)
    os.chmod(target, file_mode)
    os.chmod(directory, dir_mode)
    return directory


def stage_all(
    mounts: tuple[DataMount, ...], into: Path, *, owner: tuple[int, int] | None
) -> list[tuple[Path, DataMount]]:
    """Every mount fetched into ``into/<index>``: (the staged directory, the mount)."""
    staged = []
    for mount in mounts:
        body = fetch_data(mount)
        directory = write_staged(
            into / str(mount.index), body, readonly=mount.readonly, owner=owner
        )
        staged.append((directory, mount))
    return staged


def environment(staged: list[tuple[str, DataMount]]) -> dict[str, Any]:
    """``EXECBROKER_DATA_<index>``: where the task finds each resource's directory."""
    return {f"EXECBROKER_DATA_{mount.index}": path for path, mount in staged}
