"""Can a platform run this notebook? Answered quickly, while making offers (no download).

A backend describes what its runtime has (``Support``): the local backend asks its own
interpreter once (``Support.of_this_python``); a container or cluster backend states it
from its configuration or image. ``refusal`` turns that and a request into a NO reason.
"""

from __future__ import annotations

import functools
import importlib.util
import keyword
import re
from collections.abc import Callable
from dataclasses import dataclass

from execbroker.model.executables import JupyterNotebook
from execbroker.notebooks.fetch import url_reason

KERNEL_NAME = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
DEFAULT_KERNEL = "python3"


@dataclass(frozen=True, slots=True)
class Support:
    """What a platform's runtime can do with notebooks."""

    batch: str | None  # the engine ("papermill", "nbclient"), or None when there is none
    interactive: str | None  # the server ("jupyterlab", "jupyter_server"), or None
    # Kernel names it has; None: not known in advance (not checked). A function is asked
    # on the first request naming a kernel (finding kernel specs imports jupyter_client).
    kernels: frozenset[str] | Callable[[], frozenset[str]] | None = None

    def known_kernels(self) -> frozenset[str] | None:
        return self.kernels() if callable(self.kernels) else self.kernels

    @staticmethod
    def of_this_python() -> Support:
        """What the interpreter running the broker has (the local backend's runtime)."""
        return _this_python()


def _installed(*modules: str) -> str | None:
    return next((name for name in modules if importlib.util.find_spec(name) is not None), None)


@functools.cache
def _this_python() -> Support:
    kernel = _installed("ipykernel")
    return Support(
        batch=_installed("papermill", "nbclient") if kernel else None,
        interactive=_installed("jupyterlab", "jupyter_server"),
        kernels=_kernels,
    )


@functools.cache
def _kernels() -> frozenset[str]:
    """Kernel specs this interpreter's Jupyter finds (the python3 one is ipykernel's own)."""
    from jupyter_client.kernelspec import KernelSpecManager

    try:
        return frozenset(KernelSpecManager().find_kernel_specs())
    except Exception:  # an unreadable kernels directory: only the native one is known
        return frozenset({DEFAULT_KERNEL})


def refusal(executable: JupyterNotebook, support: Support, *, platform: str) -> str | None:
    """Why ``platform`` cannot run ``executable`` (a sentence), or None if it can."""
    if executable.mode == "batch" and support.batch is None:
        return f"the {platform} platform cannot run batch notebooks: it has no papermill/nbclient"
    if executable.mode == "interactive" and support.interactive is None:
        return f"the {platform} platform cannot run interactive notebooks: it has no jupyter_server"
    if executable.location is not None:
        reason = url_reason(executable.location)
        if reason is not None:
            return reason
    if executable.kernel is not None:
        if not KERNEL_NAME.match(executable.kernel):
            return f"kernel {executable.kernel[:70]!r} is not a kernel name"
        kernels = support.known_kernels()
        if kernels is not None and executable.kernel not in kernels:
            known = ", ".join(sorted(kernels)) or "none"
            return f"the {platform} platform has no Jupyter kernel {executable.kernel!r} ({known})"
    bad = [name for name in executable.parameters if not _identifier(name)]
    if bad:
        return f"parameters: {bad[0][:70]!r} is not a name a notebook can be given"
    return None


def _identifier(name: str) -> bool:
    return name.isidentifier() and not keyword.iskeyword(name)
