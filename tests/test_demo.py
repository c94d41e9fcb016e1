"""``execbroker demo`` as a user runs it: a subprocess starting real brokers."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"


@pytest.fixture(autouse=True)
def _state_in_tmp_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The demo keeps a failed run's state and logs: under the test's own directory."""
    monkeypatch.setenv("TMPDIR", str(tmp_path))


def demo(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "execbroker.cli", "demo", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        check=False,
    )


def broker_urls(output: str) -> list[str]:
    return re.findall(r"^started \S+ at (http://127\.0\.0\.1:\d+)", output, re.MULTILINE)


def assert_all_stopped(urls: list[str]) -> None:
    assert urls
    for url in urls:
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"{url}/health", timeout=2)


def test_the_demo_runs_on_the_local_platform_alone() -> None:
    done = demo("--local-only")
    out = done.stdout
    assert done.returncode == 0, out + done.stderr
    assert "not starting desktop-1x: docker is not used (--local-only)" in out
    for name in ("account-001", "account-002", "account-003"):
        assert f"started {name} at http://127.0.0.1:" in out
    # cores: every broker offers, the largest grant wins, and says why
    assert re.search(r"accepted: offer \w{8} from account-003 \(4 cores, 8 GiB memory", out)
    assert "why: same start; more cores: 4 against 2 for the runner-up" in out
    assert "sum of primes below 20000: 21171191" in out
    # big: the two smaller platforms say NO, with their reasons
    assert "account-001 said NO:\n  - cores: minimum 3 exceeds this broker's quota of 1" in out
    assert "account-002 said NO:\n  - cores: minimum 3 exceeds this broker's quota of 2" in out
    # cheap: the policy decides
    assert "policy cheapest:" in out and "from account-002 (2 cores, 4 GiB memory" in out
    # overrun: the grant is enforced
    assert "FAILED" in out and "exceeded the granted duration" in out
    # the kind-only questions
    assert "not docker-container" in out and "no offers: a kind-only question" in out
    assert "skipped: docker is not used (--local-only)" in out
    # the same sessions through UWS and TES
    assert re.search(r"UWS job http://127\.0\.0\.1:\d+/uws/jobs/[\w-]{36}: COMPLETED", out)
    assert re.search(r"TES task [\w-]{36}: COMPLETE", out)
    # every task the plan runs without a service ran and ended as expected; the rest skipped
    tasks = yaml.safe_load((EXAMPLES / "demo.yaml").read_text())["tasks"]
    skipped = sum(1 for task in tasks if task.get("needs"))
    assert f"demo: all {len(tasks) - skipped} tasks ended as expected ({skipped} skipped)" in out
    assert_all_stopped(broker_urls(out))


def write_plan(tmp_path: Path, tasks: str, brokers: str | None = None) -> Path:
    plan = tmp_path / "plan.yaml"
    plan.write_text(
        f"""\
services_script: {ROOT / "scripts" / "services.sh"}
timeout: 30
brokers:
{brokers or f"  - config: {EXAMPLES / 'brokers' / 'account-001.yaml'}"}
tasks:
{tasks}
"""
    )
    return plan


def test_the_demo_runs_a_uws_job_and_a_tes_task(tmp_path: Path) -> None:
    """The plan's dialect entries: one broker's sessions as a UWS job and a TES task."""
    plan = yaml.safe_load((EXAMPLES / "demo.yaml").read_text())
    entries = [task for task in plan["tasks"] if task.get("dialect")]
    assert {task["dialect"] for task in entries} == {"uws", "tes"}
    for task in entries:
        task["file"] = str(EXAMPLES / task["file"])
        task["brokers"] = ["account-001"]
    tasks = "\n".join("  " + line for line in yaml.safe_dump(entries).splitlines())
    done = demo("--config", str(write_plan(tmp_path, tasks)))
    out = done.stdout
    assert done.returncode == 0, out + done.stderr
    assert re.search(r"UWS job created on account-001, PHASE=RUN: http://\S+/uws/jobs/", out)
    assert re.search(r"result stdout: http://\S+/uws/jobs/[\w-]{36}/results/stdout", out)
    assert "sum of 1..100: 5050" in out
    assert "executor 0: exit code 0" in out and "executor 1: exit code 0" in out
    assert "second executor read 23 bytes" in out
    assert "demo: all 2 tasks ended as expected" in out
    assert_all_stopped(broker_urls(out))


