"""What every router's handlers are given: the broker's service, the caller, the base URL."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from execbroker.service import BrokerService, User


# Both are async (they neither block nor wait) so FastAPI calls them on the event loop:
# a sync dependency costs a hop to the thread pool and back, on every request.
async def _service(request: Request) -> BrokerService:
    return request.app.state.service


# Where a request's user is kept once its token is checked, for the access log (which
# would otherwise hash the token again).
USER_KEY = "execbroker.user"


async def _user(request: Request) -> User:
    user: User = request.app.state.authenticate(request)
    request.scope[USER_KEY] = user
    return user


Service = Annotated[BrokerService, Depends(_service)]
CurrentUser = Annotated[User, Depends(_user)]


def base_url(request: Request) -> str:
    """The broker's own URL as the client reached it, for links in answers."""
    return str(request.base_url).rstrip("/")
