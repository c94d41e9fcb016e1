"""Cookie sessions for the broker's page, signed with the user's own bearer token.

A browser's ``EventSource`` cannot send an Authorization header, so the login form turns a
bearer token into a cookie: ``name.expiry.signature``, where the signature is an HMAC keyed
with that user's token. Nothing is kept on the server, so a cookie outlives a broker restart
and works on every replica, and changing a user's token in the config ends their cookies.
Forms carry a CSRF token, an HMAC of the cookie under the same key: another site can make
the browser send the cookie, but cannot read the page to learn the token.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from dataclasses import dataclass, field

from execbroker.config import BrokerConfig
from execbroker.service import User

COOKIE = "execbroker_ui"
LIFETIME = 12 * 3600  # seconds a login lasts


@dataclass(frozen=True, slots=True)
class Login:
    user: User
    cookie: str
    key: bytes = field(repr=False)

    @property
    def csrf(self) -> str:
        return _digest(self.key, "csrf", self.cookie)


def _digest(key: bytes, *parts: str) -> str:
    return hmac.new(key, "|".join(parts).encode(), hashlib.sha256).hexdigest()


class CookieSessions:
    def __init__(self, config: BrokerConfig) -> None:
        self._broker = config.name
        self._users = {
            user.name: (user.token.encode(), User(user.name, user.admin)) for user in config.users
        }
        self._by_token = [(token, user) for token, user in self._users.values()]

    def login(self, token: str, now: float | None = None) -> Login | None:
        """A new cookie for the user whose token this is, or None for an unknown token."""
        given = token.strip().encode()
        found = None
        for known, user in self._by_token:  # compare with every token: no timing hint
            if hmac.compare_digest(known, given):
                found = user
        if found is None or not given:
            return None
        expiry = str(int((now or time.time()) + LIFETIME))
        key = self._users[found.name][0]
        cookie = f"{found.name}.{expiry}.{_digest(key, 'ui', self._broker, found.name, expiry)}"
        return Login(found, cookie, key)

    def check(self, cookie: str | None, now: float | None = None) -> Login | None:
        """The login a cookie proves, or None if it is forged, expired or for a changed token."""
        if not cookie:
            return None
        name, _, rest = cookie.partition(".")
        expiry, _, signature = rest.partition(".")
        if name not in self._users or not expiry.isdigit():
            return None
        key, user = self._users[name]
        wanted = _digest(key, "ui", self._broker, name, expiry)
        if not hmac.compare_digest(wanted, signature) or int(expiry) < (now or time.time()):
            return None
        return Login(user, cookie, key)

    @staticmethod
    def csrf_ok(login: Login, given: str | None) -> bool:
        return bool(given) and hmac.compare_digest(login.csrf, given or "")
