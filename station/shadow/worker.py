"""The station's end of one shadow child process: start it, hand it frames, stop it.

The child is ``python -m kanjian.station.shadow.child`` (:mod:`.child`) with two pipes
of its own, started with :class:`subprocess.Popen` rather than :mod:`multiprocessing`:
a forked child would inherit ONNX Runtime's and Numba's threads half-way, and a
spawned one re-imports the station's ``__main__``; a plain command line with its own
environment (one thread everywhere) has neither problem, as
:func:`~kanjian.station.state.models.golden_check_isolated` found before.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import subprocess
import sys
from multiprocessing.connection import Connection
from typing import Any

import numpy as np

from kanjian.station.shadow.protocol import Job, ProtocolError, ShadowResult

log = logging.getLogger(__name__)

#: how long a child may take to load and warm up its model (a cold Numba cache
#: compiles the preprocessing kernels: tens of seconds on a small CPU)
READY_TIMEOUT_S = 300.0
CHILD_MODULE = "kanjian.station.shadow.child"


class ChildFailed(Exception):
    """The child could not start, died, hung or answered nonsense; the message says which."""


def child_env() -> dict[str, str]:
    """The station's environment with every thread pool of the child held to one thread."""
    return {
        **os.environ,
        "NUMBA_NUM_THREADS": "1",
        "OMP_NUM_THREADS": "1",
        "OMP_WAIT_POLICY": "PASSIVE",
        "OPENBLAS_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
    }


class ShadowChild:
    """One running child and its pipes.

    Args:
        init: the ``init`` message: ``path`` (bundle folder), ``sha256`` (the registered
            model's; the child refuses another file), ``providers``, ``allow_fallback``,
            ``mm_per_px``.

    Raises:
        ChildFailed: the process could not be started.
    """

    def __init__(self, init: dict[str, Any]) -> None:
        to_child_r, to_child_w = os.pipe()
        from_child_r, from_child_w = os.pipe()
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", CHILD_MODULE, str(to_child_r), str(from_child_w)],
                pass_fds=(to_child_r, from_child_w),
                env=child_env(),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,  # its logs go to stderr, the station's journal
            )
        except OSError as e:
            for fd in (to_child_r, to_child_w, from_child_r, from_child_w):
                os.close(fd)
            raise ChildFailed(f"could not start the shadow child: {e}") from e
        os.close(to_child_r)
        os.close(from_child_w)
        self._tx = Connection(to_child_w, readable=False)
        self._rx = Connection(from_child_r, writable=False)
        self._send(json.dumps(init).encode())

    @property
    def pid(self) -> int:
        return int(self.proc.pid)

    def _send(self, data: bytes | memoryview) -> None:
        try:
            self._tx.send_bytes(data)
        except OSError as e:  # BrokenPipeError: it died
            raise ChildFailed(self._gone(f"{type(e).__name__}")) from e

    def _gone(self, what: str, wait_s: float = 2.0) -> str:
        # the pipe closes as the child dies, a moment before the kernel can tell its status:
        # wait that moment, or a killed child would read as one that merely stopped answering
        try:
            code: int | None = self.proc.wait(wait_s)
        except subprocess.TimeoutExpired:
            code = None
        if code is None:
            return f"the shadow child stopped answering ({what})"
        how = f"signal {-code}" if code < 0 else f"exit status {code}"
        return f"the shadow child died ({how})"

    def _receive(self, timeout_s: float, what: str) -> bytes:
        try:
            if not self._rx.poll(timeout_s):
                raise ChildFailed(f"the shadow child did not answer {what} within {timeout_s:g} s")
            return self._rx.recv_bytes()
        except (EOFError, OSError) as e:
            raise ChildFailed(self._gone(type(e).__name__)) from e

    def wait_ready(self, timeout_s: float = READY_TIMEOUT_S) -> dict[str, Any]:
        """The child's ``ready`` answer (model name, version, task, provider).

        Raises:
            ChildFailed: it could not load the model (its reason), died or took too long.
        """
        data = self._receive(timeout_s, "its start")
        try:
            answer = json.loads(data)
        except ValueError as e:
            raise ChildFailed(f"the shadow child's start answer is not JSON: {e}") from e
        if not isinstance(answer, dict) or answer.get("ok") is not True:
            err = answer.get("error") if isinstance(answer, dict) else None
            raise ChildFailed(f"the shadow model could not be loaded: {err or answer!r}")
        return answer

    def judge(self, job: Job, timeout_s: float) -> ShadowResult:
        """Send one frame and wait for its result.

        Raises:
            ChildFailed: it died, took longer than ``timeout_s`` or answered nonsense.
        """
        self._send(job.header())
        pixels = np.ascontiguousarray(job.image)
        self._send(pixels.data.cast("B"))
        data = self._receive(timeout_s, f"frame {job.inspection_id}")
        try:
            result = ShadowResult.from_json(data)
        except ProtocolError as e:
            raise ChildFailed(f"the shadow child answered nonsense: {e}") from e
        if result.inspection_id != job.inspection_id:
            raise ChildFailed(
                f"the shadow child answered {result.inspection_id} for {job.inspection_id}"
            )
        return result

    def close(self, timeout_s: float = 5.0) -> None:
        """Close its pipe (it exits), kill it if it does not within ``timeout_s``. Idempotent."""
        for conn in (self._tx, self._rx):
            with contextlib.suppress(OSError):
                conn.close()
        try:
            self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.kill()

    def kill(self) -> None:
        """SIGKILL it and reap it (a hung child, or the station closing)."""
        if self.proc.poll() is None:
            self.proc.kill()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:  # pragma: no cover - a zombie the kernel keeps
            log.error("shadow child %d did not exit after SIGKILL", self.proc.pid)
