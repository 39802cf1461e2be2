"""Roles and bearer tokens, stored hashed in the station's database.

A token looks like ``kj_<id>_<secret>``: ``id`` (8 hex digits) is public and
finds the row; only the sha256 of ``secret`` (32 random bytes, url-safe
base64) is stored. The secret has 256 bits of entropy, so a fast hash is
enough: there is nothing to brute-force that a slow hash would protect.

A browser session (the screen's cookie, ``POST /api/session``) is a row of its
own in ``api_sessions``: a random 32-byte id, stored as its sha256 like a
token's secret, bound to the token that opened it, with an expiry. The cookie
carries that id, never a token; revoking the token revokes its sessions.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from enum import Enum

import sqlite_utils

from kanjian.station.records import utc_iso
from kanjian.station.state.audit import now_iso

TOKEN_PREFIX = "kj_"


class Role(str, Enum):
    """Who may do what; each role includes everything of the roles below it.

    operator: view, give feedback, trigger. engineer: plus models, thresholds,
    config, audit. admin: plus tokens.
    """

    OPERATOR = "operator"
    ENGINEER = "engineer"
    ADMIN = "admin"

    @property
    def rank(self) -> int:
        return _RANK[self]

    def allows(self, needed: Role) -> bool:
        """``True`` when this role is ``needed`` or above it."""
        return self.rank >= needed.rank


_RANK = {Role.OPERATOR: 1, Role.ENGINEER: 2, Role.ADMIN: 3}


@dataclass(frozen=True)
class TokenInfo:
    """A token's row, without its secret.

    Attributes:
        id: public id (8 hex digits).
        name: who or what holds it.
        role: what it may do.
        created_at, revoked_at: ISO 8601 UTC; ``revoked_at`` is ``None`` while valid.
        created_by: who made it (``cli:<user>`` or a token name).
    """

    id: str
    name: str
    role: Role
    created_at: str
    created_by: str | None
    revoked_at: str | None

    @property
    def active(self) -> bool:
        return self.revoked_at is None


@dataclass(frozen=True)
class NewToken:
    """A freshly made token: ``secret`` is the full token string, shown once."""

    info: TokenInfo
    secret: str


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def _info(row: Mapping[str, object]) -> TokenInfo:
    return TokenInfo(
        id=str(row["id"]),
        name=str(row["name"]),
        role=Role(str(row["role"])),
        created_at=str(row["created_at"]),
        created_by=None if row["created_by"] is None else str(row["created_by"]),
        revoked_at=None if row["revoked_at"] is None else str(row["revoked_at"]),
    )


def parse_token(token: str) -> tuple[str, str] | None:
    """Split ``kj_<id>_<secret>`` into ``(id, secret)``; ``None`` if malformed."""
    if not token.startswith(TOKEN_PREFIX):
        return None
    rest = token[len(TOKEN_PREFIX) :]
    tid, sep, secret = rest.partition("_")
    if not sep or len(tid) != 8 or not secret or len(token) > 200:
        return None
    return tid, secret


class TokenStore:
    """Create, check, list and revoke tokens in ``api_tokens``.

    Args:
        db: an open station database (see :func:`kanjian.station.store.open_db`).
    """

    def __init__(self, db: sqlite_utils.Database) -> None:
        self.db = db

    def create(self, name: str, role: Role, created_by: str) -> NewToken:
        """Make a token; the returned ``secret`` is the only copy of it."""
        if not name or len(name) > 64:
            raise ValueError("token name must be 1 to 64 characters")
        while True:
            tid = secrets.token_hex(4)
            if not self.db.execute("SELECT 1 FROM api_tokens WHERE id = ?", [tid]).fetchone():
                break
        secret = secrets.token_urlsafe(32)
        row = {
            "id": tid,
            "name": name,
            "role": role.value,
            "secret_sha256": _digest(secret),
            "created_at": now_iso(),
            "created_by": created_by,
            "revoked_at": None,
        }
        self.db["api_tokens"].insert(row)  # type: ignore[union-attr]
        return NewToken(_info(row), f"{TOKEN_PREFIX}{tid}_{secret}")

    def verify(self, token: str) -> TokenInfo | None:
        """The token's info when it exists, matches and is not revoked; else ``None``."""
        parsed = parse_token(token)
        if parsed is None:
            return None
        tid, secret = parsed
        cur = self.db.execute(
            "SELECT id, name, role, secret_sha256, created_at, created_by, revoked_at "
            "FROM api_tokens WHERE id = ?",
            [tid],
        )
        row = cur.fetchone()
        if row is None:
            return None
        rec = dict(zip([c[0] for c in cur.description], row, strict=True))
        # constant-time compare: a timing difference must not reveal the hash prefix
        if not hmac.compare_digest(str(rec["secret_sha256"]), _digest(secret)):
            return None
        info = _info(rec)
        return info if info.active else None

    def get(self, tid: str) -> TokenInfo | None:
        rows = list(self.db.query("SELECT * FROM api_tokens WHERE id = ?", [tid]))
        return _info(rows[0]) if rows else None

    def list(self, include_revoked: bool = True) -> list[TokenInfo]:
        where = "" if include_revoked else " WHERE revoked_at IS NULL"
        return [
            _info(r)
            for r in self.db.query(f"SELECT * FROM api_tokens{where} ORDER BY created_at, id")
        ]

    def revoke(self, tid: str) -> TokenInfo | None:
        """Revoke a token (idempotent); ``None`` when there is no such token."""
        at = now_iso()
        self.db.execute(
            "UPDATE api_tokens SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL", [at, tid]
        )
        SessionStore(self.db).revoke_token(tid, at)
        return self.get(tid)

    def count_active(self) -> int:
        row = self.db.execute("SELECT COUNT(*) FROM api_tokens WHERE revoked_at IS NULL").fetchone()
        return int(row[0])


