"""Data resources on Slurm: staged into the job's work directory by the broker, found at
the mount path relative to the job's working directory (a link) and as
``$EXECBROKER_DATA_<index>``, read-only by file modes; the job runs as the user's account
on the real cluster, through a real broker process."""

from __future__ import annotations

import os
import subprocess
import uuid as uuids
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from execbroker.platforms import slurm as slurm_platform
from tests.brokers import BrokerProcess, batch_request, running_broker, wait_for_phase
from tests.data_resources import ALLOW_LOOPBACK, data_site, expect_probe, probe, sha256, with_data
from tests.platforms.slurm_support import ensure_test_accounts, enterable_dir
from tests.sites import Site

pytestmark = pytest.mark.slurm

EXAMPLES = Path(__file__).parents[2] / "examples"


@pytest.fixture(scope="module")
def site() -> Iterator[Site]:
    served = data_site()
    yield served
    served.close()


def _config() -> dict[str, Any]:
    partition = os.environ.get("EXECBROKER_SLURM_PARTITION")
    if not partition:
        pytest.fail("EXECBROKER_SLURM_PARTITION unset: run scripts/services.sh up slurm")
    config = yaml.safe_load((EXAMPLES / "brokers" / "slurm-account-001.yaml").read_text())
    config["name"] = f"data{uuids.uuid4().hex[:8]}"
    config["platforms"][0].update(
        partition=partition, run_as={"users": ensure_test_accounts()}, fetch=ALLOW_LOOPBACK
    )
    config["monitor"] = {"interval": "PT0.2S"}
    return config


@pytest.fixture(scope="module")
def broker() -> Iterator[BrokerProcess]:
    config = _config()
    prefix = slurm_platform.job_name(config["name"], "")
    with enterable_dir("eb-slurm-data-") as directory, running_broker(directory, **config) as b:
        yield b
    listing = subprocess.run(
        ["squeue", "-h", "-o", "%i|%j"], capture_output=True, text=True, timeout=30, check=False
    )
    for line in listing.stdout.splitlines():
        job, _, name = line.partition("|")
        if name.startswith(prefix):
            subprocess.run(["scancel", job], check=False, timeout=30)


@pytest.fixture
def client(broker: BrokerProcess) -> Iterator[httpx.Client]:
    with broker.client() as client:
        yield client


def test_the_data_is_in_the_job_at_its_mount_path_read_only_where_asked(client, site):
    script = probe(".") + 'test "$(id -u)" != 0 && echo "not root"\n'
    request = with_data(batch_request(script, duration="PT2M"), site, checksum=sha256())
    session = client.post("/direct", json=request).raise_for_status().json()
    uuid = session["meta"]["uuid"]
    done = wait_for_phase(client, uuid, {"COMPLETED", "FAILED", "CANCELLED"}, timeout=120)
    assert done["phase"] == "COMPLETED", done["meta"]["messages"]
    stdout = client.get(f"/sessions/{uuid}/logs").json()["stdout"]
    expect_probe(stdout, root=".")
    assert "not root" in stdout  # the modes, not a privilege, keep it read-only
    line = next(item for item in stdout.splitlines() if item.startswith("data0="))
    assert line.startswith("data0=/") and line.endswith(f"/{uuid}/data/0"), line


def test_a_checksum_mismatch_fails_the_session_before_any_job(client, site):
    request = with_data(batch_request("echo ran", duration="PT2M"), site, checksum=sha256(b"y"))
    session = client.post("/direct", json=request).raise_for_status().json()
    uuid = session["meta"]["uuid"]
    done = wait_for_phase(client, uuid, {"COMPLETED", "FAILED", "CANCELLED"}, timeout=60)
    assert done["phase"] == "FAILED"
    assert any("checksum mismatch" in item["message"] for item in done["meta"]["messages"])
