"""Fan-out against real broker processes: every answer kept, the best taken, the rest let go."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import httpx
import pytest

from execbroker.client import BrokerClient, BrokerTarget, Outcome, ask_all, choose, fan_out
from tests.brokers import BrokerProcess, batch_request, wait_for_phase

TAKEN = {"ACCEPTED", "WAITING", "PREPARING", "RUNNING", "COMPLETED"}


def targets(brokers: dict[str, BrokerProcess], *extra: BrokerTarget) -> list[BrokerTarget]:
    return [BrokerTarget(b.url, "demo-alice", name) for name, b in brokers.items()] + list(extra)


def phases_of(broker: BrokerProcess, offerset_uuid: str) -> dict[str, str]:
    """The offers of an offer set as the broker has them now."""
    with broker.client() as http:
        body = http.get(f"/offersets/{offerset_uuid}").raise_for_status().json()
    return {item["meta"]["uuid"]: item["phase"] for item in body["offers"]}


def release_everything(broker: BrokerProcess) -> None:
    """Leave the shared broker empty for the next test: reject offers, cancel sessions."""
    with broker.client("demo-admin") as http:
        for session in http.get("/sessions").raise_for_status().json()["sessions"]:
            phase = {
                "OFFERED": "REJECTED",
                "ACCEPTED": "CANCELLED",
                "WAITING": "CANCELLED",
                "PREPARING": "CANCELLED",
                "RUNNING": "CANCELLED",
            }.get(session["phase"])
            if phase:
                http.post(
                    f"/sessions/{session['meta']['uuid']}",
                    json={"kind": "uri:enum-value-update", "path": "phase", "value": phase},
                )


@pytest.fixture
def brokers(three_brokers: dict[str, BrokerProcess]) -> Iterator[dict[str, BrokerProcess]]:
    yield three_brokers
    for broker in three_brokers.values():
        release_everything(broker)


def test_fan_out_takes_the_best_offer_and_rejects_all_others(
    brokers: dict[str, BrokerProcess], dead_url: str
) -> None:
    request = batch_request('echo "granted $EXECBROKER_CORES cores"', cores=(2, 4), memory=(1, 8))
    dead = BrokerTarget(dead_url, "demo-alice", "dead")
    choice = asyncio.run(fan_out(targets(brokers, dead), request, timeout=10))

    outcomes = {answer.name: answer.outcome for answer in choice.answers}
    assert outcomes == {
        "small": Outcome.NO,
        "medium": Outcome.YES,
        "large": Outcome.YES,
        "dead": Outcome.UNREACHABLE,
    }
    assert choice.answer_of("small").reasons == [
        "cores: minimum 2 exceeds this broker's quota of 1"
    ]
    assert "cannot reach" in choice.answer_of("dead").reasons[0]

    assert choice.accepted and choice.chosen is not None
    assert choice.chosen.broker == "large"
    assert (choice.chosen.offer.cores, choice.chosen.offer.memory) == (4, 8)
    assert choice.session is not None and choice.session.phase == "ACCEPTED"
    assert choice.runner_up is not None and choice.runner_up.broker == "medium"
    assert choice.why() == "same start; more cores: 4 against 2 for the runner-up"
    assert not choice.passed_over and not choice.reject_failures

    # Read every offer set back: only the chosen offer is taken, every other one rejected.
    seen = 0
    for name in ("medium", "large"):
        for uuid, phase in phases_of(brokers[name], choice.answer_of(name).offerset.uuid).items():
            seen += 1
            expected = TAKEN if uuid == choice.chosen.offer.uuid else {"REJECTED"}
            assert phase in expected, (name, uuid, phase)
    assert seen == len(choice.ranked) >= 3
    assert len(choice.rejected) == len(choice.answer_of("medium").offers)

    lines = choice.explain()
    assert lines[0].startswith(
        f"accepted: offer {choice.chosen.offer.uuid[:8]} from large (4 cores"
    )
    assert "  runner-up: offer" in "\n".join(lines)

    with brokers["large"].client() as http:
        done = wait_for_phase(http, choice.chosen.offer.uuid, {"COMPLETED", "FAILED"})
        assert done["phase"] == "COMPLETED"
        assert http.get(f"/sessions/{choice.chosen.offer.uuid}/logs").json()["stdout"] == (
            "granted 4 cores\n"
        )


def test_a_silent_broker_times_out_alone(
    brokers: dict[str, BrokerProcess], silent_url: str
) -> None:
    request = batch_request("true", cores=(1, 1), memory=(1, 1))
    silent = BrokerTarget(silent_url, "demo-alice", "silent")
    began = time.monotonic()
    answers = asyncio.run(ask_all(targets(brokers, silent), request, timeout=1.5))
    took = time.monotonic() - began
    assert [answer.outcome for answer in answers] == [Outcome.YES] * 3 + [Outcome.TIMEOUT]
    assert answers[-1].seconds > 1.4 and took < 5
    assert all(answer.seconds < 1.5 for answer in answers[:3])
    choice = asyncio.run(choose(answers, accept=False))
    assert not choice.accepted and choice.chosen is not None
    # Without accepting, the offers are left open (to be accepted by hand or to expire).
    chosen = choice.chosen
    phases = phases_of(brokers[chosen.broker], chosen.answer.offerset.uuid)
    assert set(phases.values()) == {"OFFERED"}


def test_no_broker_saying_yes_is_an_answer_not_an_error(
    brokers: dict[str, BrokerProcess], dead_url: str
) -> None:
    request = batch_request("true", cores=(16, 16))
    choice = asyncio.run(fan_out(targets(brokers, BrokerTarget(dead_url, "x" * 8)), request))
    assert not choice.any_yes and choice.chosen is None
    assert [answer.outcome for answer in choice.answers] == [Outcome.NO] * 3 + [Outcome.UNREACHABLE]
    assert choice.explain() == ["no broker said YES (asked 4)"]


def test_a_refusal_is_kept_with_the_brokers_detail(brokers: dict[str, BrokerProcess]) -> None:
    wrong_token = [BrokerTarget(b.url, "not-a-token", name) for name, b in brokers.items()]
    answers = asyncio.run(ask_all(wrong_token[:1], batch_request("true")))
    assert answers[0].outcome == Outcome.REFUSED
    assert answers[0].status_code == 401
    assert answers[0].reasons == ["401: unknown token"]
    invalid = {"executable": {"kind": "batch-script"}, "compute": {"cores": {"min": 4, "max": 1}}}
    answers = asyncio.run(ask_all(targets(brokers)[:1], invalid))
    assert answers[0].outcome == Outcome.REFUSED and answers[0].status_code == 422
    assert "compute.cores" in answers[0].error


def test_when_the_best_offer_is_gone_the_next_best_is_taken(
    brokers: dict[str, BrokerProcess], fast_expiry: BrokerProcess
) -> None:
    """Between offer and accept the best broker's capacity goes to someone else: fall back.

    An offer holds its capacity until it expires, so "taken" means: the offer expired and
    another user booked the whole quota at once; every accept of that broker's offers then
    fails with 409, and the next best offer (another broker's) is accepted.
    """
    fast = fast_expiry
    try:
        request = batch_request("true", cores=(1, 8), memory=(1, 16), duration="PT10M")
        everyone = [BrokerTarget(fast.url, "demo-alice", "fast"), *targets(brokers)]
        answers = asyncio.run(ask_all(everyone, request, timeout=10))
        assert answers[0].outcome == Outcome.YES and answers[0].offers[0].cores == 8

        time.sleep(1.3)  # alice's offers from "fast" expire; bob takes the whole quota
        bobs = batch_request("sleep 30", cores=(8, 8), memory=(16, 16), duration="PT10M")
        with fast.client("demo-bob") as http:
            taken = http.post("/direct", json=bobs)
            assert taken.status_code == 200, taken.text
            bob_session = taken.json()["meta"]["uuid"]

        attempted = []
        choice = asyncio.run(choose(answers, timeout=10, on_attempt=attempted.append))
        fast_offers = [offer.uuid for offer in answers[0].offers]
        # fast's 8-core and 4-core offers rank above every other; each accept fails with 409
        assert [a.candidate.offer.uuid for a in choice.passed_over] == fast_offers[:2]
        assert [c.offer.uuid for c in attempted] == [*fast_offers[:2], choice.chosen.offer.uuid]
        assert {a.status_code for a in choice.passed_over} == {409}
        assert "expired" in choice.passed_over[0].error.lower()
        assert choice.accepted and choice.chosen.broker == "large"
        assert (choice.chosen.offer.cores, choice.chosen.offer.memory) == (4, 8)
        assert any("passed over offer" in line for line in choice.explain())

        with fast.client("demo-bob") as http:
            assert http.get(f"/sessions/{bob_session}").json()["phase"] in TAKEN
        for uuid, phase in phases_of(fast, answers[0].offerset.uuid).items():
            assert phase in {"EXPIRED", "REJECTED"}, (uuid, phase)
        for answer in answers[1:]:
            for uuid, phase in phases_of(brokers[answer.name], answer.offerset.uuid).items():
                assert phase in (TAKEN if uuid == choice.chosen.offer.uuid else {"REJECTED"})
    finally:
        release_everything(fast)


def test_the_client_follows_a_session_and_reads_its_logs(brokers: dict[str, BrokerProcess]) -> None:
    large = brokers["large"]

    async def scenario() -> tuple[list[str], str, list[str]]:
        async with BrokerClient(large.url, "demo-alice", timeout=10) as client:
            info = await client.info()
            assert (info.name, info.quota["cores"]) == ("large", 4)
            assert "batch-script" in info.kinds and "docker-container" not in info.kinds
            session = await client.direct(batch_request("echo out; echo err >&2; sleep 1"))
            seen: list[str] = []
            final = await client.wait(
                session.uuid, on_change=lambda s: seen.append(s.phase), timeout=20, interval=0.05
            )
            logs = await client.logs(session.uuid)
            listed = [s.uuid for s in await client.sessions(phases=["completed"])]
            assert session.uuid in listed
            return seen, final.phase, [logs.stdout, logs.stderr]

    seen, phase, logs = asyncio.run(scenario())
    assert phase == "COMPLETED" and logs == ["out\n", "err\n"]
    lifecycle = ["ACCEPTED", "WAITING", "PREPARING", "RUNNING", "COMPLETED"]
    assert seen == sorted(set(seen), key=lifecycle.index)  # each change seen once, in order
    assert "RUNNING" in seen and seen[-1] == "COMPLETED"


def test_client_errors_carry_the_status_and_the_brokers_detail(
    brokers: dict[str, BrokerProcess], dead_url: str
) -> None:
    from execbroker.client import BrokerClientError, BrokerUnreachable, WaitTimeout

    async def scenario() -> None:
        async with BrokerClient(brokers["small"].url, "demo-alice", timeout=10) as client:
            with pytest.raises(BrokerClientError) as no:
                await client.direct(batch_request("true", cores=(3, 3)))
            assert no.value.status_code == 400
            assert no.value.reasons == ["cores: minimum 3 exceeds this broker's quota of 1"]
            with pytest.raises(BrokerClientError) as missing:
                await client.session("00000000-0000-0000-0000-000000000000")
            assert missing.value.status_code == 404 and "no session" in missing.value.detail
            running = await client.direct(batch_request("sleep 30"))
            with pytest.raises(WaitTimeout):
                await client.wait(running.uuid, ["COMPLETED"], timeout=0.3)
            await client.wait(running.uuid, ["RUNNING"], timeout=10)
            cancelled = await client.cancel(running.uuid)
            assert cancelled.phase == "CANCELLED"
            with pytest.raises(BrokerClientError) as again:
                await client.cancel(running.uuid)
            assert again.value.conflict
        async with BrokerClient(dead_url, "demo-alice", timeout=2) as client:
            with pytest.raises(BrokerUnreachable):
                await client.info()

    asyncio.run(scenario())


def test_a_broker_target_parses_name_url_and_token() -> None:
    assert BrokerTarget.parse("http://h:1/", "t0") == BrokerTarget("http://h:1", "t0")
    assert BrokerTarget.parse("a=http://h:1#tok") == BrokerTarget("http://h:1", "tok", "a")
    assert BrokerTarget.parse("http://h:1").label == "h:1"
    with pytest.raises(ValueError, match="http"):
        BrokerTarget.parse("h:1")
    assert httpx.URL(BrokerTarget.parse("http://h:1#x").url).fragment == ""
