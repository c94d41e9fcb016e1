"""A site's standard sizes: offers are made in whole multiples of these when any are configured.

Sites prefer a few well-known shapes (they pack better and users understand them) over whatever
arbitrary numbers a client happens to ask for.
"""

from __future__ import annotations

from dataclasses import dataclass

from .resources import Resources


@dataclass(frozen=True, slots=True)
class Unit:
    """A named size and the multiples of it the site will hand out."""

    name: str
    resources: Resources
    multiples: tuple[int, ...] = (1, 2, 4)

    def sizes(self) -> tuple[Resources, ...]:
        """Every multiple of this unit, in the order the multiples are listed."""
        return tuple(self.resources.scaled(k) for k in self.multiples)

    def describe(self) -> str:
        """Human form for reasons, e.g. ``desktop (4 cores, ...) x 1, 2 or 4``."""
        ks = ", ".join(str(k) for k in self.multiples)
        return f"{self.name} ({self.resources.describe()}) x {ks}"
