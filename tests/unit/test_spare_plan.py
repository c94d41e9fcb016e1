"""Which spare networks the docker platform's pool hands out and makes next: its plan alone,
with no engine (nothing here makes a network; ``make`` says when one would be)."""

from __future__ import annotations

from execbroker.platforms.docker_engine import Engine, EngineOptions
from execbroker.platforms.docker_networks import NetworkPool, Spare

WEB = ("8080/tcp",)
PLAIN = Spare("plain-net", "plain-holder")
PORTED = Spare("web-net", "web-holder", WEB, {"8080/tcp": "32768"})


def _pool(*ready: Spare, port_spares: int = 1) -> NetworkPool:
    pool = NetworkPool(
        Engine(EngineOptions()),  # (opened on first use: never, here)
        broker="b",
        platform="docker",
        spares=1,
        holder_image="busybox:local",
        port_spares=port_spares,
    )
    pool._ready = list(ready)
    return pool


def _never() -> str:
    raise AssertionError("a network was made at the start, with a spare ready")


def test_a_session_gets_a_holder_publishing_its_ports_or_else_a_plain_spare() -> None:
    pool = _pool(PLAIN, PORTED)
    assert pool.take(_never, ["8080/tcp"]) == PORTED
    pool = _pool(PLAIN, PORTED)
    assert pool.take(_never, []) == PLAIN


def test_a_portless_session_or_one_with_other_ports_never_gets_a_ported_holder() -> None:
    pool = _pool(PORTED)  # (its ports would lead into the session's namespace unasked)
    assert pool.take(lambda: "made", []) == Spare("made")
    assert pool.take(lambda: "made", ["9090/tcp"]) == Spare("made")
    assert pool._ready == [PORTED]


def test_ports_get_a_spare_from_their_second_use_and_the_last_kind_is_made_first() -> None:
    pool = _pool()
    pool.take(lambda: "made", ["8080/tcp"])
    assert pool._wanted() == ()  # a plain one only: published once
    pool.take(lambda: "made", ["8080/tcp"])
    assert pool._wanted() == WEB  # published again, and last: made first
    pool._ready = [PORTED]
    assert pool._wanted() == ()
    pool._ready = [PORTED, PLAIN]
    assert pool._wanted() is None
    pool.take(lambda: "made", [])  # the plain one goes
    assert pool._wanted() == ()


def test_only_the_last_sets_of_ports_keep_spares() -> None:
    pool = _pool(PLAIN, PORTED)
    for ports in (["8080/tcp"], ["8080/tcp"], ["9090/tcp"], ["9090/tcp"]):
        pool.take(lambda: "made", ports)
    assert pool._port_sets == [("9090/tcp",)]  # 8080's spare is stale now: the filler drops it


def test_without_a_holder_image_no_spare_is_wanted_for_ports() -> None:
    pool = _pool(PLAIN)
    for _ in range(2):
        pool.take(lambda: "made", ["8080/tcp"])
    pool._ready = [PLAIN]
    assert pool._wanted() == WEB
    pool.holder_image = None  # found missing while making one: plain spares only from now
    assert pool._wanted() is None
