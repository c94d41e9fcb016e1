"""The broker's page in a real chromium against a real broker: login, live phases, cancel,
each user's own rows only, and the capacity calendar showing a booking where it is."""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from execbroker.timeutil import format_instant, parse_instant
from tests.brokers import BrokerProcess, accept, batch_request, running_broker, wait_for_phase
from tests.web.conftest import DOCS, WEB_CONFIG, release_all, ui_cookie

pytestmark = pytest.mark.browser

LIVE_SECONDS = 2.0  # a change must be on screen this soon, without a reload


@pytest.fixture
def broker(web_broker: BrokerProcess) -> Iterator[BrokerProcess]:
    yield web_broker
    release_all(web_broker)


def log_in(browser: Any, broker: BrokerProcess, token: str, width: int = 1280) -> Any:
    page = browser.new_page(viewport={"width": width, "height": 900})
    page.goto(f"{broker.url}/ui")
    page.get_by_label("Your bearer token").fill(token)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_selector("#sessions table")
    # Marks this document: a reload or navigation would lose it.
    page.evaluate("window.__sameDocument = true")
    return page


def same_document(page: Any) -> bool:
    return page.evaluate("window.__sameDocument === true")


def start_session(
    broker: BrokerProcess, script: str, token: str = "demo-alice", **extra: Any
) -> str:
    with broker.client(token) as http:
        answer = http.post("/requests", json=batch_request(script, **extra)).raise_for_status()
        uuid = answer.json()["offers"][0]["meta"]["uuid"]
        accept(http, uuid).raise_for_status()
    return uuid


def row_phase(page: Any, uuid: str, phase: str, timeout: float) -> None:
    page.wait_for_selector(
        f'tr[data-session="{uuid}"] [data-phase]:text-is("{phase}")', timeout=timeout * 1000
    )


def test_login_refuses_a_wrong_token_and_needs_one(browser: Any, broker: BrokerProcess) -> None:
    page = browser.new_page()
    page.goto(f"{broker.url}/ui")
    assert page.url.endswith("/ui/login")
    page.get_by_label("Your bearer token").fill("not-a-token")
    page.get_by_role("button", name="Log in").click()
    assert page.get_by_role("alert").inner_text() == "unknown token"
    page.close()


def test_a_phase_change_is_on_screen_within_two_seconds_without_reload(
    browser: Any, broker: BrokerProcess, tmp_path: Path
) -> None:
    # The task sees only its own work directory (its cwd), where the test drops "go".
    uuid = start_session(broker, "while [ ! -e go ]; do sleep 0.05; done; echo finished")
    page = log_in(browser, broker, "demo-alice")
    row_phase(page, uuid, "RUNNING", timeout=30)
    (broker.directory / "state" / "sessions" / uuid / "go").touch()
    with broker.client() as http:
        wait_for_phase(http, uuid, {"COMPLETED"}, timeout=30)
    changed = time.monotonic()
    row_phase(page, uuid, "COMPLETED", timeout=LIVE_SECONDS)
    seen = time.monotonic() - changed
    assert seen < LIVE_SECONDS
    assert same_document(page), "the page was reloaded"
    # Its logs and outputs open in the page too, with the task's last line.
    page.click(f"#show-{uuid}")
    page.wait_for_selector("#detail [data-stdout]:has-text('finished')", timeout=5000)
    assert same_document(page)
    page.close()


def test_cancel_from_the_page_ends_the_session(browser: Any, broker: BrokerProcess) -> None:
    uuid = start_session(broker, "sleep 120")
    page = log_in(browser, broker, "demo-alice")
    row_phase(page, uuid, "RUNNING", timeout=30)
    page.locator(f"#cancel-{uuid}").focus()
    page.keyboard.press("Enter")  # keyboard-usable: a button reached and pressed without a mouse
    with broker.client() as http:
        session = wait_for_phase(http, uuid, {"CANCELLED"}, timeout=10)
    assert "cancelled by alice" in [m["message"] for m in session["meta"]["messages"]]
    row_phase(page, uuid, "CANCELLED", timeout=LIVE_SECONDS)
    assert page.locator(f"#cancel-{uuid}").count() == 0
    assert same_document(page)
    page.close()


