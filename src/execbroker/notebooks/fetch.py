"""Fetching a notebook named by ``location``: at start (PREPARING), never while making offers.

The fetch itself is ``execbroker.fetch`` (public addresses only unless the platform's
``fetch.allow`` lists more, checked after DNS and on every redirect; size and time limits).
What comes back must be a valid nbformat v4 notebook; its text is never echoed in an error
(the URL could point anywhere the broker can reach).
"""

from __future__ import annotations

import json
from typing import Any

from execbroker import fetch
from execbroker.notebooks.validate import check_notebook
from execbroker.platforms.base import PlatformError
from execbroker.safeyaml import MAX_DEPTH, depth_of

MAX_NOTEBOOK_BYTES = 16 * 1024 * 1024
FETCH_TIMEOUT = 30.0


class NotebookError(PlatformError):
    """A notebook task cannot be prepared; the message is fit to show its owner."""


def url_reason(url: str) -> str | None:
    """Why ``url`` is not a location we fetch (told without DNS, at offer time), or None."""
    return fetch.location_reason(url)


def fetch_notebook(
    url: str, *, max_bytes: int = MAX_NOTEBOOK_BYTES, timeout: float = FETCH_TIMEOUT
) -> dict[str, Any]:
    """The notebook at ``url``, validated; NotebookError saying what went wrong."""
    try:
        body = fetch.fetch(url, max_bytes=max_bytes, timeout=timeout, what="the notebook").body
    except fetch.FetchError as error:
        raise NotebookError(f"executable.location: {error}") from None
    try:
        notebook = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        raise NotebookError(f"the document at {url} is not JSON, so not a notebook") from None
    if depth_of(notebook) > MAX_DEPTH:
        raise NotebookError(f"the document at {url} nests deeper than {MAX_DEPTH} levels")
    if not isinstance(notebook, dict):
        raise NotebookError(f"the document at {url} is not a JSON object, so not a notebook")
    try:
        return check_notebook(notebook)
    except ValueError as error:
        raise NotebookError(f"the document at {url}: {error}") from None
