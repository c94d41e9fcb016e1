"""A broker that answers with something that is not an offer set (not JSON, JSON that is not
an object, an offer that is a number, a result that is neither YES nor NO) is one INVALID
answer among the others, named and explained; the fan-out goes on with the brokers that
answered well. Served by a real HTTP server; the good broker is a real broker process."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator

import pytest

from execbroker.client import BrokerBadAnswer, BrokerClient, BrokerTarget, Outcome, ask_all
from tests.brokers import BrokerProcess, batch_request
from tests.sites import Site

JSON = {"Content-Type": "application/json"}
BAD = {
    "not-json": b"<html>a proxy's error page</html>",
    "an-array": b'[{"result": "YES"}]',
    "a-number-offer": json.dumps({"result": "YES", "offers": [1]}).encode(),
    "a-string-meta": json.dumps({"result": "NO", "meta": "none"}).encode(),
    "maybe": json.dumps({"result": "MAYBE", "offers": []}).encode(),
    "a-list-compute": json.dumps({"result": "YES", "offers": [{"compute": [1]}]}).encode(),
}


@pytest.fixture(scope="module")
def bad_broker() -> Iterator[Site]:
    site = Site("127.0.0.1", {f"/{name}/requests": (200, JSON, body) for name, body in BAD.items()})
    yield site
    site.close()


async def _reject(target: BrokerTarget, offers: list[str]) -> None:
    async with BrokerClient(target.url, target.token) as client:
        for uuid in offers:
            await client.reject(uuid)


def test_every_bad_answer_is_an_invalid_outcome_and_the_good_broker_still_counts(
    bad_broker: Site, three_brokers: dict[str, BrokerProcess]
) -> None:
    good = BrokerTarget(three_brokers["large"].url, "demo-alice", "good")
    bad = [BrokerTarget(f"{bad_broker.base}/{name}", "t", name) for name in BAD]
    answers = asyncio.run(ask_all([*bad, good], batch_request("true")))
    asyncio.run(_reject(good, [offer.uuid for offer in answers[-1].offers]))
    outcomes = {answer.target.name: answer.outcome for answer in answers}
    assert outcomes == {**dict.fromkeys(BAD, Outcome.INVALID), "good": Outcome.YES}
    for answer in answers[:-1]:
        assert answer.error and answer.target.url in answer.error, answer
        assert not answer.offers


def test_the_client_raises_its_own_error_naming_the_call(bad_broker: Site) -> None:
    async def asked(name: str) -> BrokerBadAnswer:
        async with BrokerClient(f"{bad_broker.base}/{name}", "t") as client:
            with pytest.raises(BrokerBadAnswer) as raised:
                await client.request_offers(batch_request("true"))
        return raised.value

    for name in BAD:
        error = asyncio.run(asked(name))
        assert "POST /requests" in error.detail and name in error.detail, error.detail
