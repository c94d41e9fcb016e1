"""Issue 9, part 3, on the real cluster: a Slurm job carries its user's environment inside
itself, never in the broker's commands, and runs as that user's unprivileged account.

Through real broker processes (root, as in CI), whose users' accounts are made by the
broker itself (``run_as.create``, the default): a fixed broker name keeps them the same
accounts from run to run. The attacks are those of the issue: an ``LD_PRELOAD`` in the
environment ran inside the broker's ``sbatch`` as root, and the job itself ran as uid 0.
"""

from __future__ import annotations

import os
import pwd
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
import yaml

from execbroker.platforms import slurm, slurm_job
from execbroker.platforms.accounts import account_name
from tests.brokers import BrokerProcess, accept, batch_request, wait_for_phase
from tests.platforms.slurm_support import ensure_test_accounts, enterable_dir, private_umask

pytestmark = pytest.mark.slurm

EXAMPLE = Path(__file__).parents[2] / "examples" / "brokers" / "slurm-account-003.yaml"
BROKER = "eb-slurm-isolation-test"
ACCOUNT = yaml.safe_load(EXAMPLE.read_text())["platforms"][0]["account"]  # the broker's
FINAL = {"COMPLETED", "FAILED", "CANCELLED"}

PRELOAD_C = r"""
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Says which program loaded it, as whom, in the file EB_PRELOAD_LOG names. */
__attribute__((constructor)) static void said(void) {
    const char *where = getenv("EB_PRELOAD_LOG");
    char comm[64] = "?", line[160];
    int fd = open("/proc/self/comm", O_RDONLY);
    if (fd >= 0) {
        ssize_t n = read(fd, comm, sizeof comm - 1);
        comm[n > 0 ? n - 1 : 0] = 0;
        close(fd);
    }
    if (!where) return;
    fd = open(where, O_WRONLY | O_APPEND | O_CREAT, 0666);
    if (fd < 0) return;
    snprintf(line, sizeof line, "%s %d\n", comm, (int)getuid());
    write(fd, line, strlen(line));
    close(fd);
}
"""


@pytest.fixture(scope="module")
def base() -> Iterator[Path]:
    with enterable_dir("eb-slurm-isolation-") as directory:
        yield directory


@pytest.fixture(scope="module")
def broker(base: Path) -> Iterator[BrokerProcess]:
    partition = os.environ.get("EXECBROKER_SLURM_PARTITION")
    if not partition:
        pytest.fail("EXECBROKER_SLURM_PARTITION unset: run scripts/services.sh up slurm")
    config: dict[str, Any] = yaml.safe_load(EXAMPLE.read_text())
    config["name"] = BROKER
    config["platforms"][0]["partition"] = partition
    config["monitor"] = {"interval": "PT0.2S"}
    config.pop("state_dir", None)
    (base / "broker").mkdir(mode=0o711)  # the jobs pass through it to their directories
    (base / "broker").chmod(0o711)
    with private_umask():  # the broker's config (tokens) and log: its own alone
        broker = BrokerProcess(config, base / "broker").start()
    try:
        yield broker
    finally:
        broker.stop()
    listing = subprocess.run(
        ["squeue", "-h", "-o", "%i|%j"], capture_output=True, text=True, timeout=30, check=False
    )
    for line in listing.stdout.splitlines():  # a failed test leaves no job on the node
        job, _, name = line.partition("|")
        if name.startswith(slurm_job.job_name(BROKER, "")):
            subprocess.run(["scancel", job], check=False, timeout=30)


def _run(client: httpx.Client, request: dict[str, Any]) -> dict[str, Any]:
    answer = client.post("/requests", json=request)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["result"] == "YES", body
    uuid = body["offers"][0]["meta"]["uuid"]
    accept(client, uuid).raise_for_status()
    return wait_for_phase(client, uuid, FINAL, timeout=120)


def _stdout(client: httpx.Client, session: dict[str, Any]) -> str:
    return client.get(f"/sessions/{session['meta']['uuid']}/logs").json()["stdout"]


def test_ld_preload_never_reaches_the_brokers_sbatch(broker: BrokerProcess, base: Path) -> None:
    library, marks = base / "preload" / "mark.so", base / "preload" / "marks"
    library.parent.mkdir(mode=0o777)
    library.parent.chmod(0o1777)  # the job's account appends its own mark
    source = library.with_suffix(".c")
    source.write_text(PRELOAD_C)
    subprocess.run(
        ["gcc", "-shared", "-fPIC", "-o", str(library), str(source)], check=True, timeout=120
    )
    library.chmod(0o755)
    request = batch_request("/bin/true", duration="PT2M")
    request["executable"]["environment"] = {
        "LD_PRELOAD": str(library),
        "EB_PRELOAD_LOG": str(marks),
    }
    with broker.client() as client:
        done = _run(client, request)
    assert done["phase"] == "COMPLETED", done["meta"]["messages"]
    seen = [line.split() for line in marks.read_text().splitlines()]
    assert [comm for comm, _ in seen if comm == "sbatch"] == [], seen
    assert all(uid != "0" for _, uid in seen), seen
    # it did reach the job, where it runs only the user's own processes, as their account
    alice = pwd.getpwnam(account_name(BROKER, "alice"))
    assert ["true", str(alice.pw_uid)] in seen, seen


