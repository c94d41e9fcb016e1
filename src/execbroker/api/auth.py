"""Bearer tokens from the broker's config; each names one user (some of them admins).

The config holds each token's SHA-256 (or the token, which is hashed when it is read), so a
presented token is hashed and compared with every user's digest in constant time; no token
is kept, compared or logged in the clear.
"""

from __future__ import annotations

import base64
import binascii
import hmac

from fastapi import Request

from execbroker.config import BrokerConfig, token_digest
from execbroker.errors import Unauthenticated
from execbroker.service import User


class TokenAuthenticator:
    def __init__(self, config: BrokerConfig) -> None:
        self._users = [(user.token_digest, User(user.name, user.admin)) for user in config.users]

    def user_for(self, token: str) -> User | None:
        given = token_digest(token)
        found = None
        for known, user in self._users:  # compare with every digest: no timing hint
            if hmac.compare_digest(known, given):
                found = user
        return found

    def __call__(self, request: Request) -> User:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() == "basic" and token.strip():
            return self._basic(token.strip())
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthenticated("send Authorization: Bearer <token> (or Basic user:token)")
        user = self.user_for(token.strip())
        if user is None:
            raise Unauthenticated("unknown token")
        return user

    def _basic(self, credentials: str) -> User:
        """HTTP Basic with the user's name and token as password (what TES clients send)."""
        try:
            name, _, token = base64.b64decode(credentials, validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            raise Unauthenticated("Basic credentials are not base64 of user:token") from None
        user = self.user_for(token)
        if user is None or not hmac.compare_digest(user.name.encode(), name.encode()):
            raise Unauthenticated("unknown user or token")
        return user
