"""TES file:// URLs on a real broker (root, local platform) with per-user roots: a user's
tasks read and write their own root only, no link is followed out of it, and what the
broker writes belongs to the user's root's owner."""

from __future__ import annotations

import os
import stat

import pytest
import requests
import tes

from tests.brokers import running_broker
from tests.dialects.test_uws_tes import session, tes_client

ALICE_UID = 23571  # the owner of alice's root: what the broker's writes there must get
BOB_SECRET = "bob's secret\n"


@pytest.fixture(scope="module")
def roots_broker(tmp_path_factory):
    """A broker whose only root is ``roots/{user}``; alice's and bob's roots exist."""
    directory = tmp_path_factory.mktemp("file-roots")
    roots = directory / "roots"
    for user in ("alice", "bob"):
        (roots / user).mkdir(parents=True)
    os.chown(roots / "alice", ALICE_UID, ALICE_UID)
    (roots / "bob" / "secret").write_text(BOB_SECRET)
    (roots / "bob" / "results.txt").write_text("bob's results\n")
    (roots / "common").mkdir()
    shared = {"path": str(roots / "common"), "shared": True}
    config = {"tes": {"file_roots": [str(roots / "{user}"), shared]}}
    with running_broker(directory / "broker", **config) as broker:
        broker.roots = roots
        yield broker


def post_task(broker, document) -> requests.Response:
    return session().post(f"{broker.url}/ga4gh/tes/v1/tasks", json=document)


EXECUTORS = [{"image": "busybox:local", "command": ["true"]}]


def test_a_shared_root_is_a_warning_at_start_up_and_readable_by_all(roots_broker):
    roots = roots_broker.roots
    assert f"tes.file_roots: {roots / 'common'} is shared" in roots_broker.log_path.read_text()
    info = session().get(f"{roots_broker.url}/ga4gh/tes/v1/service-info").json()
    assert info["storage"] == [f"file://{roots}/{{user}}", f"file://{roots}/common"]
    (roots / "common" / "notes.txt").write_text("for all\n")
    for token in ("demo-alice", "demo-bob"):
        document = {
            "executors": EXECUTORS,
            "inputs": [{"path": "/in/n", "url": (roots / "common" / "notes.txt").as_uri()}],
        }
        answer = session(token).post(f"{roots_broker.url}/ga4gh/tes/v1/tasks", json=document)
        assert answer.status_code == 200, answer.text


def test_alice_can_neither_read_nor_write_bob_s_root(roots_broker):
    bob = roots_broker.roots / "bob"
    before = session().get(f"{roots_broker.url}/ga4gh/tes/v1/tasks").json()["tasks"]
    read = {
        "executors": EXECUTORS,
        "inputs": [
            {"path": "/in/a", "content": "x"},
            {"path": "/in/b", "url": f"{bob.as_uri()}/secret"},
        ],
    }
    answer = post_task(roots_broker, read)
    assert answer.status_code == 422, answer.text
    assert answer.json()["field"] == "inputs[1].url", answer.text
    assert BOB_SECRET not in answer.text
    write = {
        "executors": EXECUTORS,
        "outputs": [{"path": "/out/r", "url": f"{bob.as_uri()}/results.txt"}],
    }
    answer = post_task(roots_broker, write)
    assert answer.status_code == 422, answer.text
    assert answer.json()["field"] == "outputs[0].url", answer.text
    assert (bob / "results.txt").read_text() == "bob's results\n"
    after = session().get(f"{roots_broker.url}/ga4gh/tes/v1/tasks").json()["tasks"]
    assert len(after) == len(before)  # nothing half-created


# Links a user (who owns their root) may make there, each pointing out of it.
LINKS = {
    "a file link to bob's file": ("peek", "../bob/secret", "peek"),
    "a folder link to bob's root": ("bobs", "../bob", "bobs/secret"),
    "a folder link to /etc": ("etc", "/etc", "etc/hostname"),
}


@pytest.mark.parametrize("link", LINKS.values(), ids=list(LINKS))
def test_a_link_out_of_alice_s_root_is_not_followed_for_an_input(roots_broker, link):
    name, target, below = link
    alice = roots_broker.roots / "alice"
    (alice / name).symlink_to(target)
    try:
        document = {
            "executors": EXECUTORS,
            "inputs": [{"path": "/in/x", "url": f"{alice.as_uri()}/{below}"}],
        }
        answer = post_task(roots_broker, document)
        assert answer.status_code == 422, answer.text
        assert answer.json()["field"] == "inputs[0].url", answer.text
        assert "link" in answer.json()["detail"], answer.text
    finally:
        (alice / name).unlink()


