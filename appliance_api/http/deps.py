"""FastAPI dependencies: the app's state, and who is asking (bearer token → role).

Mutations take the token from the ``Authorization: Bearer`` header only. Reads
(GET) also accept the ``kanjian_token`` cookie set by ``POST /api/session``,
because a browser's ``<img>`` and ``EventSource`` cannot send headers; since
no mutation honours the cookie, a forged cross-site request can change nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from kanjian.appliance_api.http.auth import Role
from kanjian.appliance_api.http.state import ApiState
from kanjian.station.state.audit import Actor

COOKIE = "kanjian_token"

bearer = HTTPBearer(
    auto_error=False,
    description="a token made with `kanjian token create --role operator|engineer|admin`",
)


def get_state(request: Request) -> ApiState:
    state: ApiState = request.app.state.kanjian
    return state


@dataclass(frozen=True)
class Principal:
    """Who is asking. ``role`` is ``None`` for an anonymous reader (``api.open_reads``)."""

    name: str
    role: Role | None
    token_id: str | None
    remote_addr: str | None

    def actor(self) -> Actor:
        return Actor(
            self.name, self.token_id, self.role.value if self.role else None, self.remote_addr
        )


def _unauthorized(message: str) -> HTTPException:
    return HTTPException(
        status.HTTP_401_UNAUTHORIZED, message, headers={"WWW-Authenticate": "Bearer"}
    )


def authenticate(request: Request, creds: HTTPAuthorizationCredentials | None) -> Principal | None:
    """The token's holder, ``None`` when no token was sent; 401 for a bad token."""
    token = creds.credentials if creds is not None else None
    if token is None and request.method in ("GET", "HEAD"):
        token = request.cookies.get(COOKIE)
    if not token:
        return None
    info = get_state(request).tokens().verify(token)
    if info is None:
        raise _unauthorized("the token is unknown, malformed or revoked")
    client = request.client.host if request.client else None
    return Principal(info.name, info.role, info.id, client)


Creds = Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]


def require(role: Role) -> Callable[[Request, HTTPAuthorizationCredentials | None], Principal]:
    """A dependency that lets only ``role`` and above through (401 / 403 otherwise)."""

    def dep(request: Request, creds: Creds) -> Principal:
        p = authenticate(request, creds)
        if p is None or p.role is None:
            raise _unauthorized(f"this needs a bearer token with role {role.value} or above")
        if not p.role.allows(role):
            raise HTTPException(
                status.HTTP_403_FORBIDDEN,
                f"role {p.role.value} may not do this; it needs {role.value} or above",
            )
        return p

    return dep


def require_read(request: Request, creds: Creds) -> Principal:
    """Operator or above, or anyone when ``api.open_reads`` is set."""
    p = authenticate(request, creds)
    if p is not None:
        return p
    if get_state(request).cfg.open_reads:
        client = request.client.host if request.client else None
        return Principal("anonymous", None, None, client)
    raise _unauthorized("reading results needs a bearer token with role operator or above")


State = Annotated[ApiState, Depends(get_state)]
Reader = Annotated[Principal, Depends(require_read)]
Operator = Annotated[Principal, Depends(require(Role.OPERATOR))]
Engineer = Annotated[Principal, Depends(require(Role.ENGINEER))]
Admin = Annotated[Principal, Depends(require(Role.ADMIN))]
