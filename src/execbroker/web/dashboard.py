"""The client's page (``execbroker dashboard``): many brokers side by side, the last request's
offers from all of them ranked by a policy with ``Choice.explain()``, and the chosen session
followed live.

It runs on the user's own machine with the user's tokens, so it has no login; it listens on
127.0.0.1 by default and its forms carry a CSRF token (another site could make the browser
post to localhost, but cannot read the page to learn the token). The client's own code does
the work: ``ask_all`` and ``choose`` of ``execbroker.client``, as ``execbroker request`` does.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles

from execbroker.client import BrokerClient, BrokerClientError, BrokerTarget, Choice, get_policy
from execbroker.client.fanout import Outcome, ask_all, choose
from execbroker.client.policy import POLICIES
from execbroker.client.results import Session
from execbroker.web import views
from execbroker.web.render import render

STATIC = Path(__file__).parent / "static"
PROBE_EVERY = 2.0  # seconds between looks at each broker's health and free quota
FOLLOW_EVERY = 0.5  # seconds between looks at the chosen session


def load_targets(path: Path, token: str | None) -> list[BrokerTarget]:
    """A brokers file: ``brokers:`` a list of ``[name=]URL[#token]`` or ``{name, url, token}``."""
    data = yaml.safe_load(path.read_text()) or {}
    entries = data.get("brokers") if isinstance(data, dict) else None
    if not isinstance(entries, list) or not entries:
        raise ValueError(f"{path}: brokers: a list of [name=]URL[#token] or {{name, url, token}}")
    targets = []
    for index, entry in enumerate(entries):
        if isinstance(entry, str):
            targets.append(BrokerTarget.parse(entry, token))
        elif isinstance(entry, dict) and isinstance(entry.get("url"), str):
            spec = f"{entry['name']}={entry['url']}" if entry.get("name") else entry["url"]
            target = BrokerTarget.parse(spec, entry.get("token") or token)
            targets.append(target)
        else:
            raise ValueError(f"{path}: brokers[{index}]: a string or a mapping with a url")
    return targets


@dataclass(frozen=True, slots=True)
class Probe:
    """One broker as last seen: up or not, how long /info took, what it has free now."""

    target: BrokerTarget
    up: bool
    latency_ms: float | None
    free: dict[str, int] | None
    quota: dict[str, Any] | None
    error: str | None = None


async def probe(target: BrokerTarget, timeout: float = 3.0) -> Probe:
    began = time.perf_counter()
    try:
        async with httpx.AsyncClient(timeout=timeout) as http:
            response = await http.get(f"{target.url}/info", headers={"Accept": "application/json"})
            response.raise_for_status()
            info = response.json()
    except (httpx.HTTPError, ValueError) as error:
        return Probe(target, False, None, None, None, str(error) or type(error).__name__)
    latency = (time.perf_counter() - began) * 1000
    return Probe(target, True, round(latency, 1), info.get("free"), info.get("quota"))


@dataclass
class State:
    """What the dashboard shows: its brokers, the last choice, and the session it follows."""

    targets: Sequence[BrokerTarget]
    policy: str = "earliest-start"
    timeout: float = 10.0
    csrf: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    task: str = ""
    choice: Choice | None = None
    asked_at: str = ""
    followed: tuple[BrokerTarget, str] | None = None
    probes: list[Probe] = field(default_factory=list)
    session: Session | None = None
    session_error: str | None = None
    version: int = 0  # bumped on each new choice, so streams resend it


def _statuses(choice: Choice) -> dict[str, str]:
    """What became of each offer: accepted, rejected, passed over (accept failed) or best."""
    found: dict[str, str] = {}
    for candidate in choice.rejected:
        found[candidate.offer.uuid] = "rejected"
    for attempt in choice.passed_over:
        found[attempt.candidate.offer.uuid] = f"passed over: {attempt.error}"
    if choice.chosen is not None:
        chosen = choice.chosen
        if choice.accepted:  # its broker rejected the rest of its offer set itself
            for offer in chosen.answer.offers:
                found.setdefault(offer.uuid, "rejected by its broker: a sibling was accepted")
        found[chosen.offer.uuid] = "accepted" if choice.accepted else "best"
    return found


def _brokers_html(state: State) -> str:
    return render("dashboard/_brokers.html", probes=state.probes)


def _choice_html(state: State) -> str:
    choice = state.choice
    return render(
        "dashboard/_choice.html",
        choice=choice,
        statuses=_statuses(choice) if choice else {},
        explain=choice.explain() if choice else [],
        refusals=[a for a in choice.answers if a.outcome != Outcome.YES] if choice else [],
        asked_at=state.asked_at,
        clock=views.clock,
    )


def _session_html(state: State) -> str:
    return render(
        "dashboard/_session.html",
        session=state.session,
        followed=state.followed,
        error=state.session_error,
        csrf=state.csrf,
        clock=views.clock,
    )


def create_dashboard(
    targets: Sequence[BrokerTarget], *, policy: str = "earliest-start", timeout: float = 10.0
) -> FastAPI:
    get_policy(policy)  # a ValueError naming the known ones, before anything starts
    state = State(targets=targets, policy=policy, timeout=timeout)
    app = FastAPI(title="execbroker dashboard", docs_url=None, redoc_url=None)
    app.state.dashboard = state
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    async def refresh_probes() -> None:
        state.probes = list(await asyncio.gather(*(probe(t) for t in state.targets)))

    async def refresh_session() -> None:
        if state.followed is None:
            return
        target, uuid = state.followed
        try:
            async with BrokerClient(target.url, target.token, timeout=5) as client:
                state.session, state.session_error = await client.session(uuid), None
        except BrokerClientError as error:
            state.session_error = f"{target.label}: {error.detail}"

    def parts() -> dict[str, str]:
        return {
            "brokers": _brokers_html(state),
            "choice": _choice_html(state),
            "session": _session_html(state),
        }

    @app.get("/")
    async def page() -> Response:
        if not state.probes:
            await refresh_probes()
        await refresh_session()
        html = render(
            "dashboard/page.html",
            parts=parts(),
            state=state,
            policies=sorted(POLICIES),
            static="/static",
            title="execbroker dashboard",
        )
        return HTMLResponse(html)

    @app.get("/events")
    async def events(request: Request) -> Response:
        async def stream() -> AsyncIterator[str]:
            sent: dict[str, str] = {}
            last_probe = 0.0
            yield "retry: 1000\n\n"
            while not (await request.is_disconnected() or views.stopping(request.app)):
                if time.monotonic() - last_probe >= PROBE_EVERY:
                    await refresh_probes()
                    last_probe = time.monotonic()
                await refresh_session()
                for name, html in parts().items():
                    if sent.get(name) != html:
                        sent[name] = html
                        yield views.sse("fragment", {"id": name, "html": html})
                await asyncio.sleep(FOLLOW_EVERY)

        headers = {"Cache-Control": "no-store"}
        return StreamingResponse(stream(), media_type="text/event-stream", headers=headers)

    async def _form(request: Request) -> Any:
        form = await request.form()
        if not secrets.compare_digest(state.csrf, str(form.get("csrf", ""))):
            return None
        return form

    def _answer(request: Request, status: int, text: str) -> Response:
        if request.headers.get("x-ui") == "fetch" or status >= 400:
            return Response(text, status, media_type="text/plain; charset=utf-8")
        return RedirectResponse("/", 303)

    @app.post("/request")
    async def send(request: Request) -> Response:
        form = await _form(request)
        if form is None:
            return _answer(request, 403, "the form's CSRF token is missing or wrong: reload")
        text = str(form.get("task") or "")
        try:
            document = yaml.safe_load(text)
        except yaml.YAMLError as error:
            return _answer(request, 422, f"task: not valid YAML or JSON: {error}")
        if not isinstance(document, dict) or "executable" not in document:
            return _answer(request, 422, "task: an ExecutionRequest is a mapping with executable")
        policy = str(form.get("policy") or state.policy)
        if policy not in POLICIES:
            return _answer(request, 422, f"policy: {policy!r} is not one of {sorted(POLICIES)}")
        accept = form.get("accept") == "on"
        answers = await ask_all(state.targets, document, timeout=state.timeout)
        choice = await choose(answers, policy=policy, accept=accept, timeout=state.timeout)
        state.task, state.policy, state.choice = text, policy, choice
        state.asked_at = views.clock(choice.ranked_at)
        state.followed, state.session = None, None
        if choice.session is not None and choice.chosen is not None:
            state.followed = (choice.chosen.answer.target, choice.session.uuid)
            state.session = choice.session
        state.version += 1
        return _answer(request, 200, "\n".join(choice.explain()))

    @app.post("/cancel")
    async def cancel(request: Request) -> Response:
        form = await _form(request)
        if form is None:
            return _answer(request, 403, "the form's CSRF token is missing or wrong: reload")
        if state.followed is None:
            return _answer(request, 409, "no session is being followed")
        target, uuid = state.followed
        try:
            async with BrokerClient(target.url, target.token, timeout=state.timeout) as client:
                state.session = await client.cancel(uuid)
        except BrokerClientError as error:
            return _answer(request, error.status_code or 502, error.detail)
        return _answer(request, 200, f"session {uuid} is {state.session.phase}")

    return app
