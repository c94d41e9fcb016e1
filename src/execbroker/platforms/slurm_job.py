"""A session's Slurm job, built as text (pure): its ``#SBATCH`` directives and its script.

The job script is filled in from one template. Its ``#SBATCH`` lines hold only validated
integers, names and paths the broker controls; then the job's environment is set by
``export NAME='value'`` lines (names checked against ``ENV_NAME`` and the reserved
prefixes, values quoted by ``shlex.quote`` and free of NUL); then ``exec /bin/sh
script.sh`` runs the user's own text, which is never parsed by sbatch nor spliced into
anything. sbatch reads this script on its standard input, so there is no job file a task
could rewrite before sbatch reads it, and the user's values are on no command line and in
no environment of any broker command. Loader variables (``LD_PRELOAD``, ``BASH_ENV``...)
are allowed: set in the script, they reach only the user's own processes, under the user's
own account.
"""

from __future__ import annotations

import math
import re
import shlex
from datetime import datetime
from string import Template

from execbroker.errors import InvalidRequest
from execbroker.model.executables import BatchScript
from execbroker.outputs import OUTPUTS_DIR
from execbroker.platforms import staging
from execbroker.platforms.base import LaunchSpec, PlatformError

JOB_PATH = "/usr/local/bin:/usr/bin:/bin"
# Environment names sbatch or Slurm's daemons and tools would act on: a user may not set them.
RESERVED_PREFIXES = ("SLURM_", "SBATCH_", "SALLOC_", "SRUN_", "SPANK_", "PMI_", "PMIX_")
ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")

_SLURM_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
# What an #SBATCH value may contain: no blanks, quotes, ``%`` (Slurm's filename patterns)
# or anything a shell or sbatch's directive parser would read specially.
_SAFE_VALUE = re.compile(r"^[A-Za-z0-9_.,:/+=@-]+$")
SAFE_PATH = re.compile(r"^/[A-Za-z0-9_./+-]+$")

JOB_TEMPLATE = Template(
    """#!/bin/sh
# execbroker: session $session of broker $broker
$directives
$exports
exec /bin/sh $script
"""
)


def job_name(broker: str, session_id: str) -> str:
    return f"eb.{broker}.{session_id}"


def time_limit_minutes(deadline: datetime, start: datetime, now: datetime) -> int:
    """Slurm's ``--time`` in whole minutes, rounded up: the time left of the grant
    (its whole duration when launched on time). The monitor stops the task at the
    deadline itself; Slurm's limit is the backstop when the broker is down."""
    seconds = (deadline - max(start, now)).total_seconds()
    return max(1, math.ceil(seconds / 60))


def begin_time(start: datetime, now: datetime) -> str | None:
    """``--begin`` for a start still ahead, as ``now+<seconds>`` (relative, so no time zone
    can shift it); None when the job may start at once. sbatch adds the seconds to its own
    clock's *whole* second, so they are counted from ``now`` rounded down to ``start``
    rounded up: never early, at most a second late."""
    if (start - now).total_seconds() <= 1:
        return None
    return f"now+{math.ceil(start.timestamp()) - math.floor(now.timestamp())}"


# -- the user's environment -------------------------------------------------------------


def user_environment(spec: LaunchSpec) -> dict[str, str]:
    return spec.executable.environment if isinstance(spec.executable, BatchScript) else {}


def malformed_variable(environment: dict[str, str]) -> InvalidRequest | None:
    """The first variable no job script can set safely, as the 422 naming it; None if none.

    The wire model checks names too; this is the platform's own check of what it splices
    into a shell script (``fullmatch``: a name with a trailing newline is no name)."""
    for name, value in environment.items():
        field = f"executable.environment.{name}"
        if not ENV_NAME.fullmatch(name):
            return InvalidRequest(
                f"{field}: {name!r} is not a variable name (letters, digits and '_', not "
                "starting with a digit, at most 128 characters)",
                field=field,
            )
        if "\0" in value:
            return InvalidRequest(f"{field}: a value may not contain a NUL byte", field=field)
    return None


def reserved_names(environment: dict[str, str]) -> list[str]:
    return sorted(name for name in environment if name.startswith(RESERVED_PREFIXES))


