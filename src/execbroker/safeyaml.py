"""YAML loaders that bound what a small text can become: nesting depth, and aliases.

PyYAML composes nodes recursively and shares an aliased node between every place that names
it, so a few hundred bytes can nest deeper than Python's stack or expand (once serialised
again) into megabytes. These loaders refuse both while composing, before anything is built:
``BodyLoader`` (request bodies) refuses every alias; ``DocumentLoader`` (compose files, where
anchors and ``<<: *base`` are common) keeps them and leaves counting the expansion to its caller.
"""

from __future__ import annotations

from typing import Any

import yaml
from yaml.composer import ComposerError
from yaml.events import AliasEvent

MAX_DEPTH = 64


class DepthError(ComposerError):
    """Nested deeper than MAX_DEPTH."""


class AliasError(ComposerError):
    """An alias where none is accepted."""


class DocumentLoader(yaml.SafeLoader):
    """A SafeLoader that stops at MAX_DEPTH levels of nesting."""

    max_depth = MAX_DEPTH
    aliases = True

    def __init__(self, stream: Any) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(AliasEvent):
            if not self.aliases:
                event = self.peek_event()
                raise AliasError(
                    None, None, f"aliases (*{event.anchor}) are not accepted", event.start_mark
                )
            return super().compose_node(parent, index)
        self._depth += 1
        try:
            if self._depth > self.max_depth:
                event = self.peek_event()
                raise DepthError(
                    None, None, f"nested deeper than {self.max_depth} levels", event.start_mark
                )
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


class BodyLoader(DocumentLoader):
    """For request bodies: no aliases at all (a request has no use for them)."""

    aliases = False


def load_body(text: str | bytes) -> Any:
    """One YAML document as plain data; a ComposerError subclass when it is too deep or aliased."""
    return yaml.load(text, Loader=BodyLoader)  # BodyLoader is a SafeLoader


def depth_of(data: Any, limit: int = MAX_DEPTH) -> int:
    """How deeply lists and mappings nest in ``data`` (stops counting just past ``limit``)."""
    deepest, stack = 0, [(data, 1)]
    while stack:
        node, depth = stack.pop()
        if not isinstance(node, dict | list):
            continue
        deepest = max(deepest, depth)
        if deepest > limit:
            return deepest
        items = node.values() if isinstance(node, dict) else node
        stack.extend((item, depth + 1) for item in items)
    return deepest
