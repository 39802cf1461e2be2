"""Platform tokens in PostgreSQL (``platform_tokens``, migration 3): make, check, list, revoke.

A token looks like ``kjp_<id>_<secret>`` (a station's own tokens are ``kj_...``, so
the two are never confused): ``id`` (8 hex digits) is public and finds the row; only
the sha256 of ``secret`` (32 random bytes, url-safe base64) is stored. With 256 bits
of entropy a fast hash is enough: there is nothing a slow one would protect.

``conn`` is a psycopg connection; :class:`PlatformTokens` reads through it as is
(the fleet page's connections are read-only) and writes in a transaction of its own.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from kanjian.platform.web.scope import PlatformRole, Scope

TOKEN_PREFIX = "kjp_"
_NAME = re.compile(r"^[A-Za-z0-9_.@:-]{1,64}$")
#: firm and site names, as ``kanjian platform site`` allows them
NAME_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")

_COLUMNS = "id, name, role, firm, sites, created_at, created_by, revoked_at"


@dataclass(frozen=True)
class PlatformTokenInfo:
    """A token's row, without its secret. Times are aware UTC datetimes."""

    id: str
    name: str
    role: PlatformRole
    scope: Scope
    created_at: datetime
    created_by: str | None
    revoked_at: datetime | None

    @property
    def active(self) -> bool:
        return self.revoked_at is None


@dataclass(frozen=True)
class NewPlatformToken:
    """A token just made: ``secret`` is the whole token string, shown once."""

    info: PlatformTokenInfo
    secret: str


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def _info(row: tuple[Any, ...]) -> PlatformTokenInfo:
    tid, name, role, firm, sites, created_at, created_by, revoked_at = row
    return PlatformTokenInfo(
        id=str(tid),
        name=str(name),
        role=PlatformRole(str(role)),
        scope=Scope(firm=firm, sites=tuple(sites or ())),
        created_at=created_at,
        created_by=created_by,
        revoked_at=revoked_at,
    )


def parse_token(token: str) -> tuple[str, str] | None:
    """Split ``kjp_<id>_<secret>`` into ``(id, secret)``; ``None`` if malformed."""
    if not token.startswith(TOKEN_PREFIX) or len(token) > 200:
        return None
    tid, sep, secret = token[len(TOKEN_PREFIX) :].partition("_")
    if not sep or not re.fullmatch(r"[0-9a-f]{8}", tid) or not secret:
        return None
    return tid, secret


def check_scope(role: PlatformRole, scope: Scope) -> None:
    """Refuse a scope the table would refuse, with a message that says what to do."""
    if scope.kind == "cluster" and role is not PlatformRole.ADMIN:
        raise ValueError(
            f"a {role.value} token needs a scope: --firm FIRM or --sites SITE,SITE "
            "(only an admin token may see the whole cluster)"
        )
    for name in (scope.firm, *scope.sites):
        if name is not None and not NAME_RE.match(name):
            raise ValueError(f"{name!r}: firm and site names are 1 to 64 letters, digits, _ . -")


class PlatformTokens:
    """Create, check, list and revoke platform tokens.

    Args:
        conn: a psycopg connection to a platform database at migration 3 or later.
    """

    def __init__(self, conn: Any) -> None:
        self.conn = conn

    def create(
        self, name: str, role: PlatformRole, scope: Scope, created_by: str
    ) -> NewPlatformToken:
        """Make a token; the returned ``secret`` is the only copy of it."""
        if not _NAME.match(name):
            raise ValueError(f"token name {name!r}: use 1 to 64 letters, digits, _ . @ : -")
        check_scope(role, scope)
        secret = secrets.token_urlsafe(32)
        with self.conn.transaction():
            while True:  # 2^32 ids: a clash is rare, and then simply drawn again
                tid = secrets.token_hex(4)
                row = self.conn.execute(
                    "INSERT INTO platform_tokens (id, name, role, firm, sites, secret_sha256, "
                    "created_by) VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT (id) DO NOTHING "
                    f"RETURNING {_COLUMNS}",
                    [tid, name, role.value, scope.firm, list(scope.sites) or None,
                     _digest(secret), created_by],
                ).fetchone()  # fmt: skip
                if row is not None:
                    break
        return NewPlatformToken(_info(row), f"{TOKEN_PREFIX}{tid}_{secret}")

    def verify(self, token: str) -> PlatformTokenInfo | None:
        """The token's info when it exists, matches and is not revoked; else ``None``."""
        parsed = parse_token(token)
        if parsed is None:
            return None
        tid, secret = parsed
        row = self.conn.execute(
            f"SELECT {_COLUMNS}, secret_sha256 FROM platform_tokens WHERE id = %s", [tid]
        ).fetchone()
        if row is None:
            return None
        # constant-time compare: timing must not reveal how much of the hash matched
        if not hmac.compare_digest(str(row[-1]), _digest(secret)):
            return None
        info = _info(tuple(row[:-1]))
        return info if info.active else None

    def list(self, include_revoked: bool = True) -> list[PlatformTokenInfo]:
        where = "" if include_revoked else " WHERE revoked_at IS NULL"
        rows = self.conn.execute(
            f"SELECT {_COLUMNS} FROM platform_tokens{where} ORDER BY created_at, id"
        ).fetchall()
        return [_info(tuple(r)) for r in rows]

    def revoke(self, tid: str) -> PlatformTokenInfo | None:
        """Revoke a token (idempotent); ``None`` when there is no such token."""
        with self.conn.transaction():
            self.conn.execute(
                "UPDATE platform_tokens SET revoked_at = now() "
                "WHERE id = %s AND revoked_at IS NULL",
                [tid],
            )
            row = self.conn.execute(
                f"SELECT {_COLUMNS} FROM platform_tokens WHERE id = %s", [tid]
            ).fetchone()
        return None if row is None else _info(tuple(row))
