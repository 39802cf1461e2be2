"""The fleet page's FastAPI dependencies: its state, and who is asking (platform token →
role and scope).

Every request with data sends ``Authorization: Bearer kjp_...``; there is no cookie
and no anonymous reading (pictures come as presigned links the API hands out, so an
``<img>`` needs no credential of the page's). Failed tokens are counted per client
address by the station's own :class:`~kanjian.appliance_api.http.guard.AuthGuard`:
too many and the address gets 429 for a while.

Actions (none yet but the rollout's) take :data:`Engineer` or :data:`Admin`; reads
take :data:`Viewer`. A route reads its rows through :func:`db` with the principal's
:class:`~kanjian.platform.web.scope.Scope`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from kanjian.appliance_api.http.guard import AuthGuard
from kanjian.platform.web.db import ReadPool
from kanjian.platform.web.pictures import PictureLinks
from kanjian.platform.web.scope import PlatformRole, Scope
from kanjian.platform.web.tokens import PlatformTokens


@dataclass
class FleetState:
    """What the app holds: its connections, the picture signer (None: no object
    storage given), and the failed-token guard."""

    pool: ReadPool
    links: PictureLinks | None
    guard: AuthGuard


@dataclass(frozen=True)
class Principal:
    """The holder of a valid platform token."""

    name: str
    token_id: str
    role: PlatformRole
    scope: Scope
    remote_addr: str | None


bearer = HTTPBearer(
    auto_error=False,
    description="a platform token: `kanjian platform token create NAME --role viewer "
    "--firm FIRM --db ...`",
)
Creds = Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]


def get_state(request: Request) -> FleetState:
    state: FleetState = request.app.state.fleet
    return state


def db(request: Request) -> Iterator[Any]:
    """A read-only connection for this request (given back when it is answered)."""
    with get_state(request).pool.connection() as conn:
        yield conn


def _unauthorized(message: str) -> HTTPException:
    return HTTPException(
        status.HTTP_401_UNAUTHORIZED, message, headers={"WWW-Authenticate": "Bearer"}
    )


def authenticate(
    request: Request, creds: HTTPAuthorizationCredentials | None, conn: Any
) -> Principal | None:
    """The token's holder; ``None`` when no token was sent; 401 for a bad one, 429 while
    the client's address is throttled. ``conn``: the request's connection."""
    if creds is None or not creds.credentials:
        return None
    state = get_state(request)
    addr = request.client.host if request.client else None
    wait = state.guard.retry_after(addr)
    if wait is not None:
        raise HTTPException(
            status.HTTP_429_TOO_MANY_REQUESTS,
            f"too many failed authentications from {addr}; try again in {wait} s",
            headers={"Retry-After": str(wait)},
        )
    info = PlatformTokens(conn).verify(creds.credentials)
    if info is None:
        state.guard.failed(addr, f"{request.method} {request.url.path}")
        raise _unauthorized("the platform token is unknown, malformed or revoked")
    return Principal(info.name, info.id, info.role, info.scope, addr)


Db = Annotated[Any, Depends(db)]


def require(role: PlatformRole) -> Callable[..., Principal]:
    """A dependency that lets only ``role`` and above through (401 / 403 otherwise).

    It checks the token on the request's own connection (:data:`Db`: FastAPI hands the
    route the same one), so a request never holds two of the pool's connections.
    """

    def dep(request: Request, creds: Creds, conn: Db) -> Principal:
        p = authenticate(request, creds, conn)
        if p is None:
            raise _unauthorized(f"this needs a platform token with role {role.value} or above")
        if not p.role.allows(role):
            raise HTTPException(
                status.HTTP_403_FORBIDDEN,
                f"role {p.role.value} may not do this; it needs {role.value} or above",
            )
        return p

    return dep


def not_found(what: str) -> HTTPException:
    """404 for a name outside the scope, worded as for a name nobody uses (so a token
    learns nothing of other firms' stations)."""
    return HTTPException(status.HTTP_404_NOT_FOUND, f"no {what} here")


State = Annotated[FleetState, Depends(get_state)]
Viewer = Annotated[Principal, Depends(require(PlatformRole.VIEWER))]
Engineer = Annotated[Principal, Depends(require(PlatformRole.ENGINEER))]
Admin = Annotated[Principal, Depends(require(PlatformRole.ADMIN))]
