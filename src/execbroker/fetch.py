"""The one way the broker fetches a ``location:`` (notebooks, compose files, later data).

A location is the user's URL, fetched by the broker from the broker's own network, so it
must not reach what the user could not: the broker's loopback services, the cloud's metadata
endpoint, the site's private networks. Hence, for every connection (the first and each
redirect's):

- only ``http`` and ``https``;
- the host is resolved here, and every address it resolves to is checked: loopback,
  link-local (metadata), private, shared (CGNAT), multicast, unspecified and reserved
  addresses are refused, IPv4 and IPv6 alike, including IPv4 embedded in IPv6
  (``::ffff:127.0.0.1``, 6to4, NAT64, Teredo);
- the connection is made to the address that was checked, never by resolving the name again
  (no window for DNS rebinding); TLS still verifies the certificate against the host name;
- at most ``MAX_REDIRECTS`` redirects, a size limit and a limit on the whole fetch's time.

A platform loosens this only explicitly, in its config::

    platforms:
      - type: local
        fetch: {allow: ["127.0.0.1/32", "10.1.0.0/16", "files.example.org"]}

Each entry is a network (an address is a /32 or /128), whose addresses may be fetched from,
or a host name, which may be fetched from whatever it resolves to. ``platforms.create_platform``
takes ``fetch`` off every platform's options and runs that platform's ``check`` and ``start``
inside ``allowing(policy)``, so every backend's fetches obey their own platform's policy.

Every refusal is a FetchError whose message is fit for the URL's owner and names the address
class (``127.0.0.1 is a loopback address``); what a server answered is never echoed.
"""

from __future__ import annotations

import contextlib
import ipaddress
import socket
import ssl
import time
from collections.abc import Iterable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any
from urllib.parse import urljoin

import httpcore
import httpx
from pydantic import BaseModel, ConfigDict, Field, field_validator

MAX_REDIRECTS = 5
DEFAULT_TIMEOUT = 30.0
SCHEMES = ("http", "https")
REDIRECTS = (301, 302, 303, 307, 308)
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

# Addresses that answer as a cloud's instance metadata service (AWS, GCP, Azure, OpenStack;
# Alibaba's is in the CGNAT range, AWS's IPv6 one in fd00::/8): named as such in refusals.
METADATA = frozenset(
    ipaddress.ip_address(a) for a in ("169.254.169.254", "169.254.170.2", "fd00:ec2::254")
) | {ipaddress.ip_address("100.100.100.200")}
_SHARED = ipaddress.ip_network("100.64.0.0/10")
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_LOCAL_NAMES = ("localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback")


class FetchError(Exception):
    """A location could not be fetched; the message is fit to show the location's owner."""


class FetchRefused(FetchError):
    """A location this platform may not fetch from (an address class, a scheme)."""


class FetchPolicy(BaseModel):
    """A platform's ``fetch:`` config: what it may fetch from besides public addresses."""

    model_config = ConfigDict(extra="forbid")

    allow: list[str] = Field(default_factory=list)

    @field_validator("allow")
    @classmethod
    def _entries(cls, value: list[str]) -> list[str]:
        for entry in value:
            if _network(entry) is None and not _is_host_name(entry):
                raise ValueError(f"{entry!r} is neither a network (a.b.c.d/n) nor a host name")
        return value

    def networks(self) -> list[Network]:
        return [net for net in (_network(entry) for entry in self.allow) if net is not None]

    def allows_host(self, host: str) -> bool:
        name = _normal_host(host)
        return any(_network(e) is None and _normal_host(e) == name for e in self.allow)

    def allows_address(self, address: IPAddress) -> bool:
        return any(address in network for network in self.networks())


_POLICY: ContextVar[FetchPolicy | None] = ContextVar("fetch_policy", default=None)
_CLOSED = FetchPolicy()


def current_policy() -> FetchPolicy:
    """The policy ``allowing`` set; outside any, public addresses only."""
    return _POLICY.get() or _CLOSED


@contextlib.contextmanager
def allowing(policy: FetchPolicy) -> Iterator[None]:
    """Fetches made inside (in this thread or task) obey ``policy``."""
    token = _POLICY.set(policy)  # a ContextVar: each thread and task sees its own
    try:
        yield
    finally:
        _POLICY.reset(token)


def _network(entry: str) -> Network | None:
    try:
        return ipaddress.ip_network(entry.strip(), strict=False)
    except ValueError:
        return None


def _is_host_name(entry: str) -> bool:
    labels = _normal_host(entry).split(".")
    return all(
        0 < len(label) <= 63 and label.replace("-", "").isalnum() and label.isascii()
        for label in labels
    )


def _normal_host(host: str) -> str:
    return host.strip().strip("[]").rstrip(".").lower()


# -- address classes --------------------------------------------------------------------