TRICKY = {
    "QUOTES": "it's \"quoted\" '' \\ \\\\",
    "SUBST": "$(touch pwned) ${HOME} $HOME",
    "TICKS": "`touch pwned` ; exit 3 & | > x",
    "LINES": "one\ntwo\n\n#SBATCH --exclusive\nexport X=1\n",
    "UNICODE": "caf\u00e9 \u2603 \t tab \x7f",
}


def test_values_arrive_in_the_job_byte_exact(broker: BrokerProcess) -> None:
    script = "mkdir -p ../outputs\n" + "".join(
        f'printf %s "${name}" > ../outputs/{name}\n' for name in TRICKY
    )
    request = batch_request(script + "ls\n", duration="PT2M")
    request["executable"]["environment"] = TRICKY
    with broker.client() as client:
        done = _run(client, request)
        assert done["phase"] == "COMPLETED", done["meta"]["messages"]
        uuid = done["meta"]["uuid"]
        for name, value in TRICKY.items():  # copied back: the broker serves them to alice
            got = client.get(f"/sessions/{uuid}/outputs/{name}")
            assert got.status_code == 200, got.text
            assert got.content == value.encode(), name
        assert _stdout(client, done) == "", "nothing in a value ran"
        with broker.client("demo-bob") as bob:
            assert bob.get(f"/sessions/{uuid}/outputs/QUOTES").status_code in (403, 404)


@pytest.mark.parametrize("name", ["A=B", "1X", "FOO\n", "A B"])
def test_a_bad_name_is_refused_naming_the_field(broker: BrokerProcess, name: str) -> None:
    request = batch_request("true", duration="PT1M")
    request["executable"]["environment"] = {name: "x"}
    with broker.client() as client:
        answer = client.post("/requests", json=request)
    assert answer.status_code == 422, answer.text
    assert "executable.environment" in answer.text
    assert repr(name)[1:-1] in answer.text or name in answer.text, answer.text


def test_slurms_own_variables_are_refused_naming_them(broker: BrokerProcess) -> None:
    request = batch_request("true", duration="PT1M")
    request["executable"]["environment"] = {"SBATCH_EXCLUSIVE": "1", "OK": "1"}
    with broker.client() as client:
        body = client.post("/requests", json=request).raise_for_status().json()
    assert body["result"] == "NO"
    assert "executable.environment.SBATCH_EXCLUSIVE" in str(body["meta"]["messages"])


def test_jobs_run_as_each_users_own_unprivileged_account(broker: BrokerProcess) -> None:
    request = batch_request("id -u; id -g", duration="PT2M")
    uids = {}
    for user, token in (("alice", "demo-alice"), ("bob", "demo-bob")):
        with broker.client(token) as client:
            done = _run(client, request)
            assert done["phase"] == "COMPLETED", done["meta"]["messages"]
            uid, gid = _stdout(client, done).split()
        account = pwd.getpwnam(account_name(BROKER, user))
        assert (int(uid), int(gid)) == (account.pw_uid, account.pw_gid)
        uids[user] = int(uid)
    assert 0 not in uids.values() and os.geteuid() not in uids.values()
    assert uids["alice"] != uids["bob"]


def test_alice_cannot_read_bobs_work_dir_nor_the_brokers_state(
    broker: BrokerProcess, base: Path
) -> None:
    state = base / "broker" / "state"
    with broker.client("demo-bob") as bob:
        done = _run(bob, batch_request("echo bob-secret > secret; echo ok", duration="PT2M"))
        assert done["phase"] == "COMPLETED", done["meta"]["messages"]
        assert _stdout(bob, done) == "ok\n"
    bobs = state / "sessions" / done["meta"]["uuid"]
    probes = {
        "workdir": f"ls {bobs}",
        "secret": f"cat {bobs}/work/secret",
        "log": f"cat {bobs}/stdout.log",
        "sessions": f"ls {state}/sessions",
        "database": f"cat {state}/broker.db",
    }
    script = "".join(f'{cmd} >/dev/null 2>&1 && echo "{name} read" || echo "{name} refused"\n'
                     for name, cmd in probes.items())  # fmt: skip
    with broker.client("demo-alice") as alice:
        done = _run(alice, batch_request(script, duration="PT2M"))
        assert done["phase"] == "COMPLETED", done["meta"]["messages"]
        said = _stdout(alice, done).splitlines()
    assert said == [f"{name} refused" for name in probes], said
    assert (bobs / "work" / "secret").read_text() == "bob-secret\n"  # it was there to read
    assert oct(bobs.stat().st_mode & 0o777) == oct(0o700)


