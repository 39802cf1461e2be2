"""Make Ultralytics run fully offline, and import it only after that.

Ultralytics reads its settings, probes DNS and may ``pip install`` missing
packages the moment it is imported, so the environment must be fixed first.
Only training code calls :func:`ultralytics_module`; the runtime never does.
"""

from __future__ import annotations

import logging
import os
import re
import tempfile
from pathlib import Path
from types import ModuleType
from typing import Any

log = logging.getLogger(__name__)

_OFFLINE_VARS = {
    # no DNS probe, no hub, no asset download
    "YOLO_OFFLINE": "true",
    # export/check_requirements would otherwise try to pip-install onnx, onnxslim...
    "YOLO_AUTOINSTALL": "false",
    "YOLO_VERBOSE": "true",
}


def _private_dir(name: str) -> str:
    path = Path(tempfile.gettempdir()) / f"kanjian-{name}-{os.getuid()}"
    path.mkdir(parents=True, exist_ok=True)
    return str(path)


def set_offline_env() -> None:
    """Point Ultralytics and Matplotlib at private temp dirs and switch off network use.

    Values the user already set for the config dirs are kept; the offline
    switches are always forced.
    """
    os.environ.update(_OFFLINE_VARS)
    os.environ.setdefault("YOLO_CONFIG_DIR", _private_dir("yolo-config"))
    os.environ.setdefault("MPLCONFIGDIR", _private_dir("mpl-config"))


def ultralytics_module() -> ModuleType:
    """Import ``ultralytics`` offline, with telemetry ("sync") and hub off.

    Raises:
        RuntimeError: when the training extra is not installed.
    """
    set_offline_env()
    try:
        import ultralytics
        from ultralytics.utils import SETTINGS
    except ImportError as e:  # pragma: no cover - depends on the install
        raise RuntimeError("training needs Ultralytics: pip install 'kanjian[training]'") from e
    # ``sync`` sends anonymous usage events; the settings file lives in our temp dir.
    off = {k: False for k in ("sync", "hub") if SETTINGS.get(k, False)}
    if off:
        SETTINGS.update(off)  # type: ignore[no-untyped-call]
    _provide_fonts()
    _replace_amp_check()
    return ultralytics


#: GPUs on which Ultralytics' own AMP check always fails (NaN losses / zero mAP with fp16)
_AMP_BROKEN = re.compile(
    r"(nvidia|geforce|quadro|tesla).*?(1660|1650|1630|t400|t550|t600|t1000|t1200|t2000|k40m)",
    re.IGNORECASE,
)


def offline_check_amp(model: Any) -> bool:
    """Whether to train with AMP, decided without any file from the network.

    Ultralytics' ``check_amp`` downloads ``yolo26n.pt`` to compare fp32 and fp16
    predictions on a GPU. Here only its list of GPUs known to break fp16 training
    is kept: AMP is on for any other CUDA device, off on CPU/MPS.
    """
    import torch

    device = next(model.parameters()).device
    if device.type != "cuda":
        return False
    gpu = torch.cuda.get_device_name(device)
    if _AMP_BROKEN.search(gpu):
        log.warning("AMP off: fp16 training on %s may give NaN losses or zero mAP", gpu)
        return False
    log.info("AMP on for %s (offline check: not a GPU known to break fp16 training)", gpu)
    return True


def _replace_amp_check() -> None:
    """Make the trainer call :func:`offline_check_amp` instead of the downloading one."""
    from ultralytics.engine import trainer

    # the trainer imported the name into its own module: replace it there
    trainer.check_amp = offline_check_amp  # type: ignore[attr-defined]


def _provide_fonts() -> None:
    """Give Ultralytics a local "Arial" so ``check_font`` never reaches for the network.

    ``check_dataset`` calls ``check_font("Arial.ttf")``, which HEADs an asset URL
    unless the file sits in the config dir, even with ``YOLO_OFFLINE``. The font is
    only used to draw labels on plots; Matplotlib's bundled DejaVu Sans serves.
    """
    import shutil

    import matplotlib
    from ultralytics.utils import USER_CONFIG_DIR

    dejavu = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"
    for name in ("Arial.ttf", "Arial.Unicode.ttf"):
        target = Path(USER_CONFIG_DIR) / name
        if not target.exists() and dejavu.is_file():
            shutil.copyfile(dejavu, target)
