"""The local platform holds a task to its grant: cores, memory and time."""

from __future__ import annotations

import os

from tests.brokers import batch_request, running_broker, wait_for_phase


def test_grant_is_enforced_on_the_process(tmp_path):
    script = (
        'echo "cpus=$(nproc) cores=$EXECBROKER_CORES"\n'
        "python3 -c 'bytearray(3 * 1024**3)' && echo allocated || echo refused\n"
    )
    with running_broker(tmp_path) as broker, broker.client() as client:
        session = client.post("/direct", json=batch_request(script, duration="PT1M")).json()
        done = wait_for_phase(client, session["meta"]["uuid"], {"COMPLETED", "FAILED"})
        assert done["phase"] == "COMPLETED"
        stdout = client.get(f"/sessions/{session['meta']['uuid']}/logs").json()["stdout"]
    assert f"cpus={min(1, os.cpu_count())} cores=1" in stdout
    assert "refused" in stdout  # 3 GiB does not fit a 1 GiB grant


def test_environment_is_passed_and_script_text_is_never_a_command_line(tmp_path):
    hostile = "$(touch pwned); `touch pwned2`; ' \" ;"
    request = batch_request('printf "%s" "$GREETING"', duration="PT1M")
    request["executable"]["environment"] = {"GREETING": hostile}
    with running_broker(tmp_path) as broker, broker.client() as client:
        session = client.post("/direct", json=request).json()
        wait_for_phase(client, session["meta"]["uuid"], {"COMPLETED"})
        assert client.get(f"/sessions/{session['meta']['uuid']}/logs").json()["stdout"] == hostile
    work = tmp_path / "state" / "sessions" / session["meta"]["uuid"]  # the task's HOME and cwd
    assert (work / "script.sh").exists()
    assert not (work / "pwned").exists() and not (work / "pwned2").exists()