def _embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 one stands for (v4-mapped, 6to4, NAT64, Teredo), if any."""
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address.teredo is not None:
        return address.teredo[1]
    if address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def address_class(address: IPAddress) -> str | None:
    """What kind of non-public address this is (``"a loopback address"``), or None if public."""
    if isinstance(address, ipaddress.IPv6Address):
        inner = _embedded_ipv4(address)
        if inner is not None:
            found = address_class(inner)
            return f"{found} (IPv4 {inner} inside IPv6)" if found else None
    checks = (
        (address in METADATA, "a cloud metadata address"),
        (address.is_unspecified, "an unspecified address"),
        (address.is_loopback, "a loopback address"),
        (address.is_link_local, "a link-local address"),
        (address.is_multicast, "a multicast address"),
        (address in _SHARED, "a shared (CGNAT) address"),
        (address.is_reserved, "a reserved address"),
        (address.is_private, "a private address"),
        (not address.is_global, "not a public address"),
    )
    return next((name for hit, name in checks if hit), None)


def address_refusal(host: str, address: IPAddress, policy: FetchPolicy) -> str | None:
    """Why ``host`` at ``address`` may not be fetched from under ``policy``, or None."""
    if policy.allows_host(host) or policy.allows_address(address):
        return None
    found = address_class(address)
    if found is None:
        return None
    shown = host if _literal(host) == address else f"{host} ({address})"
    return (
        f"{shown} is {found}: this platform fetches only from public addresses "
        "unless its config's fetch.allow lists the host or network"
    )


def location_reason(url: str, policy: FetchPolicy | None = None) -> str | None:
    """Why ``url`` will not be fetched, as far as can be told without DNS (at offer time):
    its scheme, a literal address or a name of the loopback host. None: it may be fetched."""
    policy = policy or current_policy()
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError, ValueError):
        return f"location must be an http or https URL, not {url[:100]!r}"
    if parsed.scheme not in SCHEMES or not parsed.host:
        return f"location must be an http or https URL, not {url[:100]!r}"
    host = parsed.host
    literal = _literal(host)
    if literal is not None:
        return address_refusal(host, literal, policy)
    name = _normal_host(host)
    if (name in _LOCAL_NAMES or name.endswith(".localhost")) and not policy.allows_host(name):
        return address_refusal(name, ipaddress.ip_address("127.0.0.1"), policy)
    return None


def _literal(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(_normal_host(host).split("%")[0])
    except ValueError:
        return None


# -- connecting -------------------------------------------------------------------------


def resolve(host: str, port: int) -> list[IPAddress]:
    """Every address ``host`` resolves to for TCP (a literal address is itself)."""
    literal = _literal(host)
    if literal is not None:
        return [literal]
    try:
        found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as error:
        raise FetchError(f"cannot resolve {host}: {error}") from None
    addresses: list[IPAddress] = []
    for family, *_, sockaddr in found:
        if family in (socket.AF_INET, socket.AF_INET6):
            address = ipaddress.ip_address(str(sockaddr[0]).split("%")[0])
            if address not in addresses:
                addresses.append(address)
    if not addresses:
        raise FetchError(f"cannot resolve {host}: no IPv4 or IPv6 address")
    return addresses


def checked_address(host: str, port: int, policy: FetchPolicy) -> IPAddress:
    """The address to connect to for ``host``: every address it resolves to must be allowed
    (one forbidden answer is enough to refuse: the resolver's order is not ours to trust)."""
    addresses = resolve(host, port)
    for address in addresses:
        reason = address_refusal(host, address, policy)
        if reason is not None:
            raise FetchRefused(reason)
    return addresses[0]


class _GuardedBackend(httpcore.SyncBackend):
    """httpcore's socket backend, connecting only to an address it has checked itself."""

    def __init__(self, policy: FetchPolicy) -> None:
        self.policy = policy

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        address = checked_address(host, port, self.policy)
        return super().connect_tcp(str(address), port, timeout, local_address, socket_options)

    def connect_unix_socket(self, *args: Any, **kwargs: Any) -> httpcore.NetworkStream:
        raise FetchRefused("fetching from a unix socket is not allowed")


# -- fetching ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Fetched:
    url: str  # after redirects
    content_type: str
    body: bytes


_TRANSPORT_ERRORS = (
    httpcore.NetworkError,
    httpcore.TimeoutException,
    httpcore.ProtocolError,
    httpcore.UnsupportedProtocol,
    httpcore.ProxyError,
    ssl.SSLError,
    OSError,
)


def fetch(
    url: str,
    *,
    max_bytes: int,
    timeout: float = DEFAULT_TIMEOUT,
    policy: FetchPolicy | None = None,
    what: str = "the document",
) -> Fetched:
    """GET ``url`` under ``policy`` (default: the current one); FetchError saying why not.

    ``timeout`` bounds the whole fetch (redirects and a slow trickle of bytes included)."""
    policy = policy or current_policy()
    deadline = time.monotonic() + timeout
    current = url
    with httpcore.ConnectionPool(
        ssl_context=ssl.create_default_context(),
        network_backend=_GuardedBackend(policy),
        max_keepalive_connections=0,
    ) as pool:
        for _ in range(MAX_REDIRECTS + 1):
            target = _parsed(current)
            try:
                status, headers, body = _get(pool, target, deadline, max_bytes, what, url)
            except FetchError:
                raise
            except _TRANSPORT_ERRORS as error:
                if time.monotonic() >= deadline:
                    raise FetchError(f"could not fetch {url}: no answer in {timeout:g}s") from None
                kind = type(error).__name__
                raise FetchError(f"could not fetch {url}: {kind} {error}") from None
            if status in REDIRECTS and "location" in headers:
                current = urljoin(str(target), headers["location"])
                continue
            if status != 200:
                raise FetchError(f"could not fetch {url}: HTTP {status}")
            return Fetched(str(target), headers.get("content-type", ""), body)
    raise FetchError(f"could not fetch {url}: more than {MAX_REDIRECTS} redirects")


def _parsed(url: str) -> httpx.URL:
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError, ValueError):
        raise FetchRefused(f"location must be an http or https URL, not {url[:100]!r}") from None
    if parsed.scheme not in SCHEMES or not parsed.host:
        raise FetchRefused(f"location must be an http or https URL, not {url[:100]!r}")
    return parsed


