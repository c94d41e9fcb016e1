"""The broker's own page, ``/ui``: quota, the capacity calendar, offers, NOs and sessions, live.

Thin like the API routers: every rule (whose rows a user sees, which phase may change) is the
service's. Pages are rendered on the server; the one small script (static/ui.js) swaps in the
fragments the event stream sends when they change, and submits forms without a reload. Without
the script every form and link still works, by plain navigation.
"""

from __future__ import annotations

import asyncio
import mimetypes
import secrets
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any, BinaryIO
from uuid import UUID

from fastapi import APIRouter, FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, RedirectResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles

from execbroker.errors import BrokerError, InvalidRequest
from execbroker.model.sessions import Phase
from execbroker.platforms.base import PlatformError
from execbroker.service import BrokerService
from execbroker.web import views
from execbroker.web.auth import COOKIE, LIFETIME, CookieSessions, Login
from execbroker.web.render import render

STATIC = Path(__file__).parent / "static"
TICK = 0.5  # seconds between looks at the database for each open page
PRE_LOGIN = "execbroker_ui_login"  # double-submit cookie of the login form
LOG_LINES = 20

router = APIRouter(prefix="/ui", include_in_schema=False)


def install(app: FastAPI) -> None:
    """Add the page, its event stream and its static files to a broker's app."""
    app.state.ui_sessions = CookieSessions(app.state.config)
    app.mount("/ui/static", StaticFiles(directory=STATIC), name="ui-static")
    app.include_router(router)


def _service(request: Request) -> BrokerService:
    return request.app.state.service


def _login(request: Request) -> Login | None:
    return request.app.state.ui_sessions.check(request.cookies.get(COOKIE))


def _fetching(request: Request) -> bool:
    """A form sent by the page's script, which wants a fragment or a message, not a page."""
    return request.headers.get("x-ui") == "fetch"


def _problem(request: Request, status: int, text: str, login: Login | None = None) -> Response:
    if _fetching(request):
        return Response(text, status, media_type="text/plain; charset=utf-8")
    html = render("error.html", status=status, message=text, login=login, title="Problem")
    return HTMLResponse(html, status)


# -- reading --------------------------------------------------------------------------------


def fragments(
    service: BrokerService, login: Login, view: views.View, monitor: Any = None
) -> dict[str, str]:
    """Every live part of the page, rendered for this user and view."""
    user = login.user
    now = service.clock()
    page = service.session_page(
        user,
        phases=view.table_phases,
        owner=view.owner,
        sort=view.sort,
        descending=view.descending,
        page=view.page,
        per_page=views.PER_PAGE,
    )
    timeline = service.capacity_timeline()
    common = {"view": view, "csrf": login.csrf, "user": user, "now": now}
    found = {
        "summary": render(
            "ui/_summary.html",
            usage=service.usage(),
            phases=service.phase_counts(),
            config=service.config,
            platforms=list(service.platforms),
            health=views.health(monitor, time.monotonic()),
            **common,
        ),
        "timeline": render(
            "ui/_timeline.html",
            timeline=timeline,
            bars=views.timeline_bars(timeline),
            ticks=views.timeline_ticks(timeline),
            horizon=views.horizon(timeline),
            **common,
        ),
        "offers": render("ui/_offers.html", offers=service.open_offers(user), **common),
        "refusals": render("ui/_refusals.html", refusals=service.refusals(user), **common),
        "sessions": render(
            "ui/_sessions.html",
            page=page,
            phases=views.ALL_PHASES,
            cancellable={phase.value for phase in (Phase.ACCEPTED, Phase.WAITING)}
            | {"PREPARING", "AVAILABLE", "RUNNING", "RELEASING"},
            **common,
        ),
        "detail": _detail(service, login, view, common),
    }
    return found


def _detail(service: BrokerService, login: Login, view: views.View, common: dict[str, Any]) -> str:
    if view.show is None:
        return render("ui/_detail.html", row=None, **common)
    row = service.get_session(login.user, view.show)
    try:
        logs = service.logs(login.user, view.show)
        stdout, stderr, problem = _tail(logs.stdout), _tail(logs.stderr), None
    except PlatformError as error:
        stdout, stderr, problem = "", "", f"the platform could not give the logs: {error}"
    outputs = service.outputs(login.user, view.show)
    return render(
        "ui/_detail.html",
        row=row,
        stdout=stdout,
        stderr=stderr,
        problem=problem,
        outputs=outputs,
        **common,
    )


def _tail(text: str) -> str:
    return "\n".join(text.splitlines()[-LOG_LINES:])


def _answer(service: BrokerService, login: Login, uuid: str | None) -> str:
    if uuid is None:
        return ""
    answer = service.get_offerset(login.user, uuid)
    return render(
        "ui/_answer.html",
        answer=answer,
        csrf=login.csrf,
        now=service.clock(),
    )


@router.get("")
async def page(request: Request) -> Response:
    login = _login(request)
    if login is None:
        return RedirectResponse("/ui/login", 303)
    service = _service(request)
    try:
        view = views.View.from_query(request.query_params)
        parts = await run_in_threadpool(fragments, service, login, view, request.app.state.monitor)
        answer = await run_in_threadpool(_answer, service, login, view.answer)
    except BrokerError as error:
        return _problem(request, error.status_code, error.message, login)
    html = render(
        "ui/page.html",
        parts=parts,
        answer=answer,
        login=login,
        user=login.user,
        csrf=login.csrf,
        view=view,
        config=service.config,
        title=f"{service.config.name}: execbroker",
    )
    return HTMLResponse(html)


