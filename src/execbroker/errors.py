"""Every failure a client can cause, each with its HTTP status; mapped to responses in one place."""

from __future__ import annotations


class BrokerError(Exception):
    status_code = 400

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field


class InvalidRequest(BrokerError):
    """The request is well-formed but asks for something impossible or incomplete."""

    status_code = 422


class Unauthenticated(BrokerError):
    status_code = 401


class PermissionDenied(BrokerError):
    status_code = 403


class NotFound(BrokerError):
    status_code = 404


class PhaseConflict(BrokerError):
    """The update is not allowed in the session's current phase (or the offer no longer fits)."""

    status_code = 409


class NoOffer(BrokerError):
    """``/direct`` found nothing it could run; ``reasons`` say why."""

    status_code = 400

    def __init__(self, message: str, reasons: list[str]) -> None:
        super().__init__(message)
        self.reasons = reasons


class Unsupported(BrokerError):
    """The request asks for something this service never supports (TES strict backend
    parameters): a 400, as the TES spec asks."""

    status_code = 400


class Unavailable(BrokerError):
    """The database failed what the request needed (locked too long, a full disk, gone):
    nothing of it was done, and the client may retry."""

    status_code = 503
