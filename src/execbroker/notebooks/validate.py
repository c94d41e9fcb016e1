"""Is this JSON object a notebook we can run? nbformat v4, checked against its schema.

Used by the wire model (so a bad notebook is a 422 naming ``executable.notebook``) and
again on a notebook fetched from a ``location`` at start.
"""

from __future__ import annotations

import copy
import sys
import warnings
from types import ModuleType
from typing import Any

MAX_MESSAGE = 200


def import_nbformat() -> ModuleType:
    """nbformat, without the seconds jsonschema would spend compiling an RFC 3987 grammar.

    jsonschema checks the ``iri`` format with ``rfc3987_syntax`` when it is installed, which
    builds an Earley parser on import (2-6 s of CPU); notebook schemas never use that format.
    Blocking the import leaves jsonschema without an ``iri`` checker and nothing else.
    """
    if "nbformat" not in sys.modules and "jsonschema" not in sys.modules:
        sys.modules.setdefault("rfc3987_syntax", None)  # type: ignore[arg-type]
    import nbformat

    return nbformat


def _where(path: Any) -> str:
    parts = "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in path or [])
    return parts.lstrip(".")


def _short(text: str) -> str:
    return text if len(text) <= MAX_MESSAGE else text[: MAX_MESSAGE - 1] + "…"


def check_notebook(value: dict[str, Any]) -> dict[str, Any]:
    """``value`` unchanged if it is a valid nbformat v4 notebook; ValueError saying why not."""
    version = value.get("nbformat")
    if version != 4:
        shown = "missing" if version is None else repr(version)
        raise ValueError(f"must be an nbformat v4 notebook (its nbformat is {shown})")
    nbformat = import_nbformat()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # cells without ids (nbformat 4.5): papermill adds them
        try:
            nbformat.validate(copy.deepcopy(value), version=4)
        except nbformat.ValidationError as error:
            where = _where(getattr(error, "absolute_path", None))
            reason = getattr(error, "message", None) or str(error)
            at = f" at {where}" if where else ""
            raise ValueError(_short(f"not a valid nbformat v4 notebook{at}: {reason}")) from None
        except Exception as error:  # nbformat raises KeyError etc. for some shapes
            raise ValueError(
                _short(f"not a valid nbformat v4 notebook: {type(error).__name__} {error}")
            ) from None
    return value
