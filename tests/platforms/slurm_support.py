"""What the Slurm tests share: a state directory the jobs' accounts can enter, and the two
test accounts that the brokers' users are mapped to (``run_as.users``).

A root broker runs each user's jobs as an unprivileged account of that user, so the
session directories must be reachable by other uids: pytest's own ``tmp_path`` lies under
``/tmp/pytest-of-root`` (0700, and pytest sets it back to 0700 when it finds it looser).
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

# Broker user -> the account their jobs run as in the tests' brokers (made if missing,
# like the broker's own accounts: system, no home, no login shell).
TEST_ACCOUNTS = {"alice": "ebtest-alice", "bob": "ebtest-bob"}


def ensure_test_accounts() -> dict[str, str]:
    for name in TEST_ACCOUNTS.values():
        try:
            pwd.getpwnam(name)
        except KeyError:
            subprocess.run(
                [
                    "useradd", "--system", "--user-group", "--no-create-home",
                    "--home-dir", "/nonexistent", "--shell", "/usr/sbin/nologin", name,
                ],
                check=False, capture_output=True, timeout=30,
            )  # fmt: skip
            pwd.getpwnam(name)  # made now, or by a parallel run a moment ago
    return dict(TEST_ACCOUNTS)


@contextmanager
def enterable_dir(prefix: str) -> Iterator[Path]:
    """A fresh directory other users may enter but not list (0711), removed afterwards."""
    directory = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    directory.chmod(0o711)
    try:
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)


@contextmanager
def private_umask() -> Iterator[None]:
    """Files made meanwhile (a test broker's config with its tokens, its log, the processes
    it spawns) are readable by their owner only, as an operator's would be."""
    previous = os.umask(0o077)
    try:
        yield
    finally:
        os.umask(previous)