def _get(
    pool: httpcore.ConnectionPool,
    url: httpx.URL,
    deadline: float,
    max_bytes: int,
    what: str,
    original: str,
) -> tuple[int, dict[str, str], bytes]:
    """One GET: status, headers (lower-case names) and at most ``max_bytes`` of body."""

    def remaining() -> float:
        left = deadline - time.monotonic()
        if left <= 0:
            raise FetchError(f"could not fetch {original}: it took too long")
        return left

    left = remaining()
    with pool.stream(
        "GET",
        httpcore.URL(scheme=url.raw_scheme, host=url.raw_host, port=url.port, target=url.raw_path),
        headers=[(b"Host", url.netloc), (b"Accept", b"*/*"), (b"User-Agent", b"execbroker")],
        extensions={"timeout": {"connect": left, "read": left, "write": left, "pool": left}},
    ) as response:
        headers = {
            name.decode("latin-1").lower(): value.decode("latin-1")
            for name, value in response.headers
        }
        if response.status != 200:
            return response.status, headers, b""
        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > max_bytes:
            raise FetchError(f"{what} at {original} is larger than {max_bytes} bytes")
        body = bytearray()
        for chunk in response.iter_stream():
            body += chunk
            if len(body) > max_bytes:
                raise FetchError(f"{what} at {original} is larger than {max_bytes} bytes")
            remaining()
        return response.status, headers, bytes(body)


# -- uploading --------------------------------------------------------------------------

UPLOADED = (200, 201, 204)


def upload(
    url: str,
    body: bytes,
    *,
    timeout: float = DEFAULT_TIMEOUT,
    policy: FetchPolicy | None = None,
) -> None:
    """PUT ``body`` at ``url`` under the same rules as ``fetch`` (the address of the one
    connection checked, never resolved again). A redirect is not followed (the body would go
    where its owner did not say): it fails, as does any answer but 200, 201 or 204, whose
    body is never read. FetchError saying why."""
    policy = policy or current_policy()
    target = _parsed(url)
    deadline = time.monotonic() + timeout
    headers = [
        (b"Host", target.netloc),
        (b"Content-Type", b"application/octet-stream"),
        (b"Content-Length", str(len(body)).encode()),
        (b"User-Agent", b"execbroker"),
    ]
    with httpcore.ConnectionPool(
        ssl_context=ssl.create_default_context(),
        network_backend=_GuardedBackend(policy),
        max_keepalive_connections=0,
    ) as pool:
        left = max(0.001, deadline - time.monotonic())
        limits = {"connect": left, "read": left, "write": left, "pool": left}
        try:
            with pool.stream(
                "PUT",
                httpcore.URL(
                    scheme=target.raw_scheme,
                    host=target.raw_host,
                    port=target.port,
                    target=target.raw_path,
                ),
                headers=headers,
                content=body,
                extensions={"timeout": limits},
            ) as response:
                status = response.status
        except FetchError:
            raise
        except _TRANSPORT_ERRORS as error:
            if time.monotonic() >= deadline:
                raise FetchError(f"could not upload to {url}: no answer in {timeout:g}s") from None
            raise FetchError(f"could not upload to {url}: {type(error).__name__} {error}") from None
    if status not in UPLOADED:
        raise FetchError(f"could not upload to {url}: HTTP {status}")