def test_a_dialect_task_that_ends_otherwise_fails_the_demo(tmp_path: Path) -> None:
    (tmp_path / "fails.yaml").write_text("script: 'echo oops; exit 3'\n")
    tasks = f"""\
  - name: fails
    dialect: uws
    file: {tmp_path / "fails.yaml"}
    expect: {{phase: COMPLETED}}
"""
    done = demo("--config", str(write_plan(tmp_path, tasks)))
    out = done.stdout
    assert done.returncode == 1, out + done.stderr
    assert "NOT as expected: expected it to end COMPLETED, it ended ERROR" in out


@pytest.mark.docker
def test_the_demo_proves_a_docker_connector_answers(tmp_path: Path) -> None:
    """The plan's docker entries alone (the local brokers' NO is the other test's)."""
    brokers = f"""\
  - config: {EXAMPLES / "brokers" / "desktop-1x.yaml"}
    needs: [docker]
"""
    plan = yaml.safe_load((EXAMPLES / "demo.yaml").read_text())
    web = next(task for task in plan["tasks"] if task["name"] == "web")
    web["file"] = str(EXAMPLES / web["file"])
    tasks = "\n".join("  " + line for line in yaml.safe_dump([web]).splitlines())
    done = demo("--config", str(write_plan(tmp_path, tasks, brokers)))
    out = done.stdout
    assert done.returncode == 0, out + done.stderr
    assert re.search(r"accepted: offer \w{8} from desktop-1x", out)
    assert re.search(r"GET http://127\.0\.0\.1:\d+/ -> 200 \(\d+ bytes\)", out)
    assert "cancelling it: it has shown what it serves" in out
    assert "demo: all 1 task ended as expected" in out
    assert_all_stopped(broker_urls(out))


def test_unexpected_outcomes_fail_the_demo_and_missing_services_skip(tmp_path: Path) -> None:
    brokers = f"""\
  - config: {EXAMPLES / "brokers" / "account-001.yaml"}
  - config: {EXAMPLES / "brokers" / "account-002.yaml"}
    needs: [warp-drive]
"""
    tasks = f"""\
  - name: asks
    kind: batch-script
    expect: {{answers: {{account-001: "YES", account-002: "NO"}}}}
  - name: needs-warp
    kind: batch-script
    needs: [warp-drive]
  - name: wrong
    kind: docker-container
    expect: {{result: "YES"}}
  - name: slow
    file: {tmp_path / "slow.yaml"}
    timeout: 1
"""
    (tmp_path / "slow.yaml").write_text(
        "executable: {kind: batch-script, script: 'sleep 60'}\n"
        "schedule: {requested: {duration: PT5M}}\n"
    )
    done = demo("--config", str(write_plan(tmp_path, tasks, brokers)))
    out = done.stdout
    assert done.returncode == 1, out + done.stderr
    assert "not starting account-002: warp-drive is not up" in out
    assert "skipped: warp-drive is not up" in out
    assert "NOT as expected: expected a YES from some broker, got NO" in out
    # a task that goes wrong is reported (its session cancelled) and the demo goes on
    assert re.search(
        r"NOT as expected: WaitTimeout: session [\w-]+ is still \w+ after [\d.]+s", out
    )
    assert re.search(r"cancelled session [\w-]{36} on account-001", out)
    assert "demo: 2 of 3 tasks did not end as expected (1 skipped)" in out
    assert_all_stopped(broker_urls(out))


def test_ctrl_c_cancels_the_running_session_and_stops_the_brokers(tmp_path: Path) -> None:
    tasks = f"""\
  - name: long
    file: {tmp_path / "long.yaml"}
"""
    (tmp_path / "long.yaml").write_text(
        "executable: {kind: batch-script, script: 'sleep 60'}\n"
        "schedule: {requested: {duration: PT5M}}\n"
    )
    plan = write_plan(tmp_path, tasks)
    process = subprocess.Popen(
        [sys.executable, "-m", "execbroker.cli", "demo", "--config", str(plan)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=ROOT,
    )
    lines: list[str] = []
    assert process.stdout is not None
    deadline = time.monotonic() + 60
    for line in process.stdout:
        lines.append(line)
        if "RUNNING" in line or time.monotonic() > deadline:
            break
    process.send_signal(signal.SIGINT)
    rest, _ = process.communicate(timeout=60)
    out = "".join(lines) + rest
    assert process.returncode == 130, out
    assert "interrupted: cancelling sessions and stopping the brokers" in out
    assert re.search(r"cancelled session [\w-]{36} on account-001", out)
    assert "stopped 1 broker(s)" in out
    assert_all_stopped(broker_urls(out))
