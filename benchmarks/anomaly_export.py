"""Export untrained anomaly graphs for the latency benchmark (run as a child process).

``python -m benchmarks.anomaly_export OUT_DIR IMGSZ METHOD...`` writes
``OUT_DIR/<method>.onnx`` for each method and prints ``EXPORTED <json path list>``.
The only benchmark module that imports torch: :mod:`benchmarks.anomaly_assets`
runs it in a child process (torch's export sets process-wide thread and numeric
state the timed process must not inherit), once per source hash.

Weights are random (seeded) and never trained: an ONNX graph costs the same to
run whatever its weights hold. The graphs are the training code's own
(:class:`~kanjian.training.anomaly_draem.DraemS`,
:class:`~kanjian.training.anomaly_patch.PatchKNN`), exported by
:func:`~kanjian.training.anomaly_onnx.export_anomaly` on the station's contract.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

#: what ``kanjian train --task anomaly --method`` offers, as the benchmark names them
METHODS = ("draem", "draem-lite", "patchknn")


def export(method: str, path: Path, imgsz: int) -> Path:
    """Write the untrained ``method`` graph at ``imgsz`` x ``imgsz`` to ``path``.

    Raises:
        ValueError: an unknown method (the message lists the known ones).
    """
    import torch

    from kanjian.training.anomaly_onnx import export_anomaly

    torch.manual_seed(0)
    model: Any
    meta: dict[str, Any]
    if method in ("draem", "draem-lite"):
        from kanjian.training.anomaly_draem import LITE_WIDTH, DraemS

        width = 1.0 if method == "draem" else LITE_WIDTH
        model, meta, stride = DraemS(width=width), {"method": method, "width": width}, 2
    elif method == "patchknn":
        from kanjian.training.anomaly_patch import PatchKNN, PatchKNNConfig

        cfg = PatchKNNConfig()
        model, stride = PatchKNN(cfg), 8
        meta = {
            "method": "patchknn",
            "encoder": "random",
            "widths": list(cfg.widths),
            "dim": cfg.dim,
            "bank_size": cfg.bank_size,
        }
    else:
        raise ValueError(f"unknown anomaly method {method!r}; choose from {', '.join(METHODS)}")
    meta["weights"] = "untrained (latency benchmark)"
    return export_anomaly(model, path, imgsz, meta, stride=stride)


def main(argv: list[str]) -> int:
    if len(argv) < 3:
        print(__doc__)
        return 2
    out, imgsz, methods = Path(argv[0]), int(argv[1]), argv[2:]
    paths = [str(export(m, out / f"{m}.onnx", imgsz)) for m in methods]
    print("EXPORTED " + json.dumps(paths))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
