"""The shadow child: ``python -m kanjian.station.shadow.child READ_FD WRITE_FD``.

A process of its own, never a thread of the station: the preprocessing kernels run
here too, and Numba's workqueue layer aborts the whole process when a second thread
launches a kernel while the inspection loop runs one; a candidate model that crashes
ONNX Runtime takes only this process down. It runs on one thread (ONNX Runtime's
intra-op pool and Numba's both 1; the parent also sets ``NUMBA_NUM_THREADS=1`` and
``OMP_NUM_THREADS=1`` in its environment) at a raised nice value, so the station's
loop wins the CPU whenever both want it.

It judges each frame with the same :class:`~kanjian.station.inspector.Inspector` the
station uses (no quality gate: it only gets frames the active model judged), under
the station's rules when set, else its own bundle's, and answers with the values
the store would write for it (:func:`~kanjian.station.records.stored_rows`). The
protocol: :mod:`kanjian.station.shadow.protocol`. It exits when the station closes
its pipe.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from datetime import datetime
from multiprocessing.connection import Connection
from typing import TYPE_CHECKING, Any

from kanjian.station.shadow.protocol import Job, ShadowResult

if TYPE_CHECKING:
    from kanjian.station.inspector import Inspector

log = logging.getLogger("kanjian.shadow.child")

#: how much nicer than the station the child runs (Linux: 0 best, 19 worst)
NICE = 10


class Judge:
    """The shadow model loaded, warmed up and wrapped in an inspector."""

    def __init__(self, init: dict[str, Any]) -> None:
        from kanjian.inference.model import load_model
        from kanjian.kernels import configure_threads
        from kanjian.kernels import warmup as kernels_warmup
        from kanjian.station.inspector import Inspector

        configure_threads(1, layer="workqueue")
        model = load_model(init["path"], tuple(init["providers"]), 1, bool(init["allow_fallback"]))
        if model.info.sha256 != init["sha256"]:
            raise RuntimeError(
                f"{init['path']}: the file on disk (sha256 {model.info.sha256[:12]}…) is not "
                f"the registered model {str(init['sha256'])[:12]}…; refusing to run it"
            )
        kernels_warmup(model.info.imgsz)
        model.warmup()
        self.model = model
        self.inspector: Inspector = Inspector(model, mm_per_px=init.get("mm_per_px"))
        self._rules_key = ""

    def ready(self) -> dict[str, Any]:
        i = self.model.info
        return {"ok": True, "name": i.name, "version": i.version, "task": i.task,
                "provider": self.model.session_info.provider}  # fmt: skip

    def _rules(self, ruleset: dict[str, Any]) -> None:
        key = json.dumps(ruleset, sort_keys=True)
        if key == self._rules_key:
            return
        from kanjian.station.ruleset import RuleSet, StoredRules

        s = StoredRules.model_validate(ruleset)
        self.inspector.set_ruleset(RuleSet(s.rules, s.conf, s.iou, s.max_det))
        self._rules_key = key

    def __call__(self, job: Job) -> ShadowResult:
        from kanjian.camera.frame import Frame
        from kanjian.station.records import INSPECTION_COLUMNS, stored_rows

        self._rules(job.ruleset)
        frame = Frame(
            job.image, job.frame_id, job.source_id, datetime.fromisoformat(job.captured_at)
        )
        t0 = time.perf_counter()
        insp = self.inspector.inspect(frame)
        latency = (time.perf_counter() - t0) * 1e3
        row, drows = stored_rows(insp, station_id="shadow", seq=0, image_path=None)
        r = dict(zip(INSPECTION_COLUMNS, row, strict=False))
        probs = r["probs_json"]
        return ShadowResult(
            inspection_id=job.inspection_id,
            verdict=insp.verdict.value,
            reason=insp.reason,
            top_class=r["top_class"],
            top_confidence=r["top_confidence"],
            score=r["score"],
            detections=tuple((d[2], d[3], d[4], d[5], d[6], d[7], d[8]) for d in drows),
            probs=None if probs is None else tuple(json.loads(probs)),
            latency_ms=latency,
        )


def main(argv: list[str]) -> int:
    """Serve one shadow model until the station closes the pipe; exit status 0, or 3
    when the model could not be loaded (the reason was sent as the ``ready`` answer)."""
    logging.basicConfig(
        level=logging.INFO, stream=sys.stderr, format="shadow child: %(levelname)s %(message)s"
    )
    inbox = Connection(int(argv[1]), writable=False)
    outbox = Connection(int(argv[2]), readable=False)
    try:
        os.nice(NICE)
    except OSError as e:  # not permitted: the single thread still bounds what it takes
        log.warning("could not lower the shadow's priority: %s", e)
    init = json.loads(inbox.recv_bytes())
    try:
        judge = Judge(init)
    except Exception as e:  # the station says why in its status and keeps running
        outbox.send_bytes(json.dumps({"ok": False, "error": f"{type(e).__name__}: {e}"}).encode())
        return 3
    outbox.send_bytes(json.dumps(judge.ready()).encode())
    while True:
        try:
            header = inbox.recv_bytes()
            pixels = inbox.recv_bytes()
        except EOFError:
            return 0
        outbox.send_bytes(judge(Job.from_blocks(header, pixels)).to_json())


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