OUT_LINKS = {
    "a folder link to bob's root": ("bobs", "../bob", "bobs/results.txt", "bob/results.txt"),
    "a folder link to /etc": ("etc", "/etc", "etc/execbroker-owned", "/etc/execbroker-owned"),
    "a file link to bob's file": ("mine", "../bob/results.txt", "mine", "bob/results.txt"),
}


@pytest.mark.parametrize("link", OUT_LINKS.values(), ids=list(OUT_LINKS))
def test_a_link_out_of_alice_s_root_is_not_followed_for_an_output(roots_broker, link):
    """The broker, root, must not write through a link in alice's root: a 422 naming the
    output at create, or (what the create cannot see) a SYSTEM_ERROR naming it at delivery;
    nothing outside changes either way."""
    name, target, below, victim = link
    roots, alice = roots_broker.roots, roots_broker.roots / "alice"
    victim_path = roots / victim
    before = victim_path.read_bytes() if victim_path.exists() else None
    (alice / name).symlink_to(target)
    try:
        document = {
            "executors": [
                {"image": "busybox:local", "command": ["sh", "-c", 'echo owned > "$TES_ROOT/o/r"']}
            ],
            "outputs": [{"path": "/o/r", "url": f"{alice.as_uri()}/{below}"}],
        }
        answer = post_task(roots_broker, document)
        if answer.status_code != 422:
            assert answer.status_code == 200, answer.text
            client = tes_client(roots_broker)
            done = client.wait(answer.json()["id"], timeout=60)
            full = client.get_task(done.id, view="FULL")
            assert done.state == "SYSTEM_ERROR", full.logs[0].system_logs
            assert any("outputs[0]" in line for line in full.logs[0].system_logs)
            assert full.logs[0].outputs == []
        else:
            assert answer.json()["field"] == "outputs[0].url", answer.text
        after = victim_path.read_bytes() if victim_path.exists() else None
        assert after == before
    finally:
        (alice / name).unlink()


def test_a_task_reads_and_writes_its_owner_s_root_and_the_files_are_theirs(roots_broker):
    """{user} roots end to end: alice's input is read from her root, her outputs (a new
    folder, a file) are written there as her root's owner's, 0640 (folders 0750)."""
    alice = roots_broker.roots / "alice"
    (alice / "in.txt").write_text("quiet\n")
    script = 'tr a-z A-Z < "$TES_ROOT/in/in.txt" > "$TES_ROOT/o/upper.txt"'
    client = tes_client(roots_broker)
    task = tes.Task(
        inputs=[tes.Input(path="/in/in.txt", url=f"{alice.as_uri()}/in.txt")],
        executors=[tes.Executor(image="busybox:local", command=["sh", "-c", script])],
        outputs=[tes.Output(path="/o/upper.txt", url=f"{alice.as_uri()}/new/deeper/upper.txt")],
    )
    done = client.wait(client.create_task(task), timeout=60)
    full = client.get_task(done.id, view="FULL")
    assert done.state == "COMPLETE", full.logs[0].system_logs
    written = alice / "new" / "deeper" / "upper.txt"
    assert written.read_text() == "QUIET\n"
    for path, mode in [(written, 0o640), (alice / "new", 0o750), (alice / "new/deeper", 0o750)]:
        info = path.lstat()
        assert (info.st_uid, info.st_gid) == (ALICE_UID, ALICE_UID), path
        assert stat.S_IMODE(info.st_mode) == mode, (path, oct(info.st_mode))
    assert [item.url for item in full.logs[0].outputs] == [written.as_uri()]


def test_a_file_someone_else_owns_in_alice_s_root_is_not_replaced(roots_broker):
    alice = roots_broker.roots / "alice"
    theirs = alice / "theirs.txt"
    theirs.write_text("not alice's\n")
    os.chown(theirs, ALICE_UID + 1, ALICE_UID + 1)
    client = tes_client(roots_broker)
    task = tes.Task(
        executors=[
            tes.Executor(image="busybox:local", command=["sh", "-c", 'echo x > "$TES_ROOT/o/r"'])
        ],
        outputs=[tes.Output(path="/o/r", url=theirs.as_uri())],
    )
    done = client.wait(client.create_task(task), timeout=60)
    full = client.get_task(done.id, view="FULL")
    assert done.state == "SYSTEM_ERROR", full.logs[0].system_logs
    assert any("outputs[0]" in line and "exists" in line for line in full.logs[0].system_logs)
    assert theirs.read_text() == "not alice's\n"