def job_environment(spec: LaunchSpec) -> dict[str, str]:
    """The variables the job script sets: a plain base, the session's own, ours on top.
    Only these and Slurm's own ``SLURM_*`` are in the job: sbatch runs in the broker's
    fixed environment (``PATH``, ``LANG``, ``SLURM_CONF``), not the broker's own."""
    return {
        "PATH": JOB_PATH,
        "HOME": str(spec.workdir / "work"),
        "LANG": "C.UTF-8",
        **user_environment(spec),
        "EXECBROKER_BROKER": spec.broker,
        "EXECBROKER_SESSION": spec.session_id,
        "EXECBROKER_CORES": str(spec.resources.cores),
        "EXECBROKER_MEMORY_GIB": str(spec.resources.memory_gib),
        "EXECBROKER_OUTPUTS": str(spec.workdir / OUTPUTS_DIR),
        **staging.environment(
            [(str(spec.workdir / "data" / str(mount.index)), mount) for mount in spec.data]
        ),
    }


def export_lines(environment: dict[str, str]) -> list[str]:
    """``export NAME='value'`` for each variable; refuses what cannot be set safely."""
    problem = malformed_variable(environment)
    if problem is not None:
        raise PlatformError(problem.message)
    reserved = reserved_names(environment)
    if reserved:
        raise PlatformError(f"refusing Slurm's own variables {', '.join(reserved)}")
    return [f"export {name}={shlex.quote(value)}" for name, value in environment.items()]


# -- the job ----------------------------------------------------------------------------


def directives(
    spec: LaunchSpec, *, account: str | None, partition: str | None, now: datetime
) -> list[tuple[str, str]]:
    """The ``#SBATCH`` options of the session's job, in order."""
    if spec.resources.cores < 1:
        raise PlatformError("a Slurm job needs at least one core; this grant has none")
    if spec.resources.memory_gib < 1:
        raise PlatformError("a Slurm job needs at least 1 GiB of memory; this grant has none")
    workdir = str(spec.workdir)
    items = [
        ("job-name", job_name(spec.broker, spec.session_id)),
        (
            "comment",
            f"execbroker:broker={spec.broker},session={spec.session_id},owner={spec.owner}",
        ),
        ("account", account),
        ("partition", partition),
        ("nodes", "1"),
        ("ntasks", "1"),
        ("cpus-per-task", str(int(spec.resources.cores))),
        ("mem", f"{int(spec.resources.memory_gib)}G"),
        ("time", str(time_limit_minutes(spec.deadline, spec.start, now))),
        ("begin", begin_time(spec.start, now)),
        ("no-requeue", ""),
        ("chdir", f"{workdir}/work"),
        ("output", f"{workdir}/stdout.log"),
        ("error", f"{workdir}/stderr.log"),
        # ALL of sbatch's own environment, which is the broker's fixed one. Not NONE/NIL:
        # Slurm 22.05 then sets SLURM_GET_USER_ENV=1 and slurmd runs ``su -`` to load the
        # account's login environment (logging an error for a nologin account).
        ("export", "ALL"),
    ]
    return [(name, value) for name, value in items if value is not None]


def batch_script(
    spec: LaunchSpec, *, account: str | None, partition: str | None, now: datetime
) -> str:
    """The job script sbatch reads: validated directives, quoted exports, the user's
    script by path."""
    if not SAFE_PATH.match(str(spec.workdir)):
        raise PlatformError(
            f"the session directory {spec.workdir} is not a plain path Slurm can be given "
            "(letters, digits, '_', '.', '/', '+', '-')"
        )
    lines = []
    for name, value in directives(spec, account=account, partition=partition, now=now):
        if value and not _SAFE_VALUE.match(value):
            raise PlatformError(f"refusing an unsafe value for --{name}: {value!r}")
        lines.append(f"#SBATCH --{name}={value}" if value else f"#SBATCH --{name}")
    return JOB_TEMPLATE.substitute(
        session=spec.session_id,
        broker=spec.broker,
        directives="\n".join(lines),
        exports="\n".join(export_lines(job_environment(spec))),
        script=f"{spec.workdir}/script.sh",
    )