@router.get("/events")
async def events(request: Request) -> Response:
    """Server-sent events: each fragment of the page whenever it changes."""
    login = _login(request)
    if login is None:
        return Response("log in first", 401, media_type="text/plain")
    try:
        view = views.View.from_query(request.query_params)
    except BrokerError as error:
        return Response(error.message, error.status_code, media_type="text/plain")
    service = _service(request)
    cookie = request.cookies.get(COOKIE)

    async def stream() -> AsyncIterator[str]:
        sent: dict[str, str] = {}
        yield "retry: 1000\n\n"
        while not (await request.is_disconnected() or views.stopping(request.app)):
            if request.app.state.ui_sessions.check(cookie) is None:
                yield views.sse("login", {})
                return
            try:
                parts = await run_in_threadpool(
                    fragments, service, login, view, request.app.state.monitor
                )
            except BrokerError as error:
                yield views.sse("problem", {"message": error.message})
                return
            for name, html in parts.items():
                if sent.get(name) != html:
                    sent[name] = html
                    yield views.sse("fragment", {"id": name, "html": html})
            await asyncio.sleep(TICK)

    headers = {"Cache-Control": "no-store", "X-Accel-Buffering": "no"}
    return StreamingResponse(stream(), media_type="text/event-stream", headers=headers)


# -- logging in and out ---------------------------------------------------------------------


@router.get("/login")
def login_form(request: Request) -> Response:
    nonce = secrets.token_urlsafe(16)
    html = render("login.html", nonce=nonce, message=None, login=None, title="Log in")
    response = HTMLResponse(html)
    response.set_cookie(PRE_LOGIN, nonce, max_age=600, httponly=True, samesite="strict", path="/ui")
    return response


@router.post("/login")
async def login(request: Request) -> Response:
    form = await request.form()
    nonce = request.cookies.get(PRE_LOGIN)
    if not nonce or not secrets.compare_digest(nonce, str(form.get("nonce", ""))):
        return _problem(request, 403, "the login form has expired: load it again")
    found = request.app.state.ui_sessions.login(str(form.get("token", "")))
    if found is None:
        html = render(
            "login.html", nonce=nonce, message="unknown token", login=None, title="Log in"
        )
        return HTMLResponse(html, 401)
    response = RedirectResponse("/ui", 303)
    secure = request.url.scheme == "https"
    response.set_cookie(
        COOKIE,
        found.cookie,
        max_age=LIFETIME,
        httponly=True,
        samesite="strict",
        secure=secure,
        path="/ui",
    )
    response.delete_cookie(PRE_LOGIN, path="/ui")
    return response


async def _checked(request: Request) -> tuple[Login, Any] | Response:
    """The login and form of a POST, or the 403 for a missing login or CSRF token."""
    login = _login(request)
    if login is None:
        return _problem(request, 401, "log in first")
    form = await request.form()
    if not CookieSessions.csrf_ok(login, str(form.get("csrf", ""))):
        return _problem(request, 403, "the form's CSRF token is missing or wrong: reload the page")
    return login, form


@router.post("/logout")
async def logout(request: Request) -> Response:
    checked = await _checked(request)
    if isinstance(checked, Response):
        return checked
    response = RedirectResponse("/ui/login", 303)
    response.delete_cookie(COOKIE, path="/ui")
    return response


# -- changing -------------------------------------------------------------------------------


@router.post("/sessions/{uuid}/phase")
async def change_phase(uuid: UUID, request: Request) -> Response:
    """Accept, reject or cancel from the page (the service checks owner and phase)."""
    checked = await _checked(request)
    if isinstance(checked, Response):
        return checked
    login, form = checked
    try:
        row = await run_in_threadpool(
            _service(request).update_phase, login.user, str(uuid), str(form.get("value", ""))
        )
    except BrokerError as error:
        return _problem(request, error.status_code, error.message, login)
    if _fetching(request):
        return Response(f"session {row.uuid} is {row.phase}", media_type="text/plain")
    return RedirectResponse(f"/ui?show={row.uuid}", 303)


@router.post("/request")
async def send_request(request: Request) -> Response:
    """Ask this broker for offers: a task file (YAML or JSON) or the form's fields."""
    checked = await _checked(request)
    if isinstance(checked, Response):
        return checked
    login, form = checked
    service = _service(request)
    try:
        text = str(form.get("task") or "")
        upload = form.get("task_file")
        if upload is not None and not isinstance(upload, str):
            content = await upload.read()
            if content:
                try:
                    text = content.decode()
                except UnicodeDecodeError:
                    raise InvalidRequest("task_file: not UTF-8 text", field="task_file") from None
        body = views.parse_task(text) if text.strip() else views.request_from_fields(form)
        answer = await run_in_threadpool(service.request_offers, login.user, body)
        html = await run_in_threadpool(_answer, service, login, answer.row.uuid)
    except BrokerError as error:
        return _problem(request, error.status_code, error.message, login)
    if _fetching(request):
        return HTMLResponse(html)
    return RedirectResponse(f"/ui?answer={answer.row.uuid}#answer", 303)


def _chunks(stream: BinaryIO) -> Iterator[bytes]:
    with stream:
        while chunk := stream.read(1 << 16):
            yield chunk


@router.get("/sessions/{uuid}/outputs/{name}")
def output(uuid: UUID, name: str, request: Request) -> Response:
    login = _login(request)
    if login is None:
        return _problem(request, 401, "log in first")
    try:
        stream = _service(request).open_output(login.user, str(uuid), name)
    except BrokerError as error:
        return _problem(request, error.status_code, error.message, login)
    media = mimetypes.guess_type(name)[0] or "application/octet-stream"
    disposition = {"Content-Disposition": f'attachment; filename="{name}"'}
    return StreamingResponse(_chunks(stream), media_type=media, headers=disposition)
