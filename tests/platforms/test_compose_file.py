"""Reading and rewriting compose files: pure, no Docker needed."""

from __future__ import annotations

import json

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from execbroker.planner import Resources
from execbroker.platforms.compose_file import (
    ComposeError,
    RunSettings,
    dump,
    interpolate_text,
    parse,
    port_plans,
    rewrite,
    shares,
)
from execbroker.platforms.docker_engine import GIB, LABEL_PORTS

SETTINGS = RunSettings(
    labels={"execbroker.session": "s1", "execbroker.broker": "b"},
    publish_host="127.0.0.1",
    pids_limit=256,
    init=True,
    storage_gib=None,
)


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("services: [", "not valid YAML at line 1"),
        ("just text", "a mapping with services"),
        ("services: {}", "at least one service"),
        ("version: '3'", "at least one service"),
        ("services: {web: {command: x}}", "services.web.image"),
        ("services: {'bad name!': {image: x}}", "not a valid service name"),
        ("services: {web: {image: '${IMAGE:?give an image}'}}", "required: give an image"),
    ],
)
def test_unusable_files_say_why(text: str, words: str) -> None:
    with pytest.raises(ComposeError, match=words.replace("?", r"\?")):
        parse(text)


def test_alias_bombs_are_refused() -> None:
    bomb = "a: &a [x, x, x, x, x, x, x, x, x, x]\n"
    for level in "bcdefg":
        previous = chr(ord(level) - 1)
        bomb += f"{level}: &{level} [*{previous}, *{previous}, *{previous}, *{previous}, "
        bomb += f"*{previous}, *{previous}, *{previous}, *{previous}, *{previous}, *{previous}]\n"
    with pytest.raises(ComposeError, match="YAML nodes"):
        parse(bomb + "services: {web: {image: x}}")


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("plain", "plain"),
        ("$$HOME", "$HOME"),
        ("a$HOME-b", "a-b"),
        ("${HOME}", ""),
        ("${X:-fallback}", "fallback"),
        ("${X-fallback}", "fallback"),
        ("${X:-${Y:-nested}}!", "nested!"),
        ("${X:+alt}", ""),
        ("cost $5", "cost $5"),
    ],
)
def test_interpolation_sees_an_empty_environment(text: str, value: str) -> None:
    assert interpolate_text(text) == value


