"""Model bundles: an ONNX file, its manifest, and a golden set to check it with.

A bundle is a directory::

    <bundle>/
      model.onnx          the exported model (Ultralytics metadata inside)
      manifest.json       :class:`BundleManifest`
      golden/             optional: a few images and ``expected.json``
                          (:class:`GoldenSet`), the detections the bundle must
                          reproduce before a station activates it
      weights.pt          optional: the training run's weights (Ultralytics
                          checkpoint), so ``kanjian train --model <bundle>`` can
                          continue from them; recorded in the manifest's
                          ``training.weights``; the station never reads it

A bare ``.onnx`` file is accepted too; its manifest is then derived from the
metadata Ultralytics writes into the file (task, names, imgsz, stride).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from kanjian.inference.calibration import AnomalyCalibration
from kanjian.inference.display_names import DisplayNames, NamesError, check_display_names
from kanjian.inference.heads import find_head, unknown_task_message
from kanjian.inference.verdict import VerdictRules, unknown_classes

MANIFEST_NAME = "manifest.json"
MODEL_NAME = "model.onnx"
GOLDEN_DIR = "golden"
GOLDEN_EXPECTED = "expected.json"
WEIGHTS_NAME = "weights.pt"


class BundleError(Exception):
    """A bundle that cannot be used: missing file, bad hash, unreadable model."""


class Thresholds(BaseModel):
    """Default decoding thresholds a bundle ships with."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    conf: float = Field(0.25, ge=0.0, le=1.0, description="minimum confidence kept by decoding")
    iou: float = Field(0.7, ge=0.0, le=1.0, description="IoU above which NMS suppresses a box")
    max_det: int = Field(300, ge=1, le=10000, description="most detections kept per image")


