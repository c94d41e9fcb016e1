"""The command that runs a local task inside bubblewrap, as its owner's account.

What the task sees: a mount namespace with ``/usr`` and the top-level ``/bin``, ``/lib*``
links read-only, a short list of ``/etc`` files (no ``shadow``, nothing of the broker's),
the python its notebooks need (read-only), a fresh ``/proc`` of its own pid namespace, a
fresh ``/dev``, ``/tmp`` and ``/dev/shm``, and its work directory as ``/task`` (its HOME and
cwd). Nothing else of the host: not the broker's state directory, database, config or
environment, not another session's files. Its network is a namespace of its own with
only a loopback (``--unshare-net``): nothing that listens on the host, the broker or
another session's server, is reachable, and nothing outside. An interactive notebook,
whose server must be reached, and every task of a platform configured with
``network: host`` share the host's network instead.

bwrap runs as root (the runner's user) so that it can bind directories whose parents
only root can enter; it drops every capability but the three ``setpriv`` needs to become
the account and then drop those too (``no_new_privs`` is set by bwrap). The sandbox's
init is bwrap's reaper: when the task's first process ends, or the runner dies
(``--die-with-parent``), the pid namespace ends and the kernel kills every process left
in it, daemonized or not. ``--new-session`` keeps the task off any terminal.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from execbroker.platforms.accounts import Account

TASK_DIR = PurePosixPath("/task")  # not /work or /home: a venv may live there
TOP_LEVEL = ("bin", "sbin", "lib", "lib32", "lib64", "libx32")
ETC = (
    "passwd",
    "group",
    "nsswitch.conf",
    "hosts",
    "host.conf",
    "resolv.conf",
    "localtime",
    "timezone",
    "ld.so.cache",
    "ld.so.conf",
    "ld.so.conf.d",
    "alternatives",
    "ssl",
    "ca-certificates",
    "mime.types",
    "protocols",
    "services",
)


@dataclass(frozen=True, slots=True)
class Mount:
    """A staged directory (``source``, on the host) the task sees at ``target``."""

    source: str
    target: str
    readonly: bool = True


def python_dirs() -> list[Path]:
    """The directories of this interpreter the task needs beyond ``/usr`` (a venv's)."""
    found = []
    for prefix in {Path(sys.prefix), Path(sys.base_prefix)}:
        if not prefix.is_relative_to("/usr"):
            found.append(prefix)
    return sorted(found)


def command(
    argv: Sequence[str],
    *,
    workdir: Path,
    account: Account | None,
    environment: Mapping[str, str],
    read_only: Sequence[Path] = (),
    mounts: Sequence[Mount] = (),
    host_network: bool = False,
    bwrap: str = "bwrap",
    setpriv: str = "/usr/bin/setpriv",
    root: Path = Path("/"),
) -> list[str]:
    """The argv that runs ``argv`` in the sandbox with ``environment`` and nothing else
    (``account`` None: as the caller's user, every capability dropped). The environment
    is set by bwrap for the task only: bwrap itself runs as root, and an ``LD_PRELOAD`` of
    the user's must never reach it."""
    args = [
        bwrap,
        "--die-with-parent",
        "--new-session",
        "--unshare-pid",
        "--unshare-ipc",
        "--unshare-uts",
        "--unshare-cgroup-try",
        *([] if host_network else ["--unshare-net"]),
        "--hostname",
        "task",
        "--ro-bind",
        "/usr",
        "/usr",
    ]
    for name in TOP_LEVEL:
        path = root / name
        if path.is_symlink():
            args += ["--symlink", str(path.readlink()), f"/{name}"]
        elif path.is_dir():
            args += ["--ro-bind", f"/{name}", f"/{name}"]
    args += ["--perms", "0755", "--dir", "/etc"]  # bwrap makes directories root's alone
    for name in ETC:
        args += ["--ro-bind-try", f"/etc/{name}", f"/etc/{name}"]
    # The fresh /proc, /dev and /tmp first: what is bound later may lie inside them (a venv
    # under /tmp, as in a clone there, would otherwise be hidden by the task's own /tmp).
    args += ["--proc", "/proc", "--dev", "/dev"]
    args += ["--perms", "1777", "--tmpfs", "/tmp", "--perms", "1777", "--tmpfs", "/dev/shm"]
    made: set[Path] = {Path("/tmp")}
    for path in read_only:
        for parent in reversed(path.parents[:-1]):  # bwrap would make them root's alone
            if parent not in made and not parent.is_relative_to("/usr"):
                args += ["--perms", "0755", "--dir", str(parent)]
                made.add(parent)
        args += ["--ro-bind", str(path), str(path)]
    args += ["--bind", str(workdir), str(TASK_DIR)]
    for mount in mounts:  # after /tmp and /task: a mount may lie inside either
        target = PurePosixPath(mount.target)
        for parent in reversed(target.parents[:-1]):
            if Path(parent) not in made and parent not in (TASK_DIR, PurePosixPath("/tmp")):
                args += ["--perms", "0755", "--dir", str(parent)]
                made.add(Path(parent))
        args += ["--ro-bind" if mount.readonly else "--bind", mount.source, str(target)]
    args += ["--chdir", "/", "--cap-drop", "ALL"]
    args.append("--clearenv")
    for name, value in environment.items():
        args += ["--setenv", name, value]
    # Entered once the task is the account: bwrap itself, root without CAP_DAC_OVERRIDE,
    # may not enter a directory that is the account's alone.
    enter = ["/usr/bin/env", "--chdir", str(TASK_DIR), "--", *argv]
    if account is None:
        return [*args, "--", *enter]
    for capability in ("CAP_SETUID", "CAP_SETGID", "CAP_SETPCAP"):
        args += ["--cap-add", capability]
    become = [
        setpriv,
        f"--reuid={account.uid}",
        f"--regid={account.gid}",
        "--clear-groups",
        "--inh-caps=-all",
        "--bounding-set=-all",
        "--no-new-privs",
    ]
    return [*args, "--", *become, "--", *enter]
