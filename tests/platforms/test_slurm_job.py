"""Building a session's Slurm job (pure): directives, time limits, environment, options."""

from __future__ import annotations

import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace

import pytest

from execbroker.errors import InvalidRequest
from execbroker.model.executables import BatchScript, DockerContainer
from execbroker.planner import Resources
from execbroker.platforms import slurm
from execbroker.platforms.base import LaunchSpec, PlatformError
from execbroker.platforms.slurm import SlurmOptions, SlurmPlatform, parse_job_id, slurm_error
from execbroker.platforms.slurm_job import batch_script as _batch_script
from execbroker.platforms.slurm_job import (
    begin_time,
    job_environment,
    time_limit_minutes,
)

NOW = datetime(2025, 3, 1, 12, 0, 0, tzinfo=UTC)
SESSION = "0b6f3c5e-2f57-4a56-9d43-2d8e8a1c9f00"
OPTIONS = SlurmOptions(account="account-001", partition="debug")


def _spec(
    *,
    script: str = "echo hi",
    environment: dict[str, str] | None = None,
    cores: int = 2,
    memory: int = 3,
    start: datetime = NOW,
    duration: timedelta = timedelta(minutes=10),
    workdir: Path = Path("/var/eb/sessions") / SESSION,
) -> LaunchSpec:
    return LaunchSpec(
        session_id=SESSION,
        broker="slurm-account-001",
        owner="alice",
        # built unchecked: the platform's own checks are what these tests are about (the wire
        # model refuses some of the same input before it ever gets here)
        executable=BatchScript.model_construct(script=script, environment=environment or {}),
        resources=Resources(cores, memory, 0),
        start=start,
        deadline=start + duration,
        workdir=workdir,
    )


def batch_script(spec: LaunchSpec, options: SlurmOptions, now: datetime) -> str:
    return _batch_script(spec, account=options.account, partition=options.partition, now=now)


def _platform() -> SlurmPlatform:
    return SlurmPlatform(
        options=OPTIONS, broker="b", sessions_dir=Path("/nonexistent"), binaries={}
    )


def _directives(text: str) -> dict[str, str]:
    found = {}
    for line in text.splitlines():
        if line.startswith("#SBATCH --"):
            name, _, value = line.removeprefix("#SBATCH --").partition("=")
            found[name] = value
    return found


def test_batch_script_carries_the_grant() -> None:
    spec = _spec()
    text = batch_script(spec, OPTIONS, NOW)
    assert text.startswith("#!/bin/sh\n")
    found = _directives(text)
    assert found["cpus-per-task"] == "2"
    assert found["mem"] == "3G"
    assert found["time"] == "10"
    assert found["account"] == "account-001"
    assert found["partition"] == "debug"
    assert found["job-name"] == f"eb.slurm-account-001.{SESSION}"
    assert SESSION in found["comment"] and "slurm-account-001" in found["comment"]
    assert found["chdir"] == f"/var/eb/sessions/{SESSION}/work"
    assert found["output"] == f"/var/eb/sessions/{SESSION}/stdout.log"
    assert found["error"] == f"/var/eb/sessions/{SESSION}/stderr.log"
    assert "no-requeue" in found
    assert "begin" not in found
    assert text.rstrip().endswith(f"exec /bin/sh /var/eb/sessions/{SESSION}/script.sh")
    assert "#SBATCH --uid" not in text  # given on sbatch's command line by a root broker


def test_the_user_script_never_enters_the_job_script() -> None:
    spec = _spec(script="#SBATCH --exclusive\nrm -rf / # $(evil)")
    text = batch_script(spec, OPTIONS, NOW)
    assert "evil" not in text and "exclusive" not in text


def test_the_environment_is_set_inside_the_job_script_quoted() -> None:
    spec = _spec(environment={"FOO": "a b,c=$(x)"})
    environment = job_environment(spec)
    assert environment["FOO"] == "a b,c=$(x)"
    assert environment["EXECBROKER_SESSION"] == SESSION
    assert environment["EXECBROKER_CORES"] == "2"
    text = batch_script(spec, OPTIONS, NOW)
    assert "export FOO='a b,c=$(x)'\n" in text
    # sbatch exports its own, fixed environment (no login environment is loaded)
    assert _directives(text)["export"] == "ALL"
    assert set(environment) == {"PATH", "HOME", "LANG", "FOO"} | {
        f"EXECBROKER_{name}" for name in ("BROKER", "SESSION", "CORES", "MEMORY_GIB", "OUTPUTS")
    }
    # every export comes after the last directive: sbatch stops reading them at the first
    lines = text.splitlines()
    last_directive = max(i for i, line in enumerate(lines) if line.startswith("#SBATCH"))
    first_export = min(i for i, line in enumerate(lines) if line.startswith("export "))
    assert last_directive < first_export


TRICKY = {
    "QUOTES": "it's \"quoted\" '' \\",
    "SUBST": "$(touch /tmp/pwned) ${HOME} $HOME",
    "TICKS": "`id -u` ; exit 3 & | > /tmp/x",
    "LINES": "one\ntwo\n\n#SBATCH --exclusive\nexport X=1\n",
    "UNICODE": "caf\u00e9 \u2603 \t tab",
    "EMPTY": "",
}


def test_values_reach_the_shell_byte_exact(tmp_path: Path) -> None:
    """The job script's exports, run by /bin/sh as slurmd would: each value arrives as
    given, and nothing in one is run."""
    spec = _spec(environment=TRICKY, workdir=tmp_path / SESSION)
    text = batch_script(spec, OPTIONS, NOW)
    script = text.replace(f"exec /bin/sh {tmp_path}/{SESSION}/script.sh", "exec env -0")
    assert script != text
    shown = subprocess.run(
        ["/bin/sh", "-c", script], capture_output=True, check=True, env={}, cwd=tmp_path
    ).stdout
    found = dict(item.split(b"=", 1) for item in shown.split(b"\0") if item)
    for name, value in TRICKY.items():
        assert found[name.encode()] == value.encode(), name
    assert not (tmp_path / "pwned").exists() and not Path("/tmp/pwned").exists()


