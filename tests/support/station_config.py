"""The one way tests build a station config (``station.yaml``'s content, as a dict).

:func:`station_config` gives the common base (CPU, one ORT thread so a core is left
to the rest of the test, a lossless folder camera); every test states only what it
changes, as sections deep-merged over the base. :func:`write_config` writes it
where ``kanjian`` commands read it, :func:`parse` validates it through the same
YAML path they take.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

#: the test models are weak (see tests/support/scores.py): decode everything a verdict
#: rule may count
DECODE_CONF = 0.03


def merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """``base`` with ``over`` merged in: dicts merge key by key, ``None`` deletes a key,
    anything else replaces. Neither argument is changed."""
    out = dict(base)
    for key, value in over.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def station_config(
    data_dir: Path,
    *,
    bundle: Path | None = None,
    images: Path | None = None,
    **sections: Any,
) -> dict[str, Any]:
    """A station config for tests.

    Args:
        data_dir: ``store.data_dir``.
        bundle: a bundle folder or bare ONNX file (``model.path``); the model section
            then reads CPU, one intra-op thread, ``conf`` :data:`DECODE_CONF`.
        images: a folder camera on it, no loop (give ``camera={...}`` to change it).
        sections: top-level sections merged over the base (see :func:`merge`), e.g.
            ``trigger={"mode": "triggered"}``, ``plc={"enabled": True}``,
            ``camera={"loop": True}``, ``model={"conf": 0.2}``, ``rules=...``.
    """
    # no free-space floor for retention: a test's rows must not depend on the host's free
    # disk (the retention tests set their own floors)
    store = {"data_dir": str(data_dir), "retention": {"min_free_mb": 0}}
    cfg: dict[str, Any] = {"policy": "lossless", "store": store}
    if images is not None:
        cfg["camera"] = {"kind": "folder", "path": str(images), "loop": False}
    if bundle is not None:
        cfg["model"] = {
            "path": str(bundle),
            "providers": ["cpu"],
            "intra_op_threads": 1,
            "conf": DECODE_CONF,
        }
    return merge(cfg, sections)


def config_text(cfg: dict[str, Any]) -> str:
    """``cfg`` as YAML text."""
    return yaml.safe_dump(cfg, sort_keys=False)


def write_config(path: Path, cfg: dict[str, Any]) -> Path:
    """Write ``cfg`` as YAML to ``path``; returns ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(config_text(cfg), encoding="utf-8")
    return path


def parse(cfg: dict[str, Any]) -> Any:
    """``cfg`` validated as a :class:`kanjian.station.config.StationConfig`, through YAML."""
    from kanjian.station.config import parse_config

    return parse_config(config_text(cfg))