def test_bob_never_sees_alices_rows(browser: Any, broker: BrokerProcess) -> None:
    alice_session = start_session(broker, "sleep 60")
    bob_session = start_session(broker, "sleep 60", token="demo-bob")
    with broker.client("demo-alice") as http:
        offer = http.post("/requests", json=batch_request("echo offer")).json()["offers"][0]
        refused = http.post("/requests", json=batch_request("echo", cores=(64, 64))).json()
    assert refused["result"] == "NO"

    alice = log_in(browser, broker, "demo-alice")
    alice.wait_for_selector(f'[data-offer="{offer["meta"]["uuid"]}"]')
    alice.wait_for_selector(f'[data-refusal="{refused["meta"]["uuid"]}"]')
    alice.wait_for_selector(f'tr[data-session="{alice_session}"]')
    assert alice.locator(f'tr[data-session="{bob_session}"]').count() == 0

    bob = log_in(browser, broker, "demo-bob")
    bob.wait_for_selector(f'tr[data-session="{bob_session}"]')
    time.sleep(1)  # a few event-stream ticks: nothing of Alice's may arrive later either
    html = bob.content()
    for secret in (alice_session, offer["meta"]["uuid"], refused["meta"]["uuid"]):
        assert secret not in html
    assert set(
        bob.locator("tr[data-owner]").evaluate_all("rs => rs.map(r => r.dataset.owner)")
    ) == {"bob"}
    assert bob.locator("#owner").count() == 0  # only an admin filters by owner

    # Nor can Bob cancel Alice's session with his own page's form token.
    http = ui_cookie(broker, "demo-bob")
    csrf = http.get("/ui").text.split('name="csrf" value="')[1].split('"')[0]
    answer = http.post(
        f"/ui/sessions/{alice_session}/phase", data={"csrf": csrf, "value": "CANCELLED"}
    )
    assert answer.status_code == 403
    with broker.client() as api:
        assert api.get(f"/sessions/{alice_session}").json()["phase"] == "RUNNING"

    admin = log_in(browser, broker, "demo-admin")
    admin.wait_for_selector(f'tr[data-session="{alice_session}"]')
    admin.wait_for_selector(f'tr[data-session="{bob_session}"]')
    for page in (alice, bob, admin):
        page.close()


def test_the_timeline_shows_a_booking_where_it_is(browser: Any, broker: BrokerProcess) -> None:
    wanted = datetime.now(UTC).replace(microsecond=0) + timedelta(hours=6)
    start_session(
        broker,
        "echo later",
        cores=(3, 3),
        schedule={"requested": {"start": f"{format_instant(wanted)}/PT1M", "duration": "PT1H"}},
    )
    short = start_session(broker, "sleep 60", memory=(2, 2))
    page = log_in(browser, broker, "demo-admin")
    row_phase(page, short, "RUNNING", timeout=30)
    slots = page.locator("#timeline g.slot").evaluate_all(
        "gs => gs.map(g => ({start: g.dataset.start, end: g.dataset.end,"
        " booked: +g.dataset.booked, x: +g.dataset.x,"
        " rects: g.querySelectorAll('rect.booked').length}))"
    )
    assert len(slots) == 96
    first = parse_instant(slots[0]["start"])
    span = parse_instant(slots[-1]["end"]) - first
    booked_later = [s for s in slots if s["booked"] == 3]
    assert booked_later, slots
    begin, end = parse_instant(booked_later[0]["start"]), parse_instant(booked_later[-1]["end"])
    # Every slot the booking overlaps shows it, and none outside it (one slot of slack each side).
    step = span / 96
    assert begin <= wanted < begin + step
    assert end - step < wanted + timedelta(hours=1) <= end
    assert all(s["rects"] == 1 for s in booked_later)
    # ... drawn where it is: its x is its start's share of the horizon.
    expected_x = (wanted - first) / span * 960
    assert abs(booked_later[0]["x"] - expected_x) <= 960 / 96
    # The running session is booked at the very start, and the quota header counts it.
    assert slots[0]["booked"] == 1
    assert page.locator('[data-quota="memory"] [data-used]').inner_text() == "2"
    # For the screenshot: an open offer (held) and a NO with its reason.
    with broker.client("demo-bob") as http:
        http.post("/requests", json=batch_request("echo maybe", cores=(1, 2))).raise_for_status()
        http.post("/requests", json=batch_request("echo", cores=(16, 16))).raise_for_status()
    page.wait_for_selector("#timeline rect.held")
    page.wait_for_selector("#refusals [data-refusal]")
    DOCS.mkdir(exist_ok=True)
    page.screenshot(path=str(DOCS / "ui-broker.png"), full_page=True)
    narrow = log_in(browser, broker, "demo-admin", width=400)
    row_phase(narrow, short, "RUNNING", timeout=10)
    assert narrow.evaluate("document.documentElement.scrollWidth") <= 400
    narrow.screenshot(path=str(DOCS / "ui-broker-400px.png"), full_page=True)
    page.close()
    narrow.close()


