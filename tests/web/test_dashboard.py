"""The client's dashboard (``execbroker dashboard``, a real process) over three real brokers,
in a real chromium: every broker side by side, the offers of all three ranked, the choice
explained, and the chosen session followed live until it ends."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.brokers import BASE_CONFIG, BrokerProcess, free_port
from tests.web.conftest import DOCS

pytestmark = pytest.mark.browser

QUOTAS = {
    "small": {"cores": 1, "memory": 2, "max_sessions": 4, "max_duration": "PT1H"},
    "medium": {"cores": 2, "memory": 4, "max_sessions": 4, "max_duration": "PT1H"},
    "large": {"cores": 4, "memory": 8, "max_sessions": 4, "max_duration": "PT1H"},
}


@pytest.fixture(scope="module")
def three(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, BrokerProcess]]:
    root = tmp_path_factory.mktemp("dashboard-brokers")
    brokers = {
        name: BrokerProcess({**BASE_CONFIG, "name": name, "quota": quota}, root / name)
        for name, quota in QUOTAS.items()
    }
    with ThreadPoolExecutor(len(brokers)) as pool:
        list(pool.map(BrokerProcess.start, brokers.values()))
    try:
        yield brokers
    finally:
        for broker in brokers.values():
            broker.stop()


@pytest.fixture(scope="module")
def dashboard(
    three: dict[str, BrokerProcess], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """``execbroker dashboard`` over the three, two given on the command line, one in a file."""
    root = tmp_path_factory.mktemp("dashboard")
    brokers_file = root / "brokers.yaml"
    brokers_file.write_text(
        f"brokers:\n  - {{name: large, url: '{three['large'].url}', token: demo-alice}}\n"
    )
    port = free_port()
    command = [
        sys.executable, "-m", "execbroker.cli", "dashboard", "--port", str(port),
        "--broker", f"small={three['small'].url}", "--broker", f"medium={three['medium'].url}",
        "--config", str(brokers_file), "--token", "demo-alice", "--policy", "most-resources",
    ]  # fmt: skip
    log = (root / "dashboard.log").open("wb")
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(url, timeout=5).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        assert process.poll() is None, (root / "dashboard.log").read_text()
        assert time.monotonic() < deadline, "the dashboard did not answer in 60 s"
        time.sleep(0.2)
    try:
        yield url
    finally:
        process.terminate()
        process.wait(timeout=15)
        log.close()


def test_offers_from_three_brokers_ranked_with_the_choice_followed_live(
    browser: Any, dashboard: str, three: dict[str, BrokerProcess], tmp_path: Path
) -> None:
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.goto(dashboard)
    page.evaluate("window.__sameDocument = true")
    for name in QUOTAS:
        page.wait_for_selector(f'#brokers tr[data-broker="{name}"][data-up="yes"]')
    page.get_by_label("ExecutionRequest (YAML or JSON)").fill(
        "executable:\n  kind: batch-script\n"
        "  script: 'while [ ! -e go ]; do sleep 0.05; done; echo done'\n"
        "compute: {cores: {min: 1, max: 4}, memory: {min: 1, max: 4}}\n"
        "schedule: {requested: {duration: PT10M}}\n"
    )
    page.get_by_role("button", name="Ask all brokers").click()
    page.wait_for_selector("#choice [data-explain]")
    rows = page.locator("#choice tr[data-offer]").evaluate_all(
        "rs => rs.map(r => ({broker: r.dataset.broker, status: r.dataset.status}))"
    )
    assert {row["broker"] for row in rows} == set(QUOTAS)
    # most-resources: the large broker's 4-core offer wins, and the page says why.
    assert rows[0] == {"broker": "large", "status": "accepted"}
    explain = page.locator("#choice [data-explain]").inner_text()
    assert explain.startswith("accepted: offer ")
    assert "from large" in explain.splitlines()[0]
    assert "policy most-resources" in explain
    assert all(row["status"] != "open" for row in rows[1:])  # every other offer let go
    # The chosen session, followed live on its broker.
    session = page.locator("#session [data-session]")
    session.wait_for()
    uuid = session.get_attribute("data-session")
    page.wait_for_selector("#session [data-phase]:text-is('RUNNING')", timeout=30_000)
    # The task sees only its own work directory (its cwd), where the test drops "go".
    (three["large"].directory / "state" / "sessions" / uuid / "go").touch()
    page.wait_for_selector("#session [data-phase]:text-is('COMPLETED')", timeout=30_000)
    with three["large"].client() as http:
        assert http.get(f"/sessions/{uuid}").json()["phase"] == "COMPLETED"
    assert page.evaluate("window.__sameDocument === true")
    DOCS.mkdir(exist_ok=True)
    page.screenshot(path=str(DOCS / "ui-client.png"), full_page=True)
    page.close()


def test_a_form_without_the_dashboards_token_is_refused(dashboard: str) -> None:
    answer = httpx.post(f"{dashboard}/request", data={"task": "executable: {kind: batch-script}"})
    assert answer.status_code == 403
    assert "CSRF" in answer.text
