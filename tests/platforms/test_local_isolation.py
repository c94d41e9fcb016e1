"""Attacks on the local platform through the HTTP API alone: one user's task against another
user's running session, against the broker (its config, database, environment, processes)
and against its own runner; and a task's processes outliving their session or its grant."""

from __future__ import annotations

import os
import shutil
import tempfile
import time
import uuid as uuids
from pathlib import Path

import pytest

from execbroker.launcher import BrokerError
from tests.brokers import BASE_CONFIG, batch_request, running_broker, update, wait_for_phase

FINAL = {"COMPLETED", "FAILED", "CANCELLED"}
SECRET_ENV = "EXECBROKER_TEST_SECRET"


def _run(client, script: str, **request) -> str:
    answer = client.post("/direct", json=batch_request(script, **request))
    assert answer.status_code == 200, answer.text
    return answer.json()["meta"]["uuid"]


def _logs(client, uuid: str) -> dict[str, str]:
    return client.get(f"/sessions/{uuid}/logs").raise_for_status().json()


def _wait_for_output(client, uuid: str, text: str, timeout: float = 30) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        stdout = _logs(client, uuid)["stdout"]
        if text in stdout:
            return stdout
        time.sleep(0.1)
    raise AssertionError(f"{uuid} never printed {text!r}: {_logs(client, uuid)}")


def _runner_pid(state: Path, uuid: str) -> int:
    for where in (state / "local" / uuid, state / "sessions" / uuid):  # new layout, old one
        if (where / "runner.pid").exists():
            return int((where / "runner.pid").read_text())
    raise AssertionError(f"no runner.pid for {uuid}")


def _processes_with(marker: str) -> list[int]:
    """Pids whose command line holds ``marker`` (the test's unique sleep duration)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if marker.encode() in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def _gone(marker: str, timeout: float = 10) -> bool:
    deadline = time.monotonic() + timeout
    while _processes_with(marker) and time.monotonic() < deadline:
        time.sleep(0.1)
    left = _processes_with(marker)
    for pid in left:  # never leave them behind, even when the test fails
        os.kill(pid, 9)
    return not left


def test_bobs_task_reaches_nothing_of_alice_nor_of_the_broker(tmp_path, monkeypatch):
    monkeypatch.setenv(SECRET_ENV, "env-secret-4711")
    state = tmp_path / "state"
    with (
        running_broker(tmp_path) as broker,
        broker.client("demo-alice") as alice,
        broker.client("demo-bob") as bob,
    ):
        mine = _run(alice, "id -u; echo alice-secret-0815 >&2; echo alice-file > mine; sleep 120")
        alice_uid = int(_wait_for_output(alice, mine, "\n").split()[0])
        alice_runner = _runner_pid(state, mine)
        work = state / "sessions" / mine
        attack = f"""
id -u
for f in ../../*/stdout.log ../../*/stderr.log ../*/mine ../../*/*/stderr.log \
    ../../../broker.yaml ../../broker.db {state}/local/{mine}/stderr.log \
    {state}/sessions/{mine}/stderr.log {state}/sessions/{mine}/mine {work}/mine \
    {broker.config_path} {state}/broker.db /etc/shadow \
    /proc/$PPID/environ /proc/$PPID/cmdline /proc/1/environ /proc/1/cmdline; do
  cat "$f" 2>/dev/null | tr '\\0' '\\n'
done
for p in /proc/[0-9]*; do
  cat $p/environ $p/cmdline 2>/dev/null | tr '\\0' '\\n'
  cat $p/cwd/../../broker.yaml $p/cwd/broker.yaml $p/root{broker.config_path} 2>/dev/null