def test_a_job_cannot_submit_jobs_of_its_own_to_the_brokers_account(broker: BrokerProcess) -> None:
    """A task is in the broker's Slurm account (its account is associated with it, or no job
    of it would run): by itself it could sbatch or salloc more jobs there, past its grant and
    the broker's quota. The cluster takes jobs for the brokers' accounts from root alone."""
    own = slurm_job.job_name(BROKER, "own")
    tries = {
        "default": f"sbatch --parsable -J {own} --wrap 'sleep 60'",
        "named": f"sbatch --parsable -J {own} --account={ACCOUNT} --wrap 'sleep 60'",
        "salloc": f"salloc --no-shell -J {own} --immediate=5",
    }
    script = "".join(f'{command} >/dev/null 2>err && echo "{name} ran" || echo "{name} refused"\n'
                     f"grep -q 'brokers alone' err || echo '{name}: not by the policy'\n"
                     for name, command in tries.items())  # fmt: skip
    with broker.client("demo-alice") as alice:
        done = _run(alice, batch_request(script, duration="PT2M"))
        assert done["phase"] == "COMPLETED", done["meta"]["messages"]
        said = _stdout(alice, done).splitlines()
    queued = subprocess.run(
        ["squeue", "-h", "-n", own, "-o", "%i"], capture_output=True, text=True, timeout=30
    ).stdout.split()
    for job in queued:
        subprocess.run(["scancel", job], check=False, timeout=30)
    assert said == [f"{name} refused" for name in tries], said
    assert queued == []


def test_a_link_in_place_of_the_log_is_not_followed(broker: BrokerProcess, base: Path) -> None:
    """The job owns its directory: a link it puts in its log's place must not make the
    (root) broker serve a file the job could not read itself."""
    secret = base / "root-only"
    secret.write_text("root's secret\n")
    secret.chmod(0o600)
    script = f"cd ..; rm -f stdout.log stderr.log; ln -s {secret} stdout.log; mkfifo stderr.log\n"
    with broker.client() as client:
        done = _run(client, batch_request(script, duration="PT2M"))
        assert done["phase"] == "COMPLETED", done["meta"]["messages"]
        logs = client.get(f"/sessions/{done['meta']['uuid']}/logs", timeout=10)
    assert logs.status_code == 200
    assert "secret" not in logs.text


# -- refusals at start-up ---------------------------------------------------------------


def _create(
    state: Path, run_as: dict[str, Any], users: tuple[str, ...] = ("alice", "bob"), **options: Any
) -> slurm.SlurmPlatform:
    broker = SimpleNamespace(
        name=BROKER, state_path=state, users=[SimpleNamespace(name=user) for user in users]
    )
    return slurm.create({"account": ACCOUNT, "run_as": run_as} | options, broker=broker)


@contextmanager
def _account_outside_the_rule() -> Iterator[str]:
    """A Slurm account the cluster's job_submit rule does not cover (it names the brokers'
    accounts of scripts/services.sh): one whose jobs any associated user may submit."""
    name = "eb-open-test"
    sacctmgr = ["sacctmgr", "-i"]
    subprocess.run([*sacctmgr, "add", "account", name], capture_output=True, timeout=60)
    try:
        yield name
    finally:
        subprocess.run([*sacctmgr, "delete", "user", "where", f"account={name}"],
                       capture_output=True, timeout=60)  # fmt: skip
        subprocess.run([*sacctmgr, "delete", "account", name], capture_output=True, timeout=60)


def test_a_broker_whose_tasks_could_submit_jobs_refuses_to_start_unless_told(base: Path) -> None:
    """Every broker here starts on accounts the cluster's rule covers (the other tests); on
    one it does not, a task could submit jobs of its own: refused, unless the config says."""
    with _account_outside_the_rule() as account:
        with pytest.raises(ValueError, match="a task could submit jobs of its own") as refused:
            _create(base / "open-cluster", {}, users=("alice",), account=account)
        assert f"jobs for account {account}" in str(refused.value), refused.value
        assert "tasks_may_submit: true" in str(refused.value), refused.value
        told = _create(base / "told", {}, users=("alice",), account=account, tasks_may_submit=True)
        assert told.options.tasks_may_submit


def test_two_users_sharing_one_account_are_refused_at_start(base: Path) -> None:
    shared = ensure_test_accounts()["alice"]
    with pytest.raises(ValueError, match="alice and bob map to the same account"):
        _create(base / "shared-uid", {"users": {"alice": shared, "bob": shared}})


def test_a_root_broker_may_not_share_its_own_uid(base: Path) -> None:
    with pytest.raises(ValueError, match="would run every job as root"):
        _create(base / "shared-root", {"shared": True})


def test_a_root_broker_that_may_not_make_accounts_refuses_unmapped_users(base: Path) -> None:
    with pytest.raises(ValueError, match="alice would have their jobs run as root"):
        _create(base / "no-create", {"create": False}, users=("alice",))


def test_a_state_dir_the_accounts_cannot_enter_is_refused_at_start(base: Path) -> None:
    closed = base / "closed"
    closed.mkdir(mode=0o700)
    with pytest.raises(ValueError, match=f"cannot enter {closed} on the way"):
        _create(closed / "state", {})
    platform = _create(base / "open" / "state", {})  # the broker's own dirs it opens itself
    assert oct((base / "open" / "state" / "sessions").stat().st_mode & 0o777) == oct(0o711)
    assert platform.accounts is not None