def test_a_request_from_the_page_gets_offers_to_accept(browser: Any, broker: BrokerProcess) -> None:
    page = log_in(browser, broker, "demo-alice")
    page.get_by_label("Script (batch script)").fill("echo from the form")
    page.get_by_label("cores max").fill("2")
    page.get_by_role("button", name="Ask", exact=True).click()
    page.wait_for_selector('#answer [data-result="YES"]')
    offers = page.locator("#answer [data-offer]").evaluate_all("os => os.map(o => o.dataset.offer)")
    assert offers
    # The same offers are open in their own section, their expiry counting down.
    countdown = f'#offers [data-offer="{offers[0]}"] time[data-countdown]'
    first = page.locator(countdown).inner_text()
    assert first.startswith("in ")
    page.wait_for_function(
        "([css, was]) => { const el = document.querySelector(css);"
        " return el && el.textContent.startsWith('in ') && el.textContent !== was; }",
        arg=[countdown, first],
    )
    assert page.locator("[data-health]").get_attribute("data-health") == "ok"
    page.locator("#answer").get_by_role("button", name="Accept this offer").first.click()
    row_phase(page, offers[0], "COMPLETED", timeout=30)
    # A task file with a field of the wrong shape is refused naming the field.
    page.get_by_label("ExecutionRequest (YAML or JSON)").fill(
        "executable: {kind: batch-script, script: echo}\ncompute: {cores: {min: many}}"
    )
    page.get_by_role("button", name="Ask", exact=True).click()
    alert = page.locator("#status[role=alert]")
    alert.wait_for()
    assert "compute.cores.min" in alert.inner_text()
    assert same_document(page)
    page.close()


def test_filter_sort_and_page_on_the_server_without_reload(
    browser: Any, broker: BrokerProcess
) -> None:
    for token in ("demo-alice",) * 4 + ("demo-bob",):
        with broker.client(token) as http:
            answer = http.post("/requests", json=batch_request("echo", cores=(1, 4))).json()
            for offer in answer["offers"]:
                http.post(
                    f"/sessions/{offer['meta']['uuid']}",
                    json={"kind": "uri:enum-value-update", "path": "phase", "value": "REJECTED"},
                ).raise_for_status()
    with broker.client("demo-alice") as http:
        listed = http.get("/sessions", params={"phase": "REJECTED"}).json()["sessions"]
    alice_rejected = len(listed)  # these, and any siblings other tests left rejected
    assert 10 < alice_rejected <= 20  # more than one page of them, at most two

    page = log_in(browser, broker, "demo-admin")
    page.get_by_label("REJECTED").check()
    page.get_by_label("Owner").fill("alice")
    page.get_by_role("button", name="Filter").click()
    page.wait_for_selector(f"#sessions-title:has-text('({alice_rejected})')")
    owners = page.locator("tr[data-owner]").evaluate_all("rs => rs.map(r => r.dataset.owner)")
    assert owners == ["alice"] * 10
    assert set(page.locator("tr [data-phase]").all_inner_texts()) == {"REJECTED"}
    page.get_by_role("link", name="Grant").click()  # sort by cores, fewest first
    page.wait_for_selector('th[aria-sort="ascending"]:has-text("Grant")')
    grants = page.locator('td[data-label="Grant"]').all_inner_texts()
    cores = [int(text.split()[0]) for text in grants]
    assert cores == sorted(cores)
    page.get_by_role("link", name="Older").click()
    page.wait_for_selector("nav.pager:has-text('page 2 of 2')")
    assert page.locator("tr[data-owner]").count() == alice_rejected - 10
    assert "page=2" in page.url and "owner=alice" in page.url
    assert same_document(page)
    page.close()

    # A user cannot ask for another's rows at all.
    http = ui_cookie(broker, "demo-alice")
    assert http.get("/ui", params={"owner": "bob"}).status_code == 403
    assert http.get("/ui", params={"sort": "password"}).status_code == 422


def test_a_live_update_keeps_a_half_filled_filter(browser: Any, broker: BrokerProcess) -> None:
    """The filter form is part of the live sessions fragment: an update arriving while a user
    fills it in must not undo what they ticked or typed."""
    page = log_in(browser, broker, "demo-admin")
    page.get_by_label("REJECTED").check()
    page.get_by_label("Owner").fill("alice")
    uuid = start_session(broker, "echo updated")
    row_phase(page, uuid, "COMPLETED", timeout=30)  # the fragment was swapped meanwhile
    assert page.get_by_label("REJECTED").is_checked()
    assert page.get_by_label("Owner").input_value() == "alice"
    with broker.client("demo-alice") as http:
        listed = http.get("/sessions", params={"phase": "REJECTED"}).json()["sessions"]
    page.get_by_role("button", name="Filter").click()
    page.wait_for_selector(f"#sessions-title:has-text('({len(listed)})')")
    assert page.get_by_label("REJECTED").is_checked()
    assert same_document(page)
    page.close()


def test_a_broker_with_a_page_open_stops_at_once(browser: Any, tmp_path: Path) -> None:
    """An open page's event stream must not keep a stopping broker waiting for it."""
    with running_broker(tmp_path, **{k: v for k, v in WEB_CONFIG.items() if k != "name"}) as broker:
        page = log_in(browser, broker, "demo-alice")
        page.wait_for_selector("#timeline g.slot", state="attached")
        assert broker.process is not None
        began = time.monotonic()
        broker.process.terminate()
        broker.process.wait(timeout=10)
        assert time.monotonic() - began < 10
        # uvicorn exits by the signal it was sent once it has shut down, never by a SIGKILL.
        assert broker.process.returncode in (0, -signal.SIGTERM), broker.log_tail()
        assert "Application shutdown complete" in broker.log_tail()
        page.close()