done
kill -TERM {alice_runner} 2>/dev/null && echo signalled-alice
kill -TERM {broker.process.pid} 2>/dev/null && echo signalled-broker
kill -TERM $PPID 2>/dev/null && echo signalled-parent
kill -TERM 1 2>/dev/null && echo signalled-init
sleep 1
echo bob-done
"""
        theirs = _run(bob, attack, duration="PT1M")
        done = wait_for_phase(bob, theirs, FINAL, timeout=60)
        stdout = _logs(bob, theirs)["stdout"]
        assert "bob-done" in stdout, (done, stdout)
        assert done["phase"] == "COMPLETED", done  # its runner was not stopped by the task
        bob_uid = int(stdout.split()[0])
        assert alice_uid not in (0, os.geteuid())
        assert bob_uid not in (0, os.geteuid(), alice_uid)
        for leaked in ("alice-secret-0815", "alice-file", "demo-admin", "demo-alice",
                       "SQLite format", "env-secret-4711", "root:"):  # fmt: skip
            assert leaked not in stdout, leaked
        assert "signalled" not in stdout
        assert alice.get(f"/sessions/{mine}").json()["phase"] == "RUNNING"
        assert broker.process.poll() is None
        assert work.stat().st_uid == alice_uid and (work.stat().st_mode & 0o077) == 0
        update(alice, mine, "CANCELLED")
        wait_for_phase(alice, mine, {"CANCELLED"})


@pytest.mark.parametrize("end", ["cancel", "deadline", "exit"])
def test_daemons_are_gone_when_the_session_ends(tmp_path, end):
    marker = f"7{uuids.uuid4().int % 10**6:06d}.5"  # a sleep duration no one else uses
    tail = "echo started" if end == "exit" else "echo started; sleep 300"
    script = f"setsid sleep {marker} & (sleep {marker} &) ; nohup sleep {marker} & {tail}"
    with running_broker(tmp_path) as broker, broker.client() as client:
        uuid = _run(client, script, duration="PT8S" if end == "deadline" else "PT2M")
        _wait_for_output(client, uuid, "started")
        if end != "exit":
            assert len(_processes_with(marker)) == 3
        if end == "cancel":
            assert update(client, uuid, "CANCELLED").status_code == 200
        done = wait_for_phase(client, uuid, FINAL, timeout=60)
        expected = {"cancel": "CANCELLED", "deadline": "FAILED", "exit": "COMPLETED"}[end]
        assert done["phase"] == expected, done
        assert _gone(marker), f"processes of session {uuid} outlived it"


FORKS = """
import os, sys, time
made = 0
try:
    while made < 600:
        if os.fork() == 0:
            time.sleep(20)
            os._exit(0)
        made += 1
except OSError:
    pass
