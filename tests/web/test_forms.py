"""The page's forms over plain HTTP, as a browser without its script sends them: CSRF tokens,
the login form's own token, and the no-script answers (redirects, downloads)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.brokers import BrokerProcess, accept, batch_request, wait_for_phase
from tests.web.conftest import release_all, ui_cookie


@pytest.fixture
def broker(web_broker: BrokerProcess) -> Iterator[BrokerProcess]:
    yield web_broker
    release_all(web_broker)


def csrf_of(page: str) -> str:
    return page.split('name="csrf" value="')[1].split('"')[0]


def test_a_form_without_its_csrf_token_changes_nothing(broker: BrokerProcess) -> None:
    with broker.client() as api:
        offer = api.post("/requests", json=batch_request("sleep 60")).json()["offers"][0]
        uuid = offer["meta"]["uuid"]
        accept(api, uuid).raise_for_status()
        wait_for_phase(api, uuid, {"RUNNING"})
        http = ui_cookie(broker, "demo-alice")
        for form in ({"value": "CANCELLED"}, {"value": "CANCELLED", "csrf": "0" * 64}):
            answer = http.post(f"/ui/sessions/{uuid}/phase", data=form)
            assert answer.status_code == 403
            assert "CSRF" in answer.text
        assert api.get(f"/sessions/{uuid}").json()["phase"] == "RUNNING"
        # With it, and no script: the cancel happens and the browser is sent back to the page.
        csrf = csrf_of(http.get("/ui").text)
        answer = http.post(f"/ui/sessions/{uuid}/phase", data={"value": "CANCELLED", "csrf": csrf})
        assert answer.status_code == 303 and answer.headers["location"] == f"/ui?show={uuid}"
        assert api.get(f"/sessions/{uuid}").json()["phase"] == "CANCELLED"


def test_the_login_form_needs_its_own_cookie(broker: BrokerProcess) -> None:
    http = ui_cookie(broker, "demo-alice")
    http.cookies.clear()
    answer = http.post("/ui/login", data={"token": "demo-alice", "nonce": "guessed"})
    assert answer.status_code == 403
    assert http.get("/ui").status_code == 303  # still not logged in
    assert http.get("/ui/events").status_code == 401


def test_a_request_without_script_redirects_to_its_answer_and_outputs_download(
    broker: BrokerProcess,
) -> None:
    http = ui_cookie(broker, "demo-alice")
    csrf = csrf_of(http.get("/ui").text)
    # The task runs in work/ of its work directory; outputs/ beside it are its outputs.
    script = "mkdir -p outputs; echo 42 > outputs/a.txt"
    task = f"executable: {{kind: batch-script, script: '{script}'}}"
    answer = http.post("/ui/request", data={"csrf": csrf, "task": task})
    assert answer.status_code == 303
    page = http.get(answer.headers["location"]).text
    assert 'data-result="YES"' in page
    uuid = page.split('data-offer="')[1].split('"')[0]
    answer = http.post(f"/ui/sessions/{uuid}/phase", data={"value": "ACCEPTED", "csrf": csrf})
    assert answer.status_code == 303
    with broker.client() as api:
        wait_for_phase(api, uuid, {"COMPLETED"})
        listed = api.get(f"/sessions/{uuid}/outputs").json()["outputs"]
    assert [item["name"] for item in listed] == ["a.txt"]
    detail = http.get("/ui", params={"show": uuid}).text
    for item in listed:
        assert f"/ui/sessions/{uuid}/outputs/{item['name']}" in detail
        got = http.get(f"/ui/sessions/{uuid}/outputs/{item['name']}")
        assert got.status_code == 200 and "attachment" in got.headers["content-disposition"]
        assert got.text == "42\n"
    # Bob's cookie fetches none of Alice's files.
    bob = ui_cookie(broker, "demo-bob")
    assert bob.get(f"/ui/sessions/{uuid}/outputs/a.txt").status_code == 403
    assert bob.get("/ui", params={"show": uuid}).status_code == 403
