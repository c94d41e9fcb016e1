"""The page's pure parts: cookie logins, CSRF tokens, the view's query string, NO reasons as
metric labels, and the timeline's geometry. No broker, no browser."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from starlette.datastructures import QueryParams

from execbroker.config import BrokerConfig
from execbroker.errors import InvalidRequest
from execbroker.metrics import reason_label
from execbroker.planner import Resources
from execbroker.service import Slot, Timeline
from execbroker.web import views
from execbroker.web.auth import LIFETIME, CookieSessions
from tests.brokers import BASE_CONFIG


def sessions(**changes: object) -> CookieSessions:
    return CookieSessions(BrokerConfig.model_validate({**BASE_CONFIG, **changes}))


def test_a_cookie_proves_its_user_until_it_expires() -> None:
    login = sessions().login("demo-alice", now=1000)
    assert login is not None and login.user.name == "alice"
    assert sessions().check(login.cookie, now=1000 + LIFETIME - 1) == login
    assert sessions().check(login.cookie, now=1000 + LIFETIME + 1) is None


@pytest.mark.parametrize(
    "forge",
    [
        lambda c: c.replace("alice", "admin", 1),  # another user's name on Alice's signature
        lambda c: c.rsplit(".", 1)[0] + "." + "0" * 64,  # a made-up signature
        lambda c: c.split(".")[0] + ".99999999999." + c.rsplit(".", 1)[1],  # a later expiry
        lambda c: "",
    ],
)
def test_a_changed_cookie_proves_nothing(forge: object) -> None:
    login = sessions().login("demo-alice", now=1000)
    assert login is not None
    assert sessions().check(forge(login.cookie), now=1001) is None  # type: ignore[operator]


def test_a_new_token_or_another_broker_ends_old_cookies() -> None:
    login = sessions().login("demo-alice", now=1000)
    assert login is not None
    users = [dict(user) for user in BASE_CONFIG["users"]]
    users[0]["token"] = "alice-new-token"
    assert sessions(users=users).check(login.cookie, now=1001) is None
    assert sessions(name="other").check(login.cookie, now=1001) is None


def test_unknown_tokens_get_no_login_and_csrf_is_per_cookie() -> None:
    assert sessions().login("nope-nope") is None
    assert sessions().login("") is None
    alice = sessions().login("demo-alice", now=1000)
    bob = sessions().login("demo-bob", now=1000)
    assert alice is not None and bob is not None
    assert CookieSessions.csrf_ok(alice, alice.csrf)
    assert not CookieSessions.csrf_ok(alice, bob.csrf)
    assert not CookieSessions.csrf_ok(alice, "")


def test_the_view_reads_and_writes_its_query_string() -> None:
    view = views.View.from_query(QueryParams("phase=RUNNING&phase=FAILED&sort=start&order=asc"))
    assert view.phases == ("RUNNING", "FAILED") and view.sort == "start" and not view.descending
    again = views.View.from_query(QueryParams(view.query(page=3)[1:]))
    assert again.phases == view.phases and again.page == 3 and again.sort == "start"
    assert views.View().table_phases == views.SESSION_PHASES
    assert "OFFERED" not in views.SESSION_PHASES


@pytest.mark.parametrize(
    ("query", "field"), [("phase=SLEEPING", "phase"), ("order=up", "order"), ("page=0", "page")]
)
def test_a_bad_query_names_its_field(query: str, field: str) -> None:
    with pytest.raises(InvalidRequest) as raised:
        views.View.from_query(QueryParams(query))
    assert raised.value.field == field


@pytest.mark.parametrize(
    ("reason", "label"),
    [
        ("cores: minimum 8 exceeds this broker's quota of 4", "cores"),
        ("data[0]: this broker cannot stage data resources (x)", "data"),
        ("compute.volumes: this broker cannot mount volumes", "compute"),
        ("this broker has no platform", "other"),
    ],
)
def test_no_reasons_become_bounded_labels(reason: str, label: str) -> None:
    assert reason_label(reason) == label


def test_timeline_bars_stack_held_on_booked_within_the_quota() -> None:
    start = datetime(2030, 1, 1, tzinfo=UTC)
    hour = timedelta(hours=1)
    slots = (
        Slot(start, start + hour, Resources(2, 2), Resources(1, 1)),
        Slot(start + hour, start + 2 * hour, Resources(4, 4), Resources(2, 2)),
    )
    bars = views.timeline_bars(Timeline(start, start + 2 * hour, Resources(4, 8), slots))
    assert [(b.x, b.booked, b.held, b.free) for b in bars] == [(0, 2, 1, 1), (480, 4, 2, 0)]
    assert bars[0].booked_height == 40 and bars[0].held_height == 20
    assert bars[1].booked_height == 80 and bars[1].held_height == 0  # never above the quota
