"""The safe fetcher on its own: address classes, the config's allowances, and real fetches
from test servers on loopback addresses (redirects, sizes, time)."""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Iterator

import pytest
from pydantic import ValidationError

from execbroker.fetch import (
    MAX_REDIRECTS,
    FetchError,
    FetchPolicy,
    FetchRefused,
    address_class,
    allowing,
    checked_address,
    current_policy,
    fetch,
    location_reason,
)
from tests.sites import Site

LOOPBACK = FetchPolicy(allow=["127.0.0.1/32"])


@pytest.mark.parametrize(
    ("address", "named"),
    [
        ("127.0.0.1", "loopback"),
        ("127.255.0.9", "loopback"),
        ("::1", "loopback"),
        ("::ffff:127.0.0.1", "loopback address (IPv4 127.0.0.1 inside IPv6)"),
        ("64:ff9b::7f00:1", "loopback address (IPv4 127.0.0.1"),
        ("2002:7f00:1::", "loopback address (IPv4 127.0.0.1"),
        ("169.254.169.254", "cloud metadata"),
        ("fd00:ec2::254", "cloud metadata"),
        ("100.100.100.200", "cloud metadata"),
        ("169.254.10.1", "link-local"),
        ("fe80::1", "link-local"),
        ("10.1.2.3", "private"),
        ("172.16.0.1", "private"),
        ("192.168.1.1", "private"),
        ("fc00::1", "private"),
        ("::ffff:10.0.0.1", "private"),
        ("100.64.0.1", "shared (CGNAT)"),
        ("224.0.0.1", "multicast"),
        ("ff02::1", "multicast"),
        ("0.0.0.0", "unspecified"),
        ("::", "unspecified"),
        ("240.0.0.1", "reserved"),
        ("192.0.2.1", "private"),  # documentation ranges count as private in the stdlib
    ],
)
def test_every_non_public_address_is_named(address, named):
    found = address_class(ipaddress.ip_address(address))
    assert found is not None and named in found


@pytest.mark.parametrize("address", ["8.8.8.8", "1.1.1.1", "2606:4700:4700::1111"])
def test_public_addresses_pass(address):
    assert address_class(ipaddress.ip_address(address)) is None


def test_the_policy_is_closed_by_default_and_names_what_it_opens():
    assert current_policy().allow == []
    policy = FetchPolicy(allow=["127.0.0.1/32", "10.0.0.0/8", "files.example.org", "::1"])
    assert policy.allows_address(ipaddress.ip_address("10.9.8.7"))
    assert policy.allows_address(ipaddress.ip_address("::1"))
    assert not policy.allows_address(ipaddress.ip_address("127.0.0.2"))
    assert policy.allows_host("Files.Example.org.") and not policy.allows_host("example.org")
    for bad in ("not a host!", "10.0.0.0/33", "a..b"):
        with pytest.raises(ValidationError):
            FetchPolicy(allow=[bad])
    with pytest.raises(ValidationError):
        FetchPolicy.model_validate({"allow": [], "anything": True})


def test_offer_time_reasons_need_no_dns():
    assert "http or https" in location_reason("file:///etc/passwd")
    assert "http or https" in location_reason("gopher://127.0.0.1/")
    assert "loopback" in location_reason("http://localhost:8080/x")
    assert "loopback" in location_reason("http://[::1]/x")
    assert "cloud metadata" in location_reason("http://169.254.169.254/latest/meta-data/")
    assert location_reason("https://example.org/x.ipynb") is None
    assert location_reason("http://127.0.0.1/x", LOOPBACK) is None
    with allowing(LOOPBACK):
        assert location_reason("http://127.0.0.1/x") is None
    assert location_reason("http://127.0.0.1/x") is not None


def test_one_forbidden_answer_of_the_resolver_is_enough_to_refuse():
    # localhost resolves to 127.0.0.1 (and often ::1): allowing one network is not the other.
    with pytest.raises(FetchRefused, match="localhost"):
        checked_address("localhost", 80, FetchPolicy(allow=["10.0.0.0/8"]))
    assert str(checked_address("localhost", 80, FetchPolicy(allow=["localhost"]))) in (
        "127.0.0.1",
        "::1",
    )


@pytest.fixture
def sites() -> Iterator[tuple[Site, Site]]:
    other = Site("127.0.0.2", {"/x": (200, {}, b"other")})
    routes = {
        "/ok": (200, {"Content-Type": "text/plain"}, b"hello"),
        "/big": (200, {}, b"x" * 5000),
        "/loop": (302, {"Location": "/loop"}, b""),
        "/to-file": (302, {"Location": "file:///etc/passwd"}, b""),
        "/to-other": (307, {"Location": f"{other.base}/x"}, b""),
        "/hop": (301, {"Location": "/ok"}, b""),
        "/slow": (200, {}, b"s" * 100),
    }
    main = Site("127.0.0.1", routes, unsized=frozenset({"/big"}), trickle={"/slow": 0.05})
    yield main, other
    main.close()
    other.close()


def test_fetches_obey_the_policy_on_every_hop(sites):
    main, other = sites
    with pytest.raises(FetchRefused, match=r"127\.0\.0\.1 is a loopback address"):
        fetch(f"{main.base}/ok", max_bytes=100)
    assert main.hits == []
    fetched = fetch(f"{main.base}/hop", max_bytes=100, policy=LOOPBACK)
    assert fetched.body == b"hello" and fetched.url.endswith("/ok")
    with pytest.raises(FetchRefused, match=r"127\.0\.0\.2 is a loopback address"):
        fetch(f"{main.base}/to-other", max_bytes=100, policy=LOOPBACK)
    assert other.hits == []
    with pytest.raises(FetchRefused, match="http or https"):
        fetch(f"{main.base}/to-file", max_bytes=100, policy=LOOPBACK)
    with pytest.raises(FetchError, match=f"more than {MAX_REDIRECTS} redirects"):
        fetch(f"{main.base}/loop", max_bytes=100, policy=LOOPBACK)
    assert main.hits.count("/loop") == MAX_REDIRECTS + 1
    with pytest.raises(FetchError, match="HTTP 404"):
        fetch(f"{main.base}/missing", max_bytes=100, policy=LOOPBACK)


def test_fetches_stop_at_the_size_and_time_limits(sites):
    main, _ = sites
    with pytest.raises(FetchError, match="larger than 1000 bytes"):
        fetch(f"{main.base}/big", max_bytes=1000, policy=LOOPBACK)
    assert len(fetch(f"{main.base}/big", max_bytes=5000, policy=LOOPBACK).body) == 5000
    started = time.monotonic()
    with pytest.raises(FetchError, match=r"too long|no answer"):
        fetch(f"{main.base}/slow", max_bytes=1000, timeout=1.0, policy=LOOPBACK)
    assert time.monotonic() - started < 3  # 100 bytes would take 5 s