class WeightsRef(BaseModel):
    """The training weights a bundle carries (``training.weights`` of its manifest)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    file: str = Field(
        WEIGHTS_NAME, pattern=r"^[^/\\]+\.pt$", description="file name in the bundle folder"
    )
    sha256: str = Field(..., pattern=r"^[0-9a-f]{64}$", description="sha256 of the file")
    bytes: int = Field(..., ge=0, description="its size in bytes")


class TrainingInfo(BaseModel):
    """How the model was made, so a result can be traced back to its data.

    Extra keys are kept (a newer trainer may record more): a reader that does not know
    ``weights`` still reads a bundle that carries them, so they need no newer
    ``schema_version`` (the station never uses them).
    """

    model_config = ConfigDict(extra="allow", frozen=True)

    command: str = Field("", description="the command line that trained it")
    data_summary: dict[str, object] = Field(default_factory=dict, description="dataset counts")
    data_sha256: str = Field("", description="content hash of the training data")
    hardware: str = Field("", description="where it was trained")
    duration_s: float | None = Field(None, ge=0, description="training wall time")
    weights: WeightsRef | None = Field(
        None,
        description="the run's weights in the bundle (weights.pt), to continue training "
        "from (kanjian train --model BUNDLE); null: the bundle has none",
    )


#: the newest manifest format this code reads
SCHEMA_VERSION = 3


class BundleManifest(BaseModel):
    """``manifest.json`` of a model bundle."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    schema_version: int = Field(
        1,
        ge=1,
        le=SCHEMA_VERSION,
        description="manifest format version: 3 when it has `display_names`, 2 when it has "
        "`rules` (a station that reads only an older format refuses it with this field "
        "named), else 1",
    )
    name: str = Field(..., min_length=1, max_length=128, description="model name")
    version: str = Field(..., min_length=1, max_length=64, description="model version")
    task: str = Field(
        ...,
        description="the model's task, one with a registered head (kanjian.inference.heads): "
        "detect, segment, classify, or one a plugin registers",
    )
    class_names: list[str] = Field(..., min_length=1, description="index = class id")
    imgsz: tuple[int, int] = Field(..., description="model input (height, width) in pixels")
    stride: int = Field(32, ge=1, description="model stride in pixels")
    thresholds: Thresholds = Field(default_factory=Thresholds)
    rules: VerdictRules | None = Field(
        None,
        description="default verdict rules (fail/review confidences per class) the model was "
        "tuned for; station.yaml's `rules:` or an API override replace them. "
        "null: kanjian's defaults (fail 0.5, review 0.25)",
    )
    onnx_sha256: str = Field(..., pattern=r"^[0-9a-f]{64}$", description="sha256 of model.onnx")
    calibration: AnomalyCalibration | None = Field(
        None,
        description="anomaly models: image, review and pixel thresholds in the model's raw "
        "score units and the normalisation of its score (docs/anomaly.md); null: the raw "
        "outputs are taken as normalised scores in [0, 1]",
    )
    metrics: dict[str, float] = Field(default_factory=dict, description="e.g. mAP50, mAP50-95")
    training: TrainingInfo = Field(default_factory=TrainingInfo)
    created_at: str = Field("", description="ISO 8601 time the bundle was written")
    display_names: DisplayNames = Field(
        default_factory=dict,
        description="names people read instead of class names, per language: "
        "{lang: {class_name: name}}, e.g. {'zh': {'scratches': '划痕'}} (kanjian train "
        "--names-zh / --names FILE); a station may override them",
    )

    @model_validator(mode="before")
    @classmethod
    def _rules_need_version_2(cls, data: Any) -> Any:
        # a manifest with rules is format 2, whoever built it: a reader of format 1 only
        # must refuse it by its version, not misjudge parts with its own default rules;
        # one with display names is format 3 (older readers forbid the unknown key anyway:
        # the version makes them say "upgrade" instead). Without either it stays readable
        # by the older readers.
        if not isinstance(data, dict):
            return data
        need = 3 if data.get("display_names") else 2 if data.get("rules") is not None else 1
        if need > 1:
            return {**data, "schema_version": max(need, int(data.get("schema_version") or 1))}
        return data

    @field_validator("display_names")
    @classmethod
    def _names_are_clean(cls, names: DisplayNames) -> DisplayNames:
        try:
            return check_display_names(names)
        except NamesError as e:
            raise ValueError(str(e)) from e

    @field_validator("task")
    @classmethod
    def _task_has_a_head(cls, task: str) -> str:
        if find_head(task) is None:  # the station could neither decode nor judge it
            raise ValueError(unknown_task_message(task))
        return task

    @model_validator(mode="after")
    def _rules_name_known_classes(self) -> BundleManifest:
        missing = unknown_classes(self.rules, self.class_names)
        if missing:  # a misspelt class would silently fall back to the default rule
            raise ValueError(
                f"rules name classes the model does not have: {', '.join(missing)}; "
                f"its classes are: {', '.join(self.class_names)}"
            )
        try:  # a misspelt class would keep its id on the screen
            check_display_names(self.display_names, self.class_names)
        except NamesError as e:
            raise ValueError(f"display_names: {e}") from e
        return self

    def dump_json(self) -> str:
        """The manifest as ``manifest.json`` holds it: without ``display_names`` when
        there are none and without ``calibration`` when it is null, so such a bundle
        stays readable by older stations (their manifest model forbids unknown keys);
        without ``training.weights`` when null (a bundle without weights.pt keeps the
        bytes it had before bundles could carry them)."""
        exclude: dict[str, Any] = {}
        if not self.display_names:
            exclude["display_names"] = True
        if self.calibration is None:
            exclude["calibration"] = True
        if self.training.weights is None:
            exclude["training"] = {"weights": True}
        return self.model_dump_json(indent=2, exclude=exclude or None)


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes."""
    h = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def read_manifest(bundle_dir: Path) -> BundleManifest:
    """Read and validate ``manifest.json`` of a bundle directory.

    Raises:
        BundleError: naming the file, when it is missing or invalid.
    """
    path = bundle_dir / MANIFEST_NAME
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as e:
        raise BundleError(f"{path}: manifest missing") from e
    except (OSError, json.JSONDecodeError) as e:
        raise BundleError(f"{path}: unreadable manifest: {e}") from e
    version = raw.get("schema_version", 1) if isinstance(raw, dict) else 1
    if isinstance(version, int) and version > SCHEMA_VERSION:
        raise BundleError(
            f"{path}: manifest format {version} is newer than this kanjian reads "
            f"({SCHEMA_VERSION}); upgrade kanjian on this machine to use the bundle"
        )
    try:
        return BundleManifest.model_validate(raw)
    except ValueError as e:
        raise BundleError(f"{path}: invalid manifest: {e}") from e


def write_manifest(bundle_dir: Path, manifest: BundleManifest) -> Path:
    """Write ``manifest.json`` (pretty, stable key order) and return its path."""
    path = bundle_dir / MANIFEST_NAME
    path.write_text(manifest.dump_json() + "\n", encoding="utf-8")
    return path
