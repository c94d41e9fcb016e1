"""Our /openapi.json is a contract: a client generated from it by a real generator
(openapi-python-client, into ``tmp_path``, never committed) runs a whole session."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.brokers import running_broker

GENERATOR = Path(sys.executable).parent / "openapi-python-client"


def _generate(document: str, directory: Path) -> None:
    spec = directory / "openapi.json"
    spec.write_text(document)
    # The generator formats its output with ruff, which lives next to it in the venv.
    env = {**os.environ, "PATH": f"{GENERATOR.parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    subprocess.run(
        [str(GENERATOR), "generate", "--path", str(spec), "--output-path",
         str(directory / "ebclient"), "--meta", "none"],
        check=True, capture_output=True, env=env, timeout=240,
    )  # fmt: skip


@pytest.mark.timeout(400)
def test_a_generated_client_completes_a_session(tmp_path, monkeypatch):
    assert GENERATOR.exists(), "openapi-python-client is a dev dependency"
    with running_broker(tmp_path / "broker") as broker:
        document = httpx.get(f"{broker.url}/openapi.json").raise_for_status().text
        _generate(document, tmp_path)
        monkeypatch.syspath_prepend(str(tmp_path))
        client_module = importlib.import_module("ebclient")
        models = importlib.import_module("ebclient.models")
        default = "ebclient.api.default."
        post_requests = importlib.import_module(default + "post_requests")
        update_session = importlib.import_module(default + "update_session")
        get_session = importlib.import_module(default + "get_session")
        get_logs = importlib.import_module(default + "get_logs")

        client = client_module.AuthenticatedClient(base_url=broker.url, token="demo-alice")
        request = models.ExecutionRequest(
            executable=models.BatchScript(script="echo generated"),
            compute=models.SimpleComputeResource(cores=models.MinMaxInt(min_=1, max_=1)),
            schedule=models.ScheduleBlock(requested=models.RequestedSchedule(duration="PT1M")),
        )
        answer = post_requests.sync(client=client, body=request)
        assert isinstance(answer, models.OfferSetResponse), answer
        assert answer.result == models.OfferSetResponseResult.YES
        offer = answer.offers[0]
        assert isinstance(offer.schedule.available, models.ScheduleStartDurationInterval)
        update = models.UpdateRequest(update=models.EnumValueUpdate(path="phase", value="ACCEPTED"))
        accepted = update_session.sync(offer.meta.uuid, client=client, body=update)
        assert isinstance(accepted, models.ExecutionSession), accepted
        deadline = time.monotonic() + 60
        session = accepted
        while session.phase != models.Phase.COMPLETED and time.monotonic() < deadline:
            time.sleep(0.2)
            session = get_session.sync(offer.meta.uuid, client=client)
        assert session.phase == models.Phase.COMPLETED
        logs = get_logs.sync(offer.meta.uuid, client=client)
        assert isinstance(logs, models.SessionLogs) and "generated" in logs.stdout
        # The error answers are typed too: an unknown session is a 404 ErrorBody.
        missing = get_session.sync_detailed("00000000-0000-0000-0000-000000000000", client=client)
        assert missing.status_code == 404 and isinstance(missing.parsed, models.ErrorBody)
