"""Several threads may call the CPU kernel at once (API warm-up beside the loop).

Numba's workqueue pool aborts the process when two threads enter a parallel
kernel together; the kernel must fall back to its serial twin instead. Runs in
a subprocess because the failure mode is a process abort.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap


def test_concurrent_calls_do_not_abort_and_agree() -> None:
    code = textwrap.dedent(
        """
        import threading
        import numpy as np
        from kanjian.kernels import configure_threads, letterbox_cpu
        from tests.support.reference import letterbox_reference

        cfg = configure_threads(2, layer="workqueue")
        rng = np.random.default_rng(0)
        img = rng.integers(0, 256, (1080, 1920, 3), dtype=np.uint8)
        want = letterbox_reference(img, (640, 640))
        want = want[0] if isinstance(want, tuple) else want
        bad = []

        def work():
            for _ in range(40):
                got = letterbox_cpu(img, (640, 640))
                if not np.array_equal(got, want):
                    bad.append(1)

        ts = [threading.Thread(target=work) for _ in range(3)]
        for t in ts: t.start()
        for t in ts: t.join()
        print("bad", len(bad))
        raise SystemExit(1 if bad else 0)
        """
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "bad 0" in r.stdout
