"""``kanjian config validate``'s second pass: the files a valid config names exist.

The schema checks keys and values; this checks the things they point at, so that a
misspelt model path is found at the desk and not by a station that refuses to start
on the line. Each problem is a :class:`ConfigIssue` with its key and YAML line.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from kanjian.station.config import ConfigIssue, StationConfig, _line_of


def _named_paths(cfg: StationConfig) -> list[tuple[tuple[Any, ...], Path, str]]:
    """(key path, file, what it must be) for every file or folder ``cfg`` names:
    ``dir``, ``file`` or ``any`` (a bundle folder or a bare .onnx)."""
    out: list[tuple[tuple[Any, ...], Path, str]] = [(("model", "path"), cfg.model.path, "any")]
    cam_kind = getattr(cfg.camera, "kind", None)
    cam_path = getattr(cfg.camera, "path", None)
    if isinstance(cam_path, Path) and cam_kind in ("folder", "video"):
        out.append((("camera", "path"), cam_path, "dir" if cam_kind == "folder" else "file"))
    mqtt = cfg.sync.mqtt
    for k in ("ca_file", "cert_file", "key_file"):
        p = getattr(mqtt, k)
        if p is not None:
            out.append((("sync", "mqtt", k), p, "file"))
    sec = cfg.plc.opcua.security
    for k in ("certificate", "private_key"):
        p = getattr(sec, k)
        if p is not None:
            out.append((("plc", "opcua", "security", k), p, "file"))
    for i, p in enumerate(sec.trusted_clients):
        out.append((("plc", "opcua", "security", "trusted_clients", i), p, "file"))
    for name, p in cfg.plc.recipes.items():
        out.append((("plc", "recipes", name), p, "any"))
    return out


def missing_files(cfg: StationConfig, text: str) -> list[ConfigIssue]:
    """Every file or folder ``cfg`` names that is not there (or not of its kind).

    Args:
        cfg: the validated config (paths already resolved against the file's folder).
        text: the YAML it came from, to give each problem its line.
    """
    node = yaml.compose(text)
    issues = []
    for loc, path, kind in _named_paths(cfg):
        if not path.exists():
            problem = f"{path} does not exist"
        elif kind == "dir" and not path.is_dir():
            problem = f"{path} is not a folder"
        elif kind == "file" and not path.is_file():
            problem = f"{path} is not a file"
        else:
            continue
        issues.append(ConfigIssue(".".join(str(k) for k in loc), _line_of(node, loc), problem))
    return issues