@dataclass(frozen=True)
class NewSession:
    """A session just opened: ``secret`` goes into the cookie and is kept nowhere else.

    Attributes:
        secret: 32 random bytes, url-safe base64 (43 characters).
        expires_at: ISO 8601 UTC.
        max_age_s: the cookie's lifetime, whole seconds (at least 1).
    """

    secret: str
    expires_at: str
    max_age_s: int


class SessionStore:
    """Open, check and revoke browser sessions in ``api_sessions``.

    Args:
        db: an open station database.
    """

    def __init__(self, db: sqlite_utils.Database) -> None:
        self.db = db

    def open(self, token: TokenInfo, hours: float) -> NewSession:
        """A session for ``token`` that lives ``hours``; expired rows are dropped on the way."""
        now = datetime.now(timezone.utc)
        expires = now + timedelta(hours=hours)
        secret = secrets.token_urlsafe(32)
        self.db.execute("DELETE FROM api_sessions WHERE expires_at < ?", [utc_iso(now)])
        self.db["api_sessions"].insert(  # type: ignore[union-attr]
            {
                "id_sha256": _digest(secret),
                "token_id": token.id,
                "role": token.role.value,
                "created_at": utc_iso(now),
                "expires_at": utc_iso(expires),
                "revoked_at": None,
            }
        )
        return NewSession(secret, utc_iso(expires), max(1, round(hours * 3600)))

    def verify(self, secret: str) -> TokenInfo | None:
        """The token behind a live session (not expired, not revoked, its token valid)."""
        if not secret or len(secret) > 100:
            return None
        # looked up by the digest: an equality on a hash leaks nothing about the secret
        cur = self.db.execute(
            "SELECT s.expires_at, s.revoked_at AS s_revoked, s.role AS s_role, t.id, t.name, "
            "t.role, t.created_at, t.created_by, t.revoked_at "
            "FROM api_sessions s JOIN api_tokens t ON t.id = s.token_id WHERE s.id_sha256 = ?",
            [_digest(secret)],
        )
        row = cur.fetchone()
        if row is None:
            return None
        rec = dict(zip([c[0] for c in cur.description], row, strict=True))
        if rec["s_revoked"] is not None or rec["s_role"] != rec["role"]:
            return None
        if datetime.fromisoformat(str(rec["expires_at"])) <= datetime.now(timezone.utc):
            return None
        info = _info(rec)
        return info if info.active else None

    def revoke(self, secret: str) -> bool:
        """Revoke one session (logout); ``True`` when a live one was revoked."""
        cur = self.db.execute(
            "UPDATE api_sessions SET revoked_at = ? WHERE id_sha256 = ? AND revoked_at IS NULL",
            [now_iso(), _digest(secret)],
        )
        return cur.rowcount > 0

    def revoke_token(self, tid: str, at: str | None = None) -> int:
        """Revoke every session of token ``tid``; how many were live."""
        cur = self.db.execute(
            "UPDATE api_sessions SET revoked_at = ? WHERE token_id = ? AND revoked_at IS NULL",
            [at or now_iso(), tid],
        )
        return cur.rowcount
