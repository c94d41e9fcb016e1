"""An asynchronous client for one ExecutionBroker.

One ``BrokerClient`` per broker; many of them run side by side in one event loop (see
``fanout``), which is why this is async: a client asking ten brokers should wait for
the slowest, not for the sum of them.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import time
from collections.abc import Awaitable, Callable, Iterable
from types import TracebackType
from typing import Any, TypeVar

import httpx

from execbroker import __version__, kinds
from execbroker.client.results import (
    FINAL_PHASES,
    BrokerInfo,
    Logs,
    OfferSet,
    Session,
    session_list,
)

DEFAULT_TIMEOUT = 30.0
POLL_INTERVAL = 0.25

OnChange = Callable[[Session], Awaitable[None] | None]
_Parsed = TypeVar("_Parsed")


class BrokerClientError(Exception):
    """A broker said no to a call (``status_code`` and its ``detail``), or could not be reached.

    ``status_code`` is None when no HTTP answer came back at all (see the subclasses).
    """

    def __init__(
        self,
        detail: str,
        *,
        status_code: int | None = None,
        url: str = "",
        body: dict[str, Any] | None = None,
    ) -> None:
        self.detail = detail
        self.status_code = status_code
        self.url = url
        self.body = body or {}
        super().__init__(f"{status_code}: {detail}" if status_code else detail)

    @property
    def conflict(self) -> bool:
        """409: the session's phase does not allow it, or the offer no longer fits."""
        return self.status_code == 409

    @property
    def reasons(self) -> list[str]:
        """The reasons a broker gave with a NO (``/direct`` answers NO as a 400 with messages)."""
        return [str(item.get("message", "")) for item in self.body.get("messages") or []]


class BrokerUnreachable(BrokerClientError):
    """The request never reached the broker (refused, no route, bad name): it did nothing."""


class BrokerNoAnswer(BrokerClientError):
    """Sent, but no answer came back (timeout, dropped connection): the broker may have acted."""


class BrokerBadAnswer(BrokerClientError):
    """The broker answered, but not with what was asked for: not JSON, not an object, or not
    of the document's shape (an offer that is a number, a result that is neither YES nor NO)."""


class WaitTimeout(BrokerClientError):
    """``wait`` gave up: the session had not reached the phase asked for in time."""


# Transport failures that happen before a request is on its way: nothing was done.
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout, httpx.UnsupportedProtocol)


@functools.cache
def _tls_context() -> Any:
    """One TLS context for every client: making one loads the CA bundle (~20 ms), which a
    fan-out to ten brokers would otherwise pay ten times before sending anything."""
    return httpx.create_ssl_context()


def _detail(response: httpx.Response) -> tuple[str, dict[str, Any]]:
    try:
        body = response.json()
    except ValueError:
        return response.text.strip()[:500] or response.reason_phrase, {}
    if not isinstance(body, dict):
        return str(body)[:500], {}
    detail = body.get("detail")
    if isinstance(detail, list):  # FastAPI's own validation errors
        detail = "; ".join(
            f"{'.'.join(str(part) for part in item.get('loc', []))}: {item.get('msg', '')}"
            for item in detail
            if isinstance(item, dict)
        )
    return str(detail or response.reason_phrase), body


def shared_pool(timeout: float = DEFAULT_TIMEOUT) -> httpx.AsyncClient:
    """One HTTP pool for many brokers (``BrokerClient(..., pool=)``): what a fan-out uses, so
    asking ten brokers builds one client, not ten (each ~1 ms of CPU before anything is sent).
    Whoever makes it closes it."""
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=100)
    return httpx.AsyncClient(
        headers=_HEADERS, timeout=timeout, verify=_tls_context(), limits=limits
    )


_HEADERS = {"Accept": "application/json", "User-Agent": f"execbroker-client/{__version__}"}


