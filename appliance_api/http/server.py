"""``kanjian serve``: the inspection loop and the HTTP app in one process.

Start-up, in order: check the port is free, build the station (model, store,
camera), start the API services, make a screen token on the very first start,
start the loop thread, serve. Ctrl-C / SIGTERM: streams end, the loop finishes
the frame in flight, the store commits everything queued, then the process exits.
"""

from __future__ import annotations

import errno
import logging
import os
import socket
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

import uvicorn

from kanjian.appliance_api.http.app import create_app
from kanjian.appliance_api.http.auth import Role
from kanjian.appliance_api.http.state import ApiState, start_services
from kanjian.station.config import StationConfig
from kanjian.station.notify import ServiceNotify
from kanjian.station.pipeline import build_station
from kanjian.station.plc import service as _plc  # noqa: F401  registers the "plc" channel
from kanjian.station.shadow import service as _shadow  # noqa: F401  registers "shadow"
from kanjian.station.state.audit import Actor, write_audit
from kanjian.station.state.db import write_tx
from kanjian.station.store_health import StoreCloseResult
from kanjian.station.sync import service as _sync  # noqa: F401  registers "sync"

log = logging.getLogger(__name__)


class PortInUse(Exception):
    """The address to listen on is taken (or not ours to bind)."""


def check_port(host: str, port: int) -> None:
    """Fail fast, before loading a model, when ``host:port`` cannot be bound."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as e:
            why = "is in use" if e.errno == errno.EADDRINUSE else f"cannot be bound ({e.strerror})"
            raise PortInUse(f"{host}:{port} {why}; pick another with --port") from e


class _Server(uvicorn.Server):
    """uvicorn, told to stop our loop too, and not to re-raise the signal on exit.

    uvicorn re-raises a captured SIGTERM after shutdown, which would kill the
    process before the store is flushed; we exit normally instead.
    """

    def __init__(
        self,
        config: uvicorn.Config,
        on_exit: Callable[[], None],
        on_started: Callable[[], None] = lambda: None,
    ) -> None:
        super().__init__(config)
        self._on_exit = on_exit
        self._on_started = on_started

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started:  # listening: the station is ready (systemd's READY=1)
            self._on_started()

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        self._on_exit()
        if self.should_exit and sig == 2:  # a second Ctrl-C: stop waiting for clients
            self.force_exit = True
        else:
            self.should_exit = True


@dataclass(frozen=True)
class ServeResult:
    """What a serve run did, for the CLI's last line."""

    frames: int
    verdicts: dict[str, int]
    store: StoreCloseResult

    @property
    def flushed(self) -> bool:
        """Every judged inspection was committed."""
        return self.store.ok


def screen_token_if_first_start(state: ApiState) -> str | None:
    """On a station with no tokens at all, make an operator token for the screen."""
    db = state.pool.get()
    with write_tx(db):
        if state.tokens().list():
            return None
        new = state.tokens().create("screen", Role.OPERATOR, "serve (first start)")
        write_audit(
            db,
            Actor("station"),
            "token.create",
            new.info.id,
            {"name": "screen", "role": "operator", "why": "first start"},
        )
    return new.secret


FIRST_START_LINK = "first-start-link.txt"
#: printed before the link file's path (never the token) when stdout is not a terminal
FIRST_START_NOTE = "first start: the screen's link with an operator token is in "


def write_first_start_link(data_dir: Path, link: str) -> Path:
    """Write ``link`` to ``data_dir/first-start-link.txt``, readable by this user only (0600)."""
    path = data_dir / FIRST_START_LINK
    path.unlink(missing_ok=True)  # a stale one may carry other permissions
    # O_EXCL + O_NOFOLLOW: never write through a link someone planted in the data folder
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(link + "\n")
    return path.resolve()


def serve(
    cfg: StationConfig,
    announce: Callable[[str], None] = print,
    screen_token: bool = True,
    to_terminal: bool | None = None,
) -> ServeResult:
    """Run the station and its app until SIGINT / SIGTERM.

    Args:
        cfg: the station config (``cfg.api.host`` / ``port`` say where to listen).
        announce: prints the screen's address and start-up facts.
        screen_token: on the first start (no tokens yet), make an operator token and
            print a screen link carrying it.
        to_terminal: whether ``announce`` reaches a person (default: stdout is a
            terminal). When not, the link goes to ``<data_dir>/first-start-link.txt``
            (mode 0600) and only that path is printed and logged.

    Raises:
        PortInUse, DataFolderInUseError, ModelLoadError, BundleError, LowDiskSpaceError:
            before anything runs.
    """
    host, port = cfg.api.host, cfg.api.port
    if to_terminal is None:
        to_terminal = sys.stdout.isatty()
    check_port(host, port)
    station = build_station(cfg)
    state = start_services(station)
    model = station.inspector.model
    announce(
        f"model {model.info.name} v{model.info.version} ({model.info.sha256[:12]}…) on "
        f"{model.session_info.provider}"
        + (
            " (FALLBACK from " + model.session_info.requested[0] + ")"
            if model.session_info.fell_back
            else ""
        )
    )
    announce(f"store {station.store.db_path}")
    shown_host = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    url = f"http://{shown_host}:{port}/"
    secret = screen_token_if_first_start(state) if screen_token else None
    if secret and to_terminal:
        announce(f"first start: made an operator token for the screen (shown once): {secret}")
        announce(f"operator screen: {url}#token={secret}")
    else:
        announce(f"operator screen: {url}")
    if secret and not to_terminal:
        # stdout goes to a service's log or a pipe: the token must not land there
        where = write_first_start_link(station.store.data_dir, f"{url}#token={secret}")
        log.info("first start: the operator screen's link (with its token) is in %s", where)
        announce(f"{FIRST_START_NOTE}{where}")
    announce(f"API docs: {url}docs")

    service = ServiceNotify(station.stats)  # systemd: READY, WATCHDOG, STOPPING

    def on_exit() -> None:
        log.info("stopping: ending streams, finishing the frame in flight, flushing the store")
        service.stopping()
        state.hub.close()
        station.stop()

    server = _Server(
        uvicorn.Config(
            create_app(state),
            host=host,
            port=port,
            log_level="warning",
            access_log=False,
            timeout_graceful_shutdown=5,
            lifespan="on",
        ),
        on_exit,
        service.ready,  # the loop runs and the API listens
    )
    state.loop.start()
    try:
        server.run()
    finally:
        service.stopping()
        state.hub.close()
        state.loop.stop()
        # close() commits what is queued and says what it could not; a separate
        # flush() with its own shorter timeout said NOT FLUSHED while close() went on
        # to commit everything
        stored = station.close()
        state.pool.close_all()
    return ServeResult(station.stats.frames, dict(station.stats.verdicts), stored)
