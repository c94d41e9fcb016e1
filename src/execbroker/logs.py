"""Log lines that name the session and user they are about, as text or one JSON object a line.

``bind(session=..., user=...)`` puts ids into a context variable for the code it wraps; a
filter copies them onto every record logged meanwhile (in that thread, and in the worker
threads started from it, since ``asyncio.to_thread`` copies the context). So a platform's log
line deep inside a monitor step carries the session id and its owner without being passed them.
"""

from __future__ import annotations

import contextvars
import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any, Literal

_FIELDS: contextvars.ContextVar[dict[str, str] | None] = contextvars.ContextVar(
    "log_fields", default=None
)
BOUND = ("session", "user", "offerset")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s%(bound)s"


@contextmanager
def bind(**fields: str | None) -> Iterator[None]:
    """Add ids to every log line written inside the block (None leaves a field out)."""
    given = {name: value for name, value in fields.items() if value is not None}
    token = _FIELDS.set({**(_FIELDS.get() or {}), **given})
    try:
        yield
    finally:
        _FIELDS.reset(token)


class BoundFields(logging.Filter):
    """Copies the bound ids onto the record (``extra=`` given at the call wins)."""

    def filter(self, record: logging.LogRecord) -> bool:
        bound = _FIELDS.get() or {}
        for name in BOUND:
            if not hasattr(record, name) and name in bound:
                setattr(record, name, bound[name])
        shown = [f"{name}={getattr(record, name)}" for name in BOUND if hasattr(record, name)]
        record.bound = f" [{' '.join(shown)}]" if shown else ""
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object a line: time, level, logger, message, and the bound ids."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        line.update({name: getattr(record, name) for name in BOUND if hasattr(record, name)})
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False)


def setup(level: str = "info", style: Literal["text", "json"] = "text") -> None:
    """Configure the root logger once for a broker process (uvicorn's loggers included)."""
    # Neither format shows the thread, the process or the calling line: skip gathering them
    # for every record (the logging HOWTO's "Optimization"; ~a quarter of a record's cost,
    # and a broker logs each request twice).
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    logging.logAsyncioTasks = False  # type: ignore[attr-defined]  # Python >= 3.12
    logging._srcfile = None  # type: ignore[assignment]  # no frame walk to find the caller
    handler = logging.StreamHandler()
    handler.addFilter(BoundFields())
    handler.setFormatter(JsonFormatter() if style == "json" else logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