class BrokerClient:
    """One broker, over one HTTP connection pool (its own, or a ``shared_pool`` given).

    ``async with BrokerClient(url, token) as broker: answer = await broker.request_offers(...)``
    """

    def __init__(
        self,
        url: str,
        token: str | None,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        pool: httpx.AsyncClient | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout
        self._auth = {"Authorization": f"Bearer {token}"} if token else {}
        self._own = pool is None
        self._http = pool or httpx.AsyncClient(
            headers=_HEADERS, timeout=timeout, verify=_tls_context()
        )

    async def __aenter__(self) -> BrokerClient:
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._own:  # a shared pool is closed by whoever made it
            await self._http.aclose()

    # -- the calls ------------------------------------------------------------------------

    async def health(self) -> dict[str, Any]:
        return await self._call("GET", "/health")

    async def info(self) -> BrokerInfo:
        return await self._read(BrokerInfo.from_wire, "GET", "/info")

    async def request_offers(self, request: dict[str, Any]) -> OfferSet:
        """Ask for offers: an OfferSet that is YES with offers, or NO with reasons."""
        return await self._read(OfferSet.from_wire, "POST", "/requests", json=request)

    async def offerset(self, uuid: str) -> OfferSet:
        return await self._read(OfferSet.from_wire, "GET", f"/offersets/{uuid}")

    async def direct(self, request: dict[str, Any]) -> Session:
        """Run at once on the broker's own best offer; a NO is a 400 whose ``reasons`` say why."""
        return await self._read(Session.from_wire, "POST", "/direct", json=request)

    async def session(self, uuid: str) -> Session:
        return await self._read(Session.from_wire, "GET", f"/sessions/{uuid}")

    async def sessions(self, phases: Iterable[str] = ()) -> list[Session]:
        """The caller's sessions, newest first (an admin's token: everyone's)."""
        params = [("phase", phase.upper()) for phase in phases]
        return await self._read(session_list, "GET", "/sessions", params=params)

    async def logs(self, uuid: str) -> Logs:
        return await self._read(Logs.from_wire, "GET", f"/sessions/{uuid}/logs")

    async def update(self, uuid: str, phase: str) -> Session:
        update = {"kind": kinds.ENUM_VALUE_UPDATE, "path": "phase", "value": phase}
        return await self._read(Session.from_wire, "POST", f"/sessions/{uuid}", json=update)

    async def accept(self, uuid: str) -> Session:
        return await self.update(uuid, "ACCEPTED")

    async def reject(self, uuid: str) -> Session:
        return await self.update(uuid, "REJECTED")

    async def cancel(self, uuid: str) -> Session:
        return await self.update(uuid, "CANCELLED")

    async def wait(
        self,
        uuid: str,
        phases: Iterable[str] = FINAL_PHASES,
        *,
        on_change: OnChange | None = None,
        timeout: float | None = None,
        interval: float = POLL_INTERVAL,
    ) -> Session:
        """Follow a session until it reaches one of ``phases`` (by default: until it ends).

        ``on_change`` (plain or async) is called with the session first and then each time
        its phase, connectors or messages change. Raises WaitTimeout after ``timeout``
        seconds, and returns early if the session ends in a phase not asked for.
        """
        wanted = {phase.upper() for phase in phases}
        deadline = None if timeout is None else time.monotonic() + timeout
        seen: tuple[object, ...] | None = None
        while True:
            current = await self.session(uuid)
            state = (current.phase, current.connectors, current.messages)
            if state != seen:
                seen = state
                if on_change is not None:
                    outcome = on_change(current)
                    if inspect.isawaitable(outcome):
                        await outcome
            if current.phase in wanted or current.final:
                return current
            if deadline is not None and time.monotonic() >= deadline:
                raise WaitTimeout(
                    f"session {uuid} is still {current.phase} after {timeout:g}s",
                    url=f"{self.url}/sessions/{uuid}",
                )
            await asyncio.sleep(interval)

    # -- plumbing -------------------------------------------------------------------------

    async def _read(
        self, parse: Callable[[dict[str, Any]], _Parsed], method: str, path: str, **options: Any
    ) -> _Parsed:
        """A call whose answer is read by ``parse``: one it cannot read is a BrokerBadAnswer,
        never an exception from deep in the parsing."""
        body = await self._call(method, path, **options)
        try:
            return parse(body)
        except (AttributeError, TypeError, ValueError, KeyError) as error:
            raise BrokerBadAnswer(
                f"{self.url} answered {method} {path} with a document that is not of its "
                f"shape ({type(error).__name__}: {error})",
                url=f"{self.url}{path}",
                body=body,
            ) from error

    async def _call(self, method: str, path: str, **options: Any) -> dict[str, Any]:
        url = f"{self.url}{path}"
        try:
            response = await self._http.request(
                method, url, headers=self._auth, timeout=self.timeout, **options
            )
        except _NOT_SENT as error:
            reason = str(error) or type(error).__name__
            raise BrokerUnreachable(f"cannot reach {self.url}: {reason}", url=url) from error
        except httpx.TimeoutException as error:
            raise BrokerNoAnswer(
                f"no answer from {self.url} within {self.timeout:g}s", url=url
            ) from error
        except httpx.TransportError as error:
            reason = str(error) or type(error).__name__
            raise BrokerNoAnswer(f"lost the answer from {self.url}: {reason}", url=url) from error
        if response.is_error:
            detail, body = _detail(response)
            raise BrokerClientError(detail, status_code=response.status_code, url=url, body=body)
        try:
            body = response.json()
        except ValueError as error:
            raise BrokerBadAnswer(
                f"{self.url} answered {method} {path} with something that is not JSON",
                status_code=response.status_code,
                url=url,
            ) from error
        if not isinstance(body, dict):
            raise BrokerBadAnswer(
                f"{self.url} answered {method} {path} with JSON that is not an object",
                status_code=response.status_code,
                url=url,
            )
        return body
