"""Fetching a notebook named by ``location``: at start (PREPARING), never while making offers.

Plain HTTP(S) only, with a size limit and a time limit, and redirects followed only to
HTTP(S). What comes back must be a valid nbformat v4 notebook; its text is never echoed
in an error (the URL could point anywhere the broker can reach).
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlsplit

from execbroker.notebooks.validate import check_notebook
from execbroker.platforms.base import PlatformError

MAX_NOTEBOOK_BYTES = 16 * 1024 * 1024
FETCH_TIMEOUT = 30.0
MAX_REDIRECTS = 5
SCHEMES = ("http", "https")


class NotebookError(PlatformError):
    """A notebook task cannot be prepared; the message is fit to show its owner."""


def url_reason(url: str) -> str | None:
    """Why ``url`` is not a location we fetch, or None."""
    parts = urlsplit(url)
    if parts.scheme.lower() not in SCHEMES or not parts.hostname:
        return f"location must be an http or https URL, not {url[:100]!r}"
    return None


def fetch_notebook(
    url: str, *, max_bytes: int = MAX_NOTEBOOK_BYTES, timeout: float = FETCH_TIMEOUT
) -> dict[str, Any]:
    """The notebook at ``url``, validated; NotebookError saying what went wrong."""
    reason = url_reason(url)
    if reason is not None:
        raise NotebookError(reason)
    import httpx  # here, not at import: the broker starts without it

    body = bytearray()
    try:
        with (
            httpx.Client(
                timeout=timeout, follow_redirects=True, max_redirects=MAX_REDIRECTS
            ) as client,
            client.stream("GET", url) as response,
        ):
            if response.status_code != 200:
                raise NotebookError(f"could not fetch {url}: HTTP {response.status_code}")
            for chunk in response.iter_bytes():
                body += chunk
                if len(body) > max_bytes:
                    raise NotebookError(f"the notebook at {url} is larger than {max_bytes} bytes")
    except httpx.HTTPError as error:
        raise NotebookError(f"could not fetch {url}: {type(error).__name__} {error}") from None
    try:
        notebook = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise NotebookError(f"the document at {url} is not JSON, so not a notebook") from None
    if not isinstance(notebook, dict):
        raise NotebookError(f"the document at {url} is not a JSON object, so not a notebook")
    try:
        return check_notebook(notebook)
    except ValueError as error:
        raise NotebookError(f"the document at {url}: {error}") from None
