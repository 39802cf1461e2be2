"""The web edge's guards: which ``Host`` names the app answers to, and failed logins.

``HostCheck`` refuses a request whose ``Host`` header names a host the station
was not told about (400). A DNS-rebinding page (``evil.example`` resolving
first to the attacker, then to 127.0.0.1) makes the browser send
``Host: evil.example`` to the station; without this check it could read the
API as if it were the station's own page.

``AuthGuard`` counts failed authentications per client address: after
``api.auth_failures_max`` of them within ``api.auth_window_s`` the address gets
429 (with ``Retry-After``) for every credential it presents, right or wrong,
until ``auth_window_s`` has passed. It writes at most one log line per address
every ``api.auth_log_every_s``, counting what it did not log.
"""

from __future__ import annotations

import json
import logging
import math
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from kanjian.station.api_config import ApiConfig

log = logging.getLogger(__name__)

_WILDCARDS = {"0.0.0.0", "::", ""}
#: most client addresses remembered; past it the quiet ones are forgotten first
MAX_TRACKED = 4096


def normalize_host(value: str) -> str:
    """``Host`` header or config entry → bare lower-case name: no port, brackets, final dot."""
    v = value.strip().lower()
    if v.startswith("["):  # [::1]:8080
        v = v[1 : v.find("]")] if "]" in v else v[1:]
    elif v.count(":") == 1:  # name:port (a bare IPv6 address has several colons)
        v = v.split(":", 1)[0]
    return v.rstrip(".")


def allowed_hosts(cfg: ApiConfig) -> set[str] | None:
    """The host names the app answers to; ``None`` when ``*`` lets every one in.

    Always: localhost, 127.0.0.1, ::1, this machine's name, the bound address (or,
    bound to every interface, the addresses this machine's name resolves to), and
    ``api.allowed_hosts``.
    """
    if "*" in cfg.allowed_hosts:
        return None
    hosts = {"localhost", "127.0.0.1", "::1"}
    hosts.update(normalize_host(h) for h in cfg.allowed_hosts)
    name = socket.gethostname()
    if name:
        hosts.add(normalize_host(name))
    bound = normalize_host(cfg.host)
    if bound not in _WILDCARDS:
        hosts.add(bound)
    elif name:
        try:  # local (hosts file) lookup of our own name; no answer is no harm
            infos = socket.getaddrinfo(name, None)
        except OSError:
            infos = []
        hosts.update(normalize_host(str(i[4][0])) for i in infos)
    return hosts


class HostCheck:
    """ASGI middleware: 400 for a ``Host`` header outside ``allowed`` (``None``: any).

    A request without a ``Host`` header (HTTP/1.0) passes: browsers always send one,
    so it cannot come from a rebinding page.
    """

    def __init__(self, app: ASGIApp, allowed: set[str] | None) -> None:
        self.app, self.allowed = app, allowed

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.allowed is not None and scope["type"] in ("http", "websocket"):
            raw = Headers(scope=scope).get("host")
            if raw is not None and normalize_host(raw) not in self.allowed:
                shown = raw[:100].encode("ascii", "replace").decode()
                body = json.dumps(
                    {
                        "detail": f"Host {shown!r} is not a name this station answers to; "
                        "add it to api.allowed_hosts in station.yaml"
                    }
                ).encode()
                if scope["type"] == "websocket":
                    await send({"type": "websocket.close", "code": 1008})
                    return
                await send(
                    {
                        "type": "http.response.start",
                        "status": 400,
                        "headers": [
                            (b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode()),
                        ],
                    }
                )
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)


@dataclass
class _Client:
    failures: list[float] = field(default_factory=list)  # monotonic times, within the window
    blocked_until: float = 0.0
    last_logged: float = -math.inf
    unlogged_failures: int = 0
    unlogged_throttled: int = 0


class AuthGuard:
    """Failed authentications per client address: counted, throttled, logged sparingly.

    Args:
        max_failures: failures within ``window_s`` that start a block.
        window_s: the counting window, and how long a block lasts, seconds.
        log_every_s: least time between two log lines about one address, seconds.
        clock: monotonic seconds (a parameter so the arithmetic can be tested alone).
    """

    def __init__(
        self,
        max_failures: int,
        window_s: float,
        log_every_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_failures, self.window_s, self.log_every_s = max_failures, window_s, log_every_s
        self.clock = clock
        self._clients: dict[str, _Client] = {}
        self._lock = threading.Lock()

    @classmethod
    def from_config(cls, cfg: ApiConfig) -> AuthGuard:
        return cls(cfg.auth_failures_max, cfg.auth_window_s, cfg.auth_log_every_s)

    def retry_after(self, addr: str | None) -> int | None:
        """Seconds ``addr`` must wait before presenting a credential; ``None`` when it may.

        A refused attempt is counted for the log, not as a failure: the block ends
        ``window_s`` after it began however hard the client keeps trying.
        """
        key = addr or "unknown"
        with self._lock:
            c = self._clients.get(key)
            now = self.clock()
            if c is None or c.blocked_until <= now:
                return None
            c.unlogged_throttled += 1
            self._maybe_log(key, c, now, "")
            return max(1, math.ceil(c.blocked_until - now))

    def failed(self, addr: str | None, what: str) -> None:
        """Count a failed authentication from ``addr`` (``what``: e.g. ``GET /api/status``)."""
        key = addr or "unknown"
        with self._lock:
            now = self.clock()
            c = self._clients.get(key)
            if c is None:
                if len(self._clients) >= MAX_TRACKED:
                    self._forget(now)
                c = self._clients[key] = _Client()
            c.failures = [t for t in c.failures if now - t < self.window_s]
            c.failures.append(now)
            c.unlogged_failures += 1
            note = ""
            if len(c.failures) >= self.max_failures:
                c.blocked_until = now + self.window_s
                c.failures.clear()
                note = f"; throttled (429) for {self.window_s:g} s"
            self._maybe_log(key, c, now, f" (last: {what}){note}")

    def _maybe_log(self, key: str, c: _Client, now: float, tail: str) -> None:
        if now - c.last_logged < self.log_every_s:
            return
        throttled = f", {c.unlogged_throttled} refused 429 while throttled" * bool(
            c.unlogged_throttled
        )
        log.warning(
            "failed authentication from %s: %d bad credential(s)%s since the last line%s",
            key,
            c.unlogged_failures,
            throttled,
            tail,
        )
        c.last_logged, c.unlogged_failures, c.unlogged_throttled = now, 0, 0

    def _forget(self, now: float) -> None:
        # drop addresses neither blocked nor failing lately; if every one is, the oldest half
        quiet = [
            k
            for k, c in self._clients.items()
            if c.blocked_until <= now and all(now - t >= self.window_s for t in c.failures)
        ]
        for k in quiet or list(self._clients)[: len(self._clients) // 2]:
            del self._clients[k]
