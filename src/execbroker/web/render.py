"""The Jinja2 templates of both pages, autoescaped, with the view helpers as filters."""

from __future__ import annotations

from typing import Any

from jinja2 import Environment, PackageLoader, select_autoescape

from execbroker import __version__
from execbroker.web import views

env = Environment(
    loader=PackageLoader("execbroker.web", "templates"),
    autoescape=select_autoescape(default=True, default_for_string=True),
    trim_blocks=True,
    lstrip_blocks=True,
)
env.filters.update(
    resources=views.resources,
    cores=views.cores,
    clock=views.clock,
    iso=views.iso,
    dialect=views.dialect,
    kind_of=views.kind_of,
    links=views.links,
)
env.globals.update(version=__version__)


def render(name: str, **context: Any) -> str:
    return env.get_template(name).render(**context)
