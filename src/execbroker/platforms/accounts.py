"""Who a task runs as: an unprivileged account of its own for each broker user.

A task never runs as root nor as the broker's own user, so it can read neither another
user's files nor the broker's database, config or tokens. Each broker user's tasks run
under one account: the one the platform's config maps them to (``run_as.users``), or, when
the broker runs as root and ``run_as.create`` is on (the default), a system account the
broker makes for that user the first time it is needed (no home, no login shell). A broker
that can do neither refuses to start unless its config says, in one explicit line
(``run_as: {shared: true}``), that every task may run as the broker's own user.

The platform-side options, under a platform's ``run_as:`` key::

    run_as:
      users: {alice: 20001, bob: science-bob}   # broker user -> existing account (uid or name)
      create: true                               # make eb… accounts for users not mapped
      shared: false                              # the loosening: tasks run as the broker's user
"""

from __future__ import annotations

import hashlib
import os
import pwd
import re
import shutil
import subprocess
import threading
from collections.abc import Sequence
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field

from execbroker.platforms.base import PlatformError

_UNSAFE = re.compile(r"[^a-z0-9_-]")


class RunAsOptions(BaseModel):
    """A platform's ``run_as:`` options; anything else is refused."""

    model_config = ConfigDict(extra="forbid")

    users: dict[str, int | str] = Field(default_factory=dict)
    create: bool = True
    shared: bool = False


class IsolationError(ValueError):
    """The broker cannot give its users accounts of their own and was not told it may share."""


@dataclass(frozen=True, slots=True)
class Account:
    """An account on the platform's hosts that tasks run as."""

    name: str
    uid: int
    gid: int


def account_name(broker: str, user: str) -> str:
    """The system account made for ``user`` of ``broker``: readable, unique, ≤ 32 characters
    (useradd's limit), and safe for useradd's name rules whatever the broker user is called."""
    digest = hashlib.sha256(f"{broker}\0{user}".encode()).hexdigest()[:8]
    return f"eb{digest}-{_UNSAFE.sub('_', user.lower())[:20]}"


def _lookup(who: int | str) -> Account | None:
    try:
        entry = pwd.getpwuid(who) if isinstance(who, int) else pwd.getpwnam(who)
    except KeyError:
        return None
    return Account(entry.pw_name, entry.pw_uid, entry.pw_gid)


class Accounts:
    """The accounts one platform of one broker runs its users' tasks as."""

    def __init__(self, options: RunAsOptions, *, broker: str, platform: str) -> None:
        self.options = options
        self.broker = broker
        self.platform = platform
        self._made: dict[str, Account] = {}
        self._lock = threading.Lock()

    @property
    def shared(self) -> bool:
        return self.options.shared

    def can_create(self) -> bool:
        return os.geteuid() == 0 and self.options.create and shutil.which("useradd") is not None

    def check(self, users: Sequence[str]) -> list[str]:
        """Check at start-up that every one of ``users`` gets an account of their own.

        Returns warnings to log; raises IsolationError when the broker would have to run
        several users' tasks under one uid and its config did not accept that.
        """
        if self.options.shared:
            return [
                f"platform {self.platform}: run_as.shared is set: every user's tasks run as the "
                f"broker's own user (uid {os.geteuid()}) and can read each other's files"
            ]
        seen: dict[int, str] = {}
        for user, who in self.options.users.items():
            account = _lookup(who)
            if account is None:
                raise IsolationError(
                    f"platform {self.platform}: run_as.users.{user}: no account {who!r}"
                )
            if account.uid in (0, os.geteuid()):
                raise IsolationError(
                    f"platform {self.platform}: run_as.users.{user}: tasks may run neither as "
                    f"root nor as the broker's own user ({account.name})"
                )
            if account.uid in seen:
                raise IsolationError(
                    f"platform {self.platform}: run_as.users: {seen[account.uid]} and {user} "
                    f"map to the same account {account.name}"
                )
            seen[account.uid] = user
        unmapped = [user for user in users if user not in self.options.users]
        if not unmapped or self.can_create():
            return []
        why = "the broker is not root" if os.geteuid() != 0 else "run_as.create is off"
        if len(users) > 1:
            raise IsolationError(
                f"platform {self.platform} cannot give users {', '.join(unmapped)} accounts of "
                f"their own ({why}) and will not run several users' tasks under one uid: map "
                f"them in run_as.users, run the broker as root, or accept sharing with "
                f"run_as: {{shared: true}}"
            )
        return [
            f"platform {self.platform}: {why}, so {unmapped[0]}'s tasks run as the broker's own "
            f"user and could read the broker's files; map the user in run_as.users"
        ]

    def for_owner(self, owner: str) -> Account | None:
        """The account ``owner``'s tasks run as, made now if need be; None means the broker's
        own user (only when ``shared``, or a single unmapped user that ``check`` warned of)."""
        if self.options.shared:
            return None
        if owner in self.options.users:
            account = _lookup(self.options.users[owner])
            if account is None:
                raise PlatformError(f"the account mapped to {owner} is gone")
            return account
        if not self.can_create():
            return None
        with self._lock:
            if owner not in self._made:
                self._made[owner] = self._create(account_name(self.broker, owner), owner)
            return self._made[owner]

    def _create(self, name: str, owner: str) -> Account:
        existing = _lookup(name)
        if existing is not None:
            return existing
        result = subprocess.run(
            [
                "useradd",
                "--system",
                "--user-group",
                "--no-create-home",
                "--home-dir",
                "/nonexistent",
                "--shell",
                "/usr/sbin/nologin",
                "--comment",
                f"execbroker tasks of {owner} on {self.broker}",
                name,
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        account = _lookup(name)  # another broker may have made it at the same moment
        if account is None:
            raise PlatformError(f"could not create an account for {owner}: {result.stderr.strip()}")
        return account
