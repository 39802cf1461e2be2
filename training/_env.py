"""Make Ultralytics run fully offline, and import it only after that.

Ultralytics reads its settings, probes DNS and may ``pip install`` missing
packages the moment it is imported, so the environment must be fixed first.
Only training code calls :func:`ultralytics_module`; the runtime never does.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from types import ModuleType

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
    return ultralytics


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
