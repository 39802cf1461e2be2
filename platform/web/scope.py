"""Who may see what on the fleet page: platform roles and token scopes, as SQL.

A platform token has a **role** (what it may do) and a **scope** (whose data it may
see). Every route of the fleet page's API puts the scope into its SQL
(:meth:`Scope.where`), so a row outside it is never read, counted or linked; nothing
is filtered after the fact.

The scope is always a condition on a row's ``site``: a firm's scope is the sites the
``sites`` registry gives that firm *now* (read in the same statement), so a site moved
to another firm leaves the old firm's view at once, and rows whose denormalised
``firm`` label is stale (written during a relabelling) never leak. A site no firm has
registered is visible to cluster-wide tokens only.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Any, Literal

ScopeKind = Literal["cluster", "firm", "sites"]


class PlatformRole(str, Enum):
    """What a platform token may do; each role includes the ones below it.

    viewer: read the fleet page and its API. engineer: plus actions on stations
    (rollouts). admin: plus tokens; the only role that may be cluster-wide.
    """

    VIEWER = "viewer"
    ENGINEER = "engineer"
    ADMIN = "admin"

    @property
    def rank(self) -> int:
        return _RANK[self]

    def allows(self, needed: PlatformRole) -> bool:
        """``True`` when this role is ``needed`` or above it."""
        return self.rank >= needed.rank


_RANK = {PlatformRole.VIEWER: 1, PlatformRole.ENGINEER: 2, PlatformRole.ADMIN: 3}


@dataclass(frozen=True)
class Scope:
    """Whose data a token sees: one firm, some sites, or (admins only) the cluster.

    Attributes:
        firm: the firm (``kind == "firm"``), else None.
        sites: the site names (``kind == "sites"``, at least one), else empty.
    """

    firm: str | None = None
    sites: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.firm is not None and self.sites:
            raise ValueError("a scope is a firm or a list of sites, not both")
        if self.firm == "" or any(not s for s in self.sites):
            raise ValueError("a scope's firm and site names are never empty")

    @property
    def kind(self) -> ScopeKind:
        if self.firm is not None:
            return "firm"
        return "sites" if self.sites else "cluster"

    def where(self, site_column: str) -> tuple[str, dict[str, Any]]:
        """The SQL condition that keeps rows in scope, and its parameters.

        ``site_column`` is the (qualified) column holding each row's site, e.g.
        ``"s.site"``. Parameters are named ``scope_*`` (psycopg ``%(name)s``).
        """
        if self.kind == "firm":
            return (
                f"{site_column} IN (SELECT sc.site FROM sites sc WHERE sc.firm = %(scope_firm)s)",
                {"scope_firm": self.firm},
            )
        if self.kind == "sites":
            return f"{site_column} = ANY(%(scope_sites)s::text[])", {
                "scope_sites": list(self.sites)
            }
        return "TRUE", {}

    def describe(self) -> str:
        """In words, for lists and logs: ``firm acme``, ``sites a, b``, ``cluster``."""
        if self.kind == "firm":
            return f"firm {self.firm}"
        if self.kind == "sites":
            return "sites " + ", ".join(self.sites)
        return "cluster"
