"""Tokens: kept as SHA-256 digests in the config, plain ones warned of, none ever logged."""

from __future__ import annotations

import hashlib
import subprocess
import sys

from tests.brokers import BASE_CONFIG, batch_request, running_broker

ALICE = "alice-3f9c1e7d5b2a4c6e8f0a"
BOB = "bob-9d8c7b6a5f4e3d2c1b0a"


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def test_hashed_tokens_authenticate_and_no_token_is_logged(tmp_path):
    users = [
        {"name": "alice", "token_sha256": _digest(ALICE)},
        {"name": "bob", "token": BOB},
    ]
    with running_broker(tmp_path, users=users) as broker:
        with broker.client(ALICE) as alice:
            assert alice.post("/requests", json=batch_request("true")).json()["result"] == "YES"
            assert alice.get("/sessions").status_code == 200
        with broker.client(BOB) as bob:
            assert bob.get("/sessions").status_code == 200
        # the digest itself is no token, nor is a wrong one
        for wrong in (_digest(ALICE), ALICE + "x", "not-a-token-at-all"):
            with broker.client(wrong) as stranger:
                assert stranger.get("/sessions").status_code == 401
    log = broker.log_path.read_text()
    assert "plain tokens" in log and "bob" in log  # the plain one is warned of at start-up
    for secret in (ALICE, BOB, "not-a-token-at-all"):
        assert secret not in log


def test_a_user_needs_exactly_one_token(tmp_path):
    from execbroker.config import BrokerConfig

    both = {**BASE_CONFIG, "users": [{"name": "a", "token": ALICE, "token_sha256": _digest(ALICE)}]}
    neither = {**BASE_CONFIG, "users": [{"name": "a"}]}
    for data in (both, neither):
        try:
            BrokerConfig.model_validate(data)
        except ValueError as error:
            assert "exactly one of token_sha256 and token" in str(error)
        else:
            raise AssertionError(f"accepted {data['users']}")


def test_hash_token_command_prints_what_the_config_keeps():
    command = [sys.executable, "-m", "execbroker.cli", "hash-token", ALICE]
    out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    assert f"token_sha256: {_digest(ALICE)}" in out
    fresh = subprocess.run(command[:-1], capture_output=True, text=True, check=True).stdout
    token = fresh.splitlines()[0].removeprefix("token: ")
    assert len(token) >= 32 and f"token_sha256: {_digest(token)}" in fresh
