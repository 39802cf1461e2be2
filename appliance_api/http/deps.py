"""FastAPI dependencies: the app's state, and who is asking (bearer token → role).

Mutations take the token from the ``Authorization: Bearer`` header only. Reads
(GET) also accept the ``kanjian_session`` cookie set by ``POST /api/session``
(a server-side session id, never a token), because a browser's ``<img>`` and
``EventSource`` cannot send headers; since no mutation honours the cookie, a
forged cross-site request can change nothing.

Every credential presented passes the :class:`~kanjian.appliance_api.http.guard.AuthGuard`
first: a client address that failed too often gets 429 until it cools down.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from kanjian.appliance_api.http.auth import Role, SessionStore, TokenInfo
from kanjian.appliance_api.http.guard import AuthGuard
from kanjian.appliance_api.http.state import ApiState
from kanjian.station.state.audit import Actor

COOKIE = "kanjian_session"

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


def get_guard(request: Request) -> AuthGuard:
    guard: AuthGuard = request.app.state.auth_guard
    return guard


def client_addr(request: Request) -> str | None:
    """The client's address (a trusted proxy's ``X-Forwarded-For`` already applied by uvicorn)."""
    return request.client.host if request.client else None


def check_credential(
    request: Request, verify: Callable[[], TokenInfo | None], bad: str
) -> TokenInfo:
    """Run ``verify`` for a presented credential under the failed-login guard.

    429 (``Retry-After``) while the client's address is throttled, 401 with ``bad``
    when ``verify`` finds nothing (counted against the address).
    """
    guard, addr = get_guard(request), client_addr(request)
    wait = guard.retry_after(addr)
    if wait is not None:
        raise HTTPException(
            status.HTTP_429_TOO_MANY_REQUESTS,
            f"too many failed authentications from {addr}; try again in {wait} s",
            headers={"Retry-After": str(wait)},
        )
    info = verify()
    if info is None:
        guard.failed(addr, f"{request.method} {request.url.path}")
        raise _unauthorized(bad)
    return info


def authenticate(request: Request, creds: HTTPAuthorizationCredentials | None) -> Principal | None:
    """The credential's holder, ``None`` when none was sent; 401 for a bad one, 429 when
    the client's address is throttled."""
    state = get_state(request)
    token = creds.credentials if creds is not None else None
    session = request.cookies.get(COOKIE) if request.method in ("GET", "HEAD") else None
    if token:
        info = check_credential(
            request,
            lambda: state.tokens().verify(token),
            "the token is unknown, malformed or revoked",
        )
    elif session:
        info = check_credential(
            request,
            lambda: SessionStore(state.pool.get()).verify(session),
            "the session is unknown, expired or revoked; log in again (POST /api/session)",
        )
    else:
        return None
    return Principal(info.name, info.role, info.id, client_addr(request))


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
        return Principal("anonymous", None, None, client_addr(request))
    raise _unauthorized("reading results needs a bearer token with role operator or above")


State = Annotated[ApiState, Depends(get_state)]
Reader = Annotated[Principal, Depends(require_read)]
Operator = Annotated[Principal, Depends(require(Role.OPERATOR))]
Engineer = Annotated[Principal, Depends(require(Role.ENGINEER))]
Admin = Annotated[Principal, Depends(require(Role.ADMIN))]
