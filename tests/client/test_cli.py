"""The client commands of ``execbroker``, against real brokers: output and exit codes."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from execbroker.cli import app
from tests.brokers import BrokerProcess, batch_request
from tests.client.test_fanout import release_everything

UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"


@pytest.fixture
def brokers(three_brokers: dict[str, BrokerProcess]):
    yield three_brokers
    for broker in three_brokers.values():
        release_everything(broker)


@pytest.fixture
def runner(monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    monkeypatch.setenv("EXECBROKER_TOKEN", "demo-alice")
    return CliRunner()


def task_file(tmp_path: Path, script: str, **options: object) -> str:
    path = tmp_path / "task.yaml"
    path.write_text(yaml.safe_dump(batch_request(script, **options)))
    return str(path)


def everyone(brokers: dict[str, BrokerProcess]) -> list[str]:
    options = []
    for name, broker in brokers.items():
        options += ["--broker", f"{name}={broker.url}"]
    return options


def test_request_and_watch_a_task_to_the_end(
    brokers: dict[str, BrokerProcess], runner: CliRunner, tmp_path: Path
) -> None:
    task = task_file(tmp_path, 'echo "hello from $EXECBROKER_CORES cores"', cores=(2, 4))
    result = runner.invoke(app, ["request", *everyone(brokers), "--task", task, "--watch"])
    out = result.output
    assert result.exit_code == 0, out
    assert "small said NO:\n  - cores: minimum 2 exceeds this broker's quota of 1" in out
    assert re.search(r"accepted: offer \w{8} from large \(4 cores", out)
    assert "why: same start; more cores: 4 against 2 for the runner-up" in out
    assert re.search(r"\+ *[\d.]+s COMPLETED", out)
    assert "hello from 4 cores" in out


def test_exit_codes_for_no_and_for_a_failed_task(
    brokers: dict[str, BrokerProcess], runner: CliRunner, tmp_path: Path
) -> None:
    too_big = task_file(tmp_path, "true", cores=(16, 16))
    result = runner.invoke(app, ["request", *everyone(brokers), "--task", too_big])
    assert result.exit_code == 2, result.output
    assert "no broker said YES (asked 3)" in result.output

    failing = task_file(tmp_path, "echo about to fail; exit 3")
    result = runner.invoke(app, ["request", *everyone(brokers), "--task", failing, "--watch"])
    assert result.exit_code == 1, result.output
    assert "exited with code 3" in result.output and "about to fail" in result.output

    result = runner.invoke(app, ["request", *everyone(brokers), "--kind", "docker-container"])
    assert result.exit_code == 2 and "not docker-container" in result.output
    result = runner.invoke(app, ["request", *everyone(brokers), "--kind", "batch-script"])
    assert result.exit_code == 0 and "said YES but made no offers" in result.output


def test_look_then_accept_watch_and_list_by_hand(
    brokers: dict[str, BrokerProcess], runner: CliRunner, tmp_path: Path
) -> None:
    large = brokers["large"]
    task = task_file(tmp_path, "echo by hand")
    # a token for this broker alone, after '#', instead of EXECBROKER_TOKEN
    spec = f"{large.url}#demo-bob"
    result = runner.invoke(app, ["request", "--broker", spec, "--task", task, "--no-accept"])
    assert result.exit_code == 0, result.output
    uuid = re.search(rf"execbroker accept --broker \S+ ({UUID})", result.output).group(1)

    as_bob = ["--broker", large.url, "--token", "demo-bob"]
    result = runner.invoke(app, ["sessions", *as_bob, "--phase", "OFFERED"])
    assert uuid in result.output and "OFFERED" in result.output
    result = runner.invoke(app, ["accept", uuid, *as_bob])
    assert result.exit_code == 0 and "ACCEPTED" in result.output, result.output
    result = runner.invoke(app, ["watch", uuid, *as_bob])
    assert result.exit_code == 0 and "by hand" in result.output, result.output
    result = runner.invoke(app, ["logs", uuid, *as_bob])
    assert "by hand" in result.output
    # alice cannot see bob's session
    result = runner.invoke(app, ["watch", uuid, "--broker", large.url])
    assert result.exit_code == 1 and "403" in result.output


def test_cancel_a_running_task(
    brokers: dict[str, BrokerProcess], runner: CliRunner, tmp_path: Path
) -> None:
    task = task_file(tmp_path, "sleep 60")
    result = runner.invoke(app, ["request", "--broker", brokers["medium"].url, "--task", task])
    assert result.exit_code == 0, result.output
    uuid = re.search(rf"execbroker watch --broker \S+ ({UUID})", result.output).group(1)
    result = runner.invoke(app, ["cancel", uuid, "--broker", brokers["medium"].url])
    assert result.exit_code == 0 and "CANCELLED" in result.output, result.output
    result = runner.invoke(app, ["cancel", uuid, "--broker", brokers["medium"].url])
    assert result.exit_code == 1 and "409" in result.output


def flat(text: str) -> str:
    """Typer's error box without its frame and line breaks."""
    return " ".join(re.sub(r"[│╭╮╰╯─]", " ", text).split())


def test_bad_input_is_a_usage_error(runner: CliRunner, tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("just: [a list\n")
    result = runner.invoke(app, ["request", "--broker", "http://127.0.0.1:1", "--task", str(bad)])
    assert result.exit_code == 2 and "not valid yaml" in flat(result.output)
    result = runner.invoke(app, ["request", "--broker", "127.0.0.1:1", "--kind", "batch-script"])
    assert result.exit_code == 2 and "a broker is [name=]http(s)://" in flat(result.output)
    result = runner.invoke(
        app, ["request", "--broker", "http://127.0.0.1:1", "--kind", "x", "--policy", "fastest"]
    )
    assert result.exit_code == 2 and "no policy called 'fastest'" in flat(result.output)