def test_the_broker_environment_never_reaches_the_file(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SECRET", "hunter2")
    document = parse("services: {web: {image: x, environment: ['LEAK=$SECRET', 'K=${SECRET}']}}")
    assert document["services"]["web"]["environment"] == ["LEAK=", "K="]


def _services(text: str) -> dict:
    return parse(text)["services"]


def test_shares_sum_to_the_grant_evenly() -> None:
    services = _services("services: {a: {image: x}, b: {image: x}, c: {image: x}}")
    result = shares(services, Resources(2, 3, 0), host_cpus=2)
    assert sum(s.cpus for s in result.values()) == pytest.approx(2, abs=0.01)
    assert sum(s.memory for s in result.values()) <= 3 * GIB
    assert {s.memory for s in result.values()} == {GIB}


def test_shares_follow_what_services_ask_when_all_ask() -> None:
    services = _services(
        "services: {a: {image: x, cpus: 3, mem_limit: 3g}, b: {image: x, cpus: 1, mem_limit: 1g}}"
    )
    result = shares(services, Resources(2, 4, 0), host_cpus=8)
    assert result["a"].cpus == pytest.approx(1.5)
    assert result["b"].cpus == pytest.approx(0.5)
    assert result["a"].memory == 3 * GIB and result["b"].memory == GIB


def test_shares_count_replicas_and_hold_cores_to_the_host() -> None:
    services = _services("services: {a: {image: x, deploy: {replicas: 3}}, b: {image: x}}")
    result = shares(services, Resources(8, 4, 0), host_cpus=2)
    assert result["a"].cpus == pytest.approx(0.5) and result["b"].cpus == pytest.approx(0.5)
    assert result["a"].memory * 3 + result["b"].memory <= 4 * GIB


@given(
    counts=st.lists(st.integers(1, 4), min_size=1, max_size=6),
    asks=st.lists(st.one_of(st.none(), st.integers(1, 8)), min_size=6, max_size=6),
    cores=st.integers(1, 16),
    memory=st.integers(1, 64),
)
def test_shares_never_exceed_the_grant(counts, asks, cores, memory) -> None:
    services = {
        f"s{i}": {"image": "x", "scale": count, **({"cpus": asks[i]} if asks[i] else {})}
        for i, count in enumerate(counts)
    }
    result = shares(services, Resources(cores, memory, 0), host_cpus=4)
    total_cpus = sum(result[name].cpus * s["scale"] for name, s in services.items())
    total_memory = sum(result[name].memory * s["scale"] for name, s in services.items())
    assert total_cpus <= min(cores, 4) + 0.001 * sum(counts)
    assert total_memory <= memory * GIB


def test_too_little_memory_per_container_is_an_error() -> None:
    services = {f"s{i}": {"image": "x", "scale": 100} for i in range(2)}
    with pytest.raises(ComposeError, match="less than 6 MiB"):
        shares(services, Resources(1, 1, 0), host_cpus=2)


def test_ports_of_every_syntax() -> None:
    service = {
        "ports": [
            "8080",
            "127.0.0.1:80:8081",
            "9000-9001:9000-9001/udp",
            {"target": 8443, "app_protocol": "https", "published": 443},
            {"target": 7000, "app_protocol": "http"},
        ]
    }
    plans = {(p.port, p.transport, p.protocol) for p in port_plans("web", service)}
    assert plans == {
        (8080, "tcp", "TCP"),
        (8081, "tcp", "TCP"),
        (9000, "udp", "UDP"),
        (9001, "udp", "UDP"),
        (8443, "tcp", "HTTPS"),
        (7000, "tcp", "HTTP"),
    }
    with pytest.raises(ComposeError, match=r"services.web.ports\[0\]"):
        port_plans("web", {"ports": ["1-5000"]})


def test_rewrite_sets_limits_hardening_labels_and_ports() -> None:
    document = parse(
        """
services:
  web:
    image: busybox:local
    command: ["sh", "-c", "echo $$HOME and ${X:-d}"]
    ports: ["0.0.0.0:80:8080"]
    cpus: 4
    mem_limit: 64g
    restart: always
    labels: [tier=front]
    deploy: {resources: {limits: {cpus: "9"}}, restart_policy: {condition: any}}
  db:
    image: busybox:local
volumes: {data: {}}
"""
    )
    limits = shares(document["services"], Resources(2, 2, 0), host_cpus=2)
    out = yaml.safe_load(dump(rewrite(document, limits, SETTINGS)))
    web = out["services"]["web"]
    assert web["command"] == ["sh", "-c", "echo $$HOME and d"]  # compose will give $HOME
    assert web["ports"] == [{"target": 8080, "protocol": "tcp", "host_ip": "127.0.0.1"}]
    assert web["mem_limit"] == web["memswap_limit"] == limits["web"].memory
    assert web["cpus"] == limits["web"].cpus
    assert web["restart"] == "no" and "resources" not in web["deploy"]
    assert "restart_policy" not in web["deploy"]
    assert web["cap_drop"] == ["ALL"] and "NET_RAW" not in web["cap_add"]
    assert web["security_opt"] == ["no-new-privileges:true"]
    assert web["labels"]["tier"] == "front" and web["labels"]["execbroker.session"] == "s1"
    assert json.loads(web["labels"][LABEL_PORTS])[0]["port"] == 8080
    assert out["networks"]["default"]["labels"]["execbroker.broker"] == "b"
    assert out["volumes"]["data"]["labels"]["execbroker.session"] == "s1"
    assert document["services"]["web"]["cpus"] == 4  # the checked document is untouched


def test_yaml_is_read_as_compose_reads_it() -> None:
    document = parse("services: {web: {image: x, environment: {DEBUG: yes, MODE: on}}}")
    assert document["services"]["web"]["environment"] == {"DEBUG": "yes", "MODE": "on"}
    out = dump(document)
    assert yaml.safe_load(out)["services"]["web"]["environment"]["DEBUG"] == "yes"
    assert parse("services: {web: {image: x, privileged: true}}")["services"]["web"]["privileged"]


def test_memory_mounts_are_held_to_the_share_of_the_grant() -> None:
    document = parse(
        """
services:
  web:
    image: x
    shm_size: 64m
    tmpfs: [/run, "/cache:mode=1777,size=128m"]
    volumes: [{type: tmpfs, target: /t}, {type: tmpfs, target: /u, tmpfs: {size: 1024}}]
"""
    )
    limits = shares(document["services"], Resources(1, 1, 0), host_cpus=2)
    web = rewrite(document, limits, SETTINGS)["services"]["web"]
    assert web["shm_size"] == 64 * 1024**2
    assert web["tmpfs"] == [f"/run:size={GIB}", f"/cache:mode=1777,size={128 * 1024**2}"]
    assert [v["tmpfs"]["size"] for v in web["volumes"]] == [GIB, 1024]
    for field, value in (("shm_size", "2g"), ("tmpfs", ["/x:size=2g"])):
        too_big = parse(f"services: {{web: {{image: x, {field}: {json.dumps(value)}}}}}")
        with pytest.raises(ComposeError, match=f"services.web.{field}.*share of the grant"):
            rewrite(too_big, shares(too_big["services"], Resources(1, 1, 0), host_cpus=2), SETTINGS)


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ("services: {web: {image: x, networks: 5}}", "services.web.networks"),
        ("services: {web: {image: x}}\nnetworks: [a]", "networks"),
        ("services: {web: {image: x}}\nvolumes: {v: [1]}", "volumes.v"),
        ("services: {web: {image: x, labels: {a: {b: c}}}}", "services.web.labels.a"),
        ("services: {web: {image: x, deploy: {resources: {limits: [1]}}}}", "services.web.deploy"),
    ],
)
def test_fields_of_the_wrong_shape_name_their_path(text: str, field: str) -> None:
    with pytest.raises(ComposeError, match=f"^executable.compose: {field}"):
        parse(text)


def test_nesting_is_bounded() -> None:
    with pytest.raises(ComposeError, match="nested deeper than 64"):
        parse("services: {web: {image: x, x-deep: " + "[" * 100 + "]" * 100 + "}}")