@pytest.mark.parametrize("name", ["A=B", "1X", "FOO\n", "A B", "", "X-Y", "\u00e9", "A" * 129])
def test_a_bad_name_is_refused_naming_the_field(name: str) -> None:
    with pytest.raises(InvalidRequest) as refused:
        _platform().check(BatchScript.model_construct(script="true", environment={name: "1"}))
    assert refused.value.field == f"executable.environment.{name}"
    assert f"executable.environment.{name}" in refused.value.message


def test_a_nul_byte_in_a_value_is_refused() -> None:
    with pytest.raises(ValueError, match="NUL"):  # the wire model refuses it first
        BatchScript(script="true", environment={"X": "a\0b"})
    executable = BatchScript.model_construct(script="true", environment={"X": "a\0b"})
    with pytest.raises(InvalidRequest) as refused:
        _platform().check(executable)
    assert refused.value.field == "executable.environment.X"
    with pytest.raises(PlatformError, match="NUL"):
        batch_script(_spec(environment={"X": "a\0b"}), OPTIONS, NOW)


def test_loader_variables_are_the_jobs_own_business() -> None:
    """LD_PRELOAD and the like act only inside the job, on the user's own processes under
    their own uid: allowed there (no broker command ever sees them)."""
    executable = BatchScript(script="true", environment={"LD_PRELOAD": "/x.so", "BASH_ENV": "/y"})
    assert _platform().check(executable) is None
    text = batch_script(_spec(environment={"LD_PRELOAD": "/x.so"}), OPTIONS, NOW)
    assert "export LD_PRELOAD=/x.so\n" in text


def test_our_variables_win_over_the_users() -> None:
    environment = job_environment(_spec(environment={"EXECBROKER_CORES": "64"}))
    assert environment["EXECBROKER_CORES"] == "2"


def test_account_and_partition_are_optional() -> None:
    spec = _spec()
    found = _directives(batch_script(spec, SlurmOptions(), NOW))
    assert "account" not in found and "partition" not in found


@pytest.mark.parametrize(
    ("duration", "minutes"),
    [
        (timedelta(seconds=1), 1),
        (timedelta(minutes=1), 1),
        (timedelta(minutes=1, seconds=1), 2),
        (timedelta(hours=2), 120),
    ],
)
def test_time_limit_rounds_up_to_minutes(duration: timedelta, minutes: int) -> None:
    assert time_limit_minutes(NOW + duration, NOW, NOW) == minutes


def test_time_limit_counts_what_is_left_when_launched_late() -> None:
    late = NOW + timedelta(minutes=4)
    assert time_limit_minutes(NOW + timedelta(minutes=10), NOW, late) == 6


def test_begin_only_for_a_start_ahead() -> None:
    assert begin_time(NOW, NOW) is None
    assert begin_time(NOW + timedelta(seconds=1), NOW) is None
    assert begin_time(NOW + timedelta(seconds=30, microseconds=1), NOW) == "now+31"
    # counted from the whole second sbatch sees, so never early
    assert begin_time(NOW + timedelta(seconds=3), NOW + timedelta(seconds=0.9)) == "now+3"
    spec = _spec(start=NOW + timedelta(seconds=30))
    found = _directives(batch_script(spec, OPTIONS, NOW))
    assert found["begin"] == "now+30"


def test_unsafe_workdir_is_refused() -> None:
    spec = _spec(workdir=Path("/var/my sessions/x"))
    with pytest.raises(PlatformError, match="plain path"):
        batch_script(spec, OPTIONS, NOW)


def test_zero_memory_or_cores_is_refused() -> None:
    with pytest.raises(PlatformError, match="memory"):
        batch_script(_spec(memory=0), OPTIONS, NOW)
    with pytest.raises(PlatformError, match="core"):
        batch_script(_spec(cores=0), OPTIONS, NOW)


def test_check_refuses_other_kinds_and_slurm_variables() -> None:
    platform = _platform()
    assert platform.check(BatchScript(script="true")) is None
    assert "batch-script" in (platform.check(DockerContainer()) or "")
    reason = platform.check(BatchScript(script="true", environment={"SBATCH_EXCLUSIVE": "1"}))
    assert reason is not None and "executable.environment.SBATCH_EXCLUSIVE" in reason


def test_parse_job_id() -> None:
    assert parse_job_id("123\n") == "123"
    assert parse_job_id("123;cluster\n") == "123"
    with pytest.raises(PlatformError):
        parse_job_id("sbatch: error: nope")


def test_slurm_error_keeps_the_message() -> None:
    text = "sbatch: error: Batch job submission failed: Invalid account\n"
    assert slurm_error(text) == "Batch job submission failed: Invalid account"


def test_options_are_closed() -> None:
    broker = SimpleNamespace(name="b", state_path=Path("/tmp/b"))
    with pytest.raises(ValueError, match="sbatch_extra"):
        slurm.create({"sbatch_extra": ["--exclusive"]}, broker=broker)
    with pytest.raises(ValueError, match="account"):
        slurm.create({"account": "bad name; rm"}, broker=broker)


def test_a_state_dir_slurm_cannot_be_given_is_refused_at_start() -> None:
    broker = SimpleNamespace(name="b", state_path=Path("/tmp/my brokers/b"))
    with pytest.raises(ValueError, match="plain path"):
        slurm.create({}, broker=broker)
