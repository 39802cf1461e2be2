"""systemd's notify protocol, without libsystemd: READY, WATCHDOG, STATUS, STOPPING.

Under a ``Type=notify`` unit systemd puts a datagram socket's path in
``NOTIFY_SOCKET`` (a leading ``@`` means Linux's abstract namespace) and, with
``WatchdogSec=``, the watchdog period in ``WATCHDOG_USEC`` (microseconds). A
message is one datagram of ``KEY=value`` lines (sd_notify(3)). Without
``NOTIFY_SOCKET`` everything here is a no-op, so ``kanjian run`` in a terminal
behaves as before.

The watchdog is the point of it: systemd restarts a station that stops pinging.
A thread that pings on a timer proves only that the process exists, so the
pinger sends ``WATCHDOG=1`` (every ``WATCHDOG_USEC / 2``) only when the station's
*progress counter* moved since the previous ping. The station's counter
(:attr:`~kanjian.station.pipeline.LoopStats.progress`) moves when an inspection
is emitted, and when the loop waited its whole timeout and found nothing to do:
no trigger within 0.2 s (triggered mode, idle between parts), or no frame within
``runtime.queue_timeout_s`` (free-run, the camera reconnecting: the camera's
own reconnect deals with that, a restart would not). It stops moving when the
loop is stuck inside an inspection (a hung model call, a worker that never hands
its frame on) or when the loop has ended (an error in ``serve``'s loop thread, a
finite source replayed to its end under ``serve``): systemd then kills and
restarts the station after ``WatchdogSec``.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Callable, Mapping
from typing import Protocol

log = logging.getLogger(__name__)


class Notifier:
    """Sends sd_notify messages to ``NOTIFY_SOCKET`` (no-op when there is none)."""

    def __init__(self, address: str | None) -> None:
        self.address: str | None = None
        if address and (address.startswith("/") or address.startswith("@")):
            # abstract namespace: the name starts with a NUL byte in place of "@"
            self.address = "\0" + address[1:] if address.startswith("@") else address
        elif address:
            log.warning("NOTIFY_SOCKET=%r is neither a path nor @abstract: ignored", address)
        self._warned = False

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Notifier:
        return cls((os.environ if env is None else env).get("NOTIFY_SOCKET"))

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def send(self, *lines: str) -> bool:
        """Send ``lines`` (``KEY=value`` each) as one datagram; ``True`` when sent.

        Never raises: a supervisor that stopped listening must not stop the station.
        """
        if self.address is None:
            return False
        payload = "\n".join(lines).encode()
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
                s.sendto(payload, self.address)
        except OSError as e:
            if not self._warned:  # once: a missing socket would otherwise flood the log
                self._warned = True
                log.warning("cannot notify systemd at %r: %s", self.address, e)
            return False
        return True


def watchdog_interval_s(env: Mapping[str, str] | None = None) -> float | None:
    """Seconds between watchdog pings (half of ``WATCHDOG_USEC``), or ``None`` when
    systemd asked for none, or asked another process (``WATCHDOG_PID``)."""
    env = os.environ if env is None else env
    try:
        usec = int(env.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    pid = env.get("WATCHDOG_PID")
    if usec <= 0 or (pid and pid.strip() != str(os.getpid())):
        return None
    return usec / 2e6


class Watchdog:
    """Pings ``WATCHDOG=1`` every ``interval_s`` while ``progress()`` keeps moving.

    Args:
        notifier: where the pings go.
        interval_s: seconds between checks (half the watchdog period).
        progress: a counter that moves while the station does its work.
        status: a one-line status sent with each ping (``STATUS=``).
    """

    def __init__(
        self,
        notifier: Notifier,
        interval_s: float,
        progress: Callable[[], int],
        status: Callable[[], str] | None = None,
    ) -> None:
        self.notifier = notifier
        self.interval_s = interval_s
        self.progress = progress
        self.status = status
        self.ticks = 0  # checks made (tests wait on it)
        self.pings = 0  # WATCHDOG=1 sent
        self._last = progress()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sd-watchdog", daemon=True)

    def tick(self) -> bool:
        """One check: ping when the counter moved since the previous check."""
        now = self.progress()
        moved, self._last = now != self._last, now
        self.ticks += 1
        if not moved:
            log.debug("watchdog: no progress since the last check, no ping")
            return False
        lines = ["WATCHDOG=1"]
        if self.status is not None:
            lines.append("STATUS=" + self.status())
        self.pings += self.notifier.send(*lines)
        return True

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.tick()
            except Exception:  # a status callback that raises must not end the pings
                log.exception("watchdog check failed")

    def start(self) -> Watchdog:
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop pinging (safe from a signal handler: only sets an event)."""
        self._stop.set()


class _Counts(Protocol):
    """What :func:`status_line` reads (:class:`~kanjian.station.pipeline.LoopStats`)."""

    @property
    def frames(self) -> int: ...
    @property
    def progress(self) -> int: ...
    @property
    def fps(self) -> float: ...
    @property
    def verdicts(self) -> Mapping[str, int]: ...


def status_line(stats: _Counts) -> str:
    """``STATUS=`` text: inspections, verdicts and rate, on one line."""
    verdicts = " ".join(f"{k} {v}" for k, v in sorted(stats.verdicts.items()))
    return f"{stats.frames} inspections ({verdicts or 'none yet'}), {stats.fps:.1f}/s"


class ServiceNotify:
    """The station's side of a ``Type=notify`` unit: :meth:`ready` once the loop
    starts (and the watchdog with it), :meth:`stopping` at shutdown.

    Both are no-ops without ``NOTIFY_SOCKET``; :meth:`stopping` is idempotent and
    safe from a signal handler.
    """

    def __init__(self, stats: _Counts, env: Mapping[str, str] | None = None) -> None:
        self.stats = stats
        self.notifier = Notifier.from_env(env)
        self._interval = watchdog_interval_s(env)
        self.watchdog: Watchdog | None = None
        self._stopping = False

    def ready(self) -> None:
        if not self.notifier.enabled:
            return
        self.notifier.send("READY=1", "STATUS=inspecting; " + status_line(self.stats))
        if self._interval is not None:
            self.watchdog = Watchdog(
                self.notifier,
                self._interval,
                lambda: self.stats.progress,
                lambda: status_line(self.stats),
            ).start()
            log.info(
                "systemd watchdog: a ping every %.1f s while the loop advances", self._interval
            )

    def stopping(self) -> None:
        if self._stopping:
            return
        self._stopping = True
        if self.watchdog is not None:
            self.watchdog.stop()
        self.notifier.send("STOPPING=1", "STATUS=stopping; " + status_line(self.stats))