print("forked", made, flush=True)
"""


def _refused_forks(events: Path) -> int:
    try:
        return int(events.read_text().split()[1])  # "max N": forks refused at pids.max
    except (FileNotFoundError, IndexError, ValueError):
        return 0


def test_a_fork_bomb_is_bounded_and_the_session_still_ends(tmp_path):
    with running_broker(tmp_path) as broker, broker.client() as client:
        counted = _run(client, f"python3 -c '{FORKS}'", duration="PT1M")
        wait_for_phase(client, counted, FINAL, timeout=60)
        made = int(_wait_for_output(client, counted, "forked").split()[1])
        assert made < 512, made  # the default max_processes
        bomb = _run(client, "bomb() { bomb | bomb & }; bomb; sleep 300", duration="PT1M")
        wait_for_phase(client, bomb, {"RUNNING"})
        events = Path(f"/sys/fs/cgroup/pids/execbroker-{bomb}/pids.events")
        deadline = time.monotonic() + 30
        while _refused_forks(events) == 0 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _refused_forks(events) > 0  # it hit pids.max: bounded
        assert client.get("/health").status_code == 200
        assert update(client, bomb, "CANCELLED").status_code == 200
        assert wait_for_phase(client, bomb, FINAL, timeout=60)["phase"] == "CANCELLED"
        groups = list(Path("/sys/fs/cgroup/pids").glob(f"**/execbroker-{bomb}"))
        assert groups == []  # the session's cgroups are gone with it


def test_an_allocation_past_the_grant_fails_the_session_saying_so(tmp_path):
    script = "python3 -c 'import time; b = bytearray(2 * 1024**3); time.sleep(1)'"
    with running_broker(tmp_path) as broker, broker.client() as client:
        uuid = _run(client, script, memory=(1, 1), duration="PT1M")
        done = wait_for_phase(client, uuid, FINAL, timeout=60)
    assert done["phase"] == "FAILED"
    assert "out of memory: the grant is 1 GiB" in done["meta"]["messages"][-1]["message"]


def test_a_broker_that_cannot_isolate_its_users_refuses_to_start(tmp_path):
    platforms = [{"type": "local", "run_as": {"create": False}}]
    with pytest.raises(BrokerError) as refused, running_broker(tmp_path, platforms=platforms):
        pass
    assert "will not run several users' tasks under one uid" in str(refused.value)
    assert "run_as: {shared: true}" in str(refused.value)
    shared = [{"type": "local", "run_as": {"shared": True}}]
    with running_broker(tmp_path / "shared", platforms=shared) as broker:
        assert "run_as.shared is set" in broker.log_path.read_text()
    assert BASE_CONFIG["platforms"] == [{"type": "local"}]


def test_the_users_environment_reaches_the_task_and_never_the_root_sandbox_tool(tmp_path):
    request = batch_request('echo "probe=$EB_PROBE"; sleep 120', duration="PT2M")
    request["executable"]["environment"] = {"EB_PROBE": "xyz-42", "LD_PRELOAD": "/task/evil.so"}
    with running_broker(tmp_path) as broker, broker.client() as client:
        uuid = client.post("/direct", json=request).json()["meta"]["uuid"]
        _wait_for_output(client, uuid, "probe=xyz-42")
        workdir = str(tmp_path / "state" / "sessions" / uuid).encode()
        outside = [  # bwrap, root, before it becomes the task's account
            entry
            for entry in Path("/proc").iterdir()
            if entry.name.isdigit() and workdir in _read(entry / "cmdline")
        ]
        assert outside, "no sandbox process found"
        for entry in outside:
            assert b"EB_PROBE" not in _read(entry / "environ")
            assert b"LD_PRELOAD" not in _read(entry / "environ")
        update(client, uuid, "CANCELLED")
        wait_for_phase(client, uuid, FINAL)


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError:
        return b""


def test_what_lies_under_tmp_on_the_host_is_still_bound_into_the_sandbox(tmp_path):
    """A clone (and its venv) may live under /tmp: the sandbox's own /tmp must not hide the
    read-only directories bound into it, such as the python that runs notebooks."""
    import subprocess

    from execbroker.platforms import sandbox

    tools = Path(tempfile.mkdtemp(prefix="eb-sandbox-", dir="/tmp"))
    try:
        tools.chmod(0o755)
        hello = tools / "hello"
        hello.write_text("#!/bin/sh\necho hello from under /tmp\n")
        hello.chmod(0o755)
        work = tmp_path / "work"
        work.mkdir()
        argv = sandbox.command(
            [str(hello)],
            workdir=work,
            account=None,
            environment={"PATH": "/usr/bin:/bin"},
            read_only=[tools],
        )
        done = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
        assert done.stdout.strip() == "hello from under /tmp", done.stderr
    finally:
        shutil.rmtree(tools)


REACH = """python3 - <<'END'
import socket
for name, port in (("broker", {broker}), ("alice", {alice}), ("own", {own})):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
        print(name, "reached")
    except OSError as error:
        print(name, "unreached", type(error).__name__)
END
"""
SERVE = """python3 - <<'END'
import socket, time
server = socket.socket()
server.bind(("127.0.0.1", {port}))
server.listen()
print("listening", flush=True)
time.sleep({seconds})
END"""


@pytest.mark.parametrize("network", [None, "host"])
def test_a_task_reaches_no_port_of_the_host_unless_the_config_says_host(tmp_path, network):
    """By default a batch task has a network of its own (its loopback alone): not the
    broker's port, not a port another user's task listens on. ``network: host`` is the
    one line that gives tasks the host's network back."""
    platform = {"type": "local"} if network is None else {"type": "local", "network": network}
    with (
        running_broker(tmp_path, platforms=[platform]) as broker,
        broker.client("demo-alice") as alice,
        broker.client("demo-bob") as bob,
    ):
        port, own = 20000 + os.getpid() % 20000, 40000 + os.getpid() % 20000
        mine = _run(alice, SERVE.format(port=port, seconds=120), duration="PT2M")
        _wait_for_output(alice, mine, "listening")
        script = f"(\n{SERVE.format(port=own, seconds=5)}\n) &\nsleep 1\n" + REACH.format(
            broker=broker.url.rsplit(":", 1)[1].rstrip("/"), alice=port, own=own
        )
        theirs = _run(bob, script, duration="PT1M")
        wait_for_phase(bob, theirs, FINAL, timeout=60)
        stdout = _logs(bob, theirs)["stdout"]
        update(alice, mine, "CANCELLED")
        wait_for_phase(alice, mine, {"CANCELLED"})
    reached = "unreached" if network is None else "reached"
    assert f"broker {reached}" in stdout and f"alice {reached}" in stdout, stdout
    assert "own reached" in stdout, stdout  # its own loopback works either way
