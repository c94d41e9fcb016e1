"""A real broker process and Debian's chromium driven by Playwright, for the page's tests."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.brokers import BASE_CONFIG, BrokerProcess

CHROMIUM = os.environ.get("EXECBROKER_TEST_CHROMIUM", "/usr/bin/chromium")
# The network is closed here: without these, chromium keeps trying to reach Google's services.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
DOCS = Path(__file__).resolve().parents[2] / "docs"
WEB_CONFIG = {
    **BASE_CONFIG,
    "name": "web",
    "quota": {**BASE_CONFIG["quota"], "horizon": "PT12H"},
    "monitor": {"interval": "PT0.1S"},
}


@pytest.fixture(scope="module")
def web_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerProcess]:
    broker = BrokerProcess(WEB_CONFIG, tmp_path_factory.mktemp("web-broker"))
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


# Per module, not per session: Playwright's sync API keeps an event loop running in this
# thread while it is open, which would break every later test that calls asyncio.run.
@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).exists():
        pytest.fail(f"no {CHROMIUM}: run scripts/services.sh up chromium")
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


def release_all(broker: BrokerProcess) -> None:
    """Leave the module's broker empty for the next test: reject offers, cancel sessions."""
    undo = {
        "OFFERED": "REJECTED",
        **dict.fromkeys(("ACCEPTED", "WAITING", "PREPARING", "AVAILABLE", "RUNNING"), "CANCELLED"),
    }
    with broker.client("demo-admin") as http:
        for session in http.get("/sessions").raise_for_status().json()["sessions"]:
            phase = undo.get(session["phase"])
            if phase:
                http.post(
                    f"/sessions/{session['meta']['uuid']}",
                    json={"kind": "uri:enum-value-update", "path": "phase", "value": phase},
                )


def ui_cookie(broker: BrokerProcess, token: str) -> httpx.Client:
    """An HTTP client logged in to the page the way a browser is (form, then cookie)."""
    http = httpx.Client(base_url=broker.url, timeout=30)
    form = http.get("/ui/login").raise_for_status().text
    nonce = form.split('name="nonce" value="')[1].split('"')[0]
    answer = http.post("/ui/login", data={"token": token, "nonce": nonce})
    assert answer.status_code == 303, answer.text
    return http
