"""``execbroker uws`` and ``execbroker tes``: a job and a task made and followed from the shell."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.brokers import running_broker


@pytest.fixture(scope="module")
def broker(tmp_path_factory):
    with running_broker(tmp_path_factory.mktemp("dialect-cli")) as process:
        yield process


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "execbroker.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={"EXECBROKER_TOKEN": "demo-alice", "PATH": "/usr/bin:/bin", "COLUMNS": "200"},
    )


def test_uws_run_follows_a_job_to_its_results_and_show_prints_it(broker):
    done = cli(
        "uws", "run", "-b", broker.url, "-p", "script=echo from the uws cli", "-p", "cores=1"
    )
    assert done.returncode == 0, done.stdout + done.stderr
    found = re.search(r"UWS job (\S+/uws/jobs/([\w-]{36})): COMPLETED", done.stdout)
    assert found, done.stdout
    assert f"result stdout: {found[1]}/results/stdout" in done.stdout
    assert "from the uws cli" in done.stdout
    shown = cli("uws", "show", "-b", broker.url, found[2])
    assert shown.returncode == 0 and "COMPLETED" in shown.stdout, shown.stdout + shown.stderr


def test_uws_run_exits_1_when_the_job_ends_in_error(broker):
    done = cli("uws", "run", "-b", broker.url, "-p", "script=exit 3")
    assert done.returncode == 1, done.stdout + done.stderr
    assert re.search(r"UWS job \S+: ERROR", done.stdout)


def test_uws_run_names_a_bad_parameter(broker):
    done = cli("uws", "run", "-b", broker.url, "-p", "script=true", "-p", "colour=red")
    assert done.returncode == 1
    assert "colour: not a parameter of this service" in done.stdout


def test_tes_run_follows_a_task_and_show_prints_its_executors(broker, tmp_path: Path):
    task = tmp_path / "task.yaml"
    task.write_text(
        "name: from-cli\n"
        "executors:\n"
        "  - {image: alpine:3, command: [echo, first]}\n"
        "  - {image: alpine:3, command: [sh, -c, 'echo second; exit 0']}\n"
    )
    done = cli("tes", "run", "-b", broker.url, "-t", str(task))
    assert done.returncode == 0, done.stdout + done.stderr
    found = re.search(r"TES task ([\w-]{36}): COMPLETE", done.stdout)
    assert found, done.stdout
    assert "executor 1: exit code 0" in done.stdout and "second" in done.stdout
    shown = cli("tes", "show", "-b", broker.url, found[1])
    assert shown.returncode == 0 and "executor 0: exit code 0" in shown.stdout


def test_tes_show_of_another_users_task_is_refused(broker, tmp_path: Path):
    task = tmp_path / "task.yaml"
    task.write_text("executors: [{image: alpine:3, command: ['true']}]\n")
    done = cli("tes", "run", "-b", broker.url, "-t", str(task))
    task_id = re.search(r"TES task ([\w-]{36})", done.stdout)[1]
    other = cli("tes", "show", "-b", f"{broker.url}#demo-bob", task_id)
    assert other.returncode == 1 and "403" in other.stdout
