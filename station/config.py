"""The station's typed configuration: one pydantic tree loaded from YAML.

Unknown keys are refused (``extra="forbid"``) and every error names the key
and the YAML line it sits on. Nothing here reads the environment.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from kanjian.camera.config import FolderSourceConfig, FramePolicy, SourceConfig
from kanjian.inference.types import Verdict
from kanjian.inference.verdict import VerdictRules
from kanjian.station.api_config import ApiConfig  # issue 4: HTTP API section

# the embedded demos (station/demos.py); DEMO_* keep their old import path here
from kanjian.station.demos import DEFAULT_DEMO, get_demo
from kanjian.station.demos import DEMO_DIR as DEMO_DIR
from kanjian.station.demos import DEMO_IMAGES as DEMO_IMAGES
from kanjian.station.demos import DEMO_MODEL as DEMO_MODEL
from kanjian.station.plc.config import PlcConfig  # issue 6: PLC handshake section
from kanjian.station.quality_config import QualityConfig  # issue 15: image quality gate
from kanjian.station.records import verdict_names
from kanjian.station.retention_config import StoreRetentionConfig  # issue 12: retention
from kanjian.station.shadow.config import ShadowConfig  # issue 15: shadow models
from kanjian.station.sync.config import SyncConfig  # issue 7: platform sync section

_STRICT = ConfigDict(extra="forbid", frozen=True)
if TYPE_CHECKING:
    SavedVerdict = str
else:  # a MISSED inspection has no frame to save
    SavedVerdict = verdict_names(Verdict.MISSED)


class StationIdentity(BaseModel):
    """Where this station stands: used in MQTT topics, object keys and the screen."""

    model_config = _STRICT

    id: str = Field("station-1", pattern=r"^[A-Za-z0-9_.-]{1,64}$", description="station id")
    site: str = Field("site-1", pattern=r"^[A-Za-z0-9_.-]{1,64}$", description="factory / site")
    line: str = Field("line-1", pattern=r"^[A-Za-z0-9_.-]{1,64}$", description="production line")


class ModelConfig(BaseModel):
    """Which model judges, on which execution providers."""

    model_config = _STRICT

    path: Path = Field(DEMO_MODEL, description="bundle directory or .onnx file")
    providers: list[str] = Field(
        default_factory=lambda: ["auto"],
        min_length=1,
        description="execution providers in order of preference: tensorrt, cuda, cpu; "
        "'auto' = cuda when an NVIDIA device is present, else cpu (no fallback warning)",
    )
    allow_fallback: bool = Field(
        False,
        description="when the first provider cannot run the model (e.g. cuda without a GPU "
        "or without its libraries), run on the next one instead of refusing to start; the "
        "fallback is then shown in the log, /api/status, the metrics, the screen and a "
        "platform event. A list that starts with 'auto' always falls back",
    )
    intra_op_threads: int | None = Field(
        None, ge=1, le=256, description="ONNX Runtime intra-op threads (default: ORT's choice)"
    )
    conf: float | None = Field(None, ge=0, le=1, description="decode confidence (bundle default)")
    iou: float | None = Field(None, ge=0, le=1, description="NMS IoU (bundle default)")
    max_det: int | None = Field(None, ge=1, le=10000, description="most detections per frame")


class StoreConfig(BaseModel):
    """The local result store: SQLite file and saved images under ``data_dir``."""

    model_config = _STRICT

    data_dir: Path = Field(Path("kanjian-data"), description="folder for the database and images")
    save_images: list[SavedVerdict] = Field(
        default_factory=lambda: [Verdict.FAIL.value, Verdict.REVIEW.value],
        description="verdicts whose frames are saved as JPEG files named by inspection UUID",
    )
    jpeg_quality: int = Field(90, ge=10, le=100, description="JPEG quality of saved images")
    batch_max_rows: int = Field(500, ge=1, le=100_000, description="most rows per transaction")
    batch_max_delay_ms: float = Field(
        0.0,
        ge=0,
        le=10_000,
        description="linger this long to gather a bigger batch (0: commit what is queued at once)",
    )
    queue_size: int = Field(
        100_000, ge=10, le=10_000_000, description="inspections buffered ahead of the writer"
    )
    synchronous: Literal["FULL", "NORMAL", "EXTRA"] = Field(
        "FULL", description="SQLite synchronous mode; NORMAL can lose rows on power loss"
    )
    queue_max_mb: float = Field(
        256.0,
        ge=0,
        le=1_000_000,
        description="memory bound of the frames (with their masks and anomaly maps) queued "
        "for the writer, MB: over it rows are still queued but their images are not saved "
        "(rows first; 0: no bound)",
    )
    min_free_mb: float = Field(
        200.0,
        ge=0,
        le=10_000_000,
        description="a start with less free space in data_dir is refused; after the disk "
        "filled up, images are saved again only above it (0: no floor)",
    )
    writer: Literal["process", "thread"] = Field(
        "process",
        description="who commits the batches: a child process, while the station makes "
        "the next batch's rows (two cores at work); thread: the store's writer thread in "
        "the station's process (a one-core machine)",
    )
    retention: StoreRetentionConfig = Field(
        default_factory=StoreRetentionConfig,
        description="what the background retention deletes: images by size, age and a "
        "free-space floor; rows by age (station/retention.py)",
    )

    @model_validator(mode="after")
    def _floors(self) -> StoreConfig:
        # under the store's own floor images stop being saved; retention must act first
        r = self.retention
        if r.enabled and 0 < r.min_free_mb < self.min_free_mb:
            raise ValueError(
                f"store.retention.min_free_mb ({r.min_free_mb:g}) must be above "
                f"store.min_free_mb ({self.min_free_mb:g}): retention frees space before "
                "the store stops saving images (or set it to 0: no floor)"
            )
        return self


class RuntimeConfig(BaseModel):
    """Thread pools, sized so OpenCV, Numba and ONNX Runtime do not fight over cores."""

    model_config = _STRICT

    numba_threads: int | None = Field(
        None, ge=1, le=256, description="Numba kernel threads (default: 1 on <= 4 cores, else all)"
    )
    opencv_threads: int | None = Field(None, ge=0, le=256, description="OpenCV threads")
    inference_workers: int = Field(
        1,
        ge=1,
        le=64,
        description="threads judging frames at once (free-run); results stay in frame order. "
        "On a small CPU, 2 workers with model.intra_op_threads 1 beat 1 worker with 2 threads",
    )
    queue_timeout_s: float = Field(
        5.0, gt=0, le=3600, description="how long the loop waits for a frame before checking state"
    )

    @model_validator(mode="after")
    def _workers_and_numba(self) -> RuntimeConfig:
        if self.inference_workers > 1 and (self.numba_threads or 1) > 1:
            raise ValueError(
                "numba_threads > 1 needs inference_workers = 1 (Numba's workqueue pool "
                "cannot be entered by several workers at once)"
            )
        return self


class TriggerConfig(BaseModel):
    """Free-running inspection, or one inspection per trigger (PLC, API, GPIO)."""

    model_config = _STRICT

    mode: Literal["free_run", "triggered"] = Field(
        "free_run",
        description="free_run: judge every frame; triggered: judge one frame per trigger",
    )
    frame_timeout_s: float = Field(
        1.0, gt=0, le=60, description="a trigger with no fresh frame within this is MISSED"
    )
    queue_size: int = Field(
        16, ge=1, le=10_000, description="triggers that may wait while one is being judged"
    )
    when_busy: Literal["queue", "refuse"] = Field(
        "queue",
        description="a trigger arriving while busy: queue it (up to queue_size) or refuse it "
        "(a MISSED row says so)",
    )
    camera_triggered: bool = Field(
        False,
        description="the camera is fired by the same hardware pulse as the trigger (its "
        "trigger line): a trigger takes the frame that arrived at most camera_lead_ms before "
        "it, or the next one, instead of the first frame read after it",
    )
    camera_lead_ms: float = Field(
        200.0,
        ge=0,
        le=10_000,
        description="with camera_triggered: how long before the trigger reaches the station "
        "its frame may already have arrived, ms (shorter than the time between parts)",
    )

    @model_validator(mode="after")
    def _camera_triggered_needs_triggers(self) -> TriggerConfig:
        if self.camera_triggered and self.mode != "triggered":
            raise ValueError("camera_triggered needs mode: triggered")
        return self


class StationConfig(BaseModel):
    """Root of ``station.yaml``."""

    model_config = _STRICT

    station: StationIdentity = Field(default_factory=StationIdentity)
    camera: SourceConfig = Field(
        default_factory=lambda: FolderSourceConfig(kind="folder", path=DEMO_IMAGES, loop=True),
        description="the frame source",
    )
    policy: FramePolicy = Field("lossless", description="latest (live) or lossless (replay)")
    trigger: TriggerConfig = Field(default_factory=TriggerConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    rules: VerdictRules | None = Field(
        None,
        description="verdict rules (fail/review confidence per class); null: the model "
        "bundle's default rules from its manifest",
    )
    quality: QualityConfig = Field(
        default_factory=QualityConfig,
        description="the image quality gate before the model (focus, exposure, reference); "
        "off by default",
    )
    store: StoreConfig = Field(default_factory=StoreConfig)
    runtime: RuntimeConfig = Field(default_factory=RuntimeConfig)
    api: ApiConfig = Field(default_factory=ApiConfig)  # issue 4: HTTP API and screen
    sync: SyncConfig = Field(default_factory=SyncConfig)  # issue 7: MQTT/S3 platform sync
    plc: PlcConfig = Field(default_factory=PlcConfig)  # issue 6: PLC handshake (Modbus/OPC UA)
    shadow: ShadowConfig = Field(  # issue 15: shadow models
        default_factory=ShadowConfig,
        description="shadow models: the promotion gate (the shadow itself is loaded at run "
        "time: PUT /api/shadow)",
    )


@dataclass(frozen=True)
class ConfigIssue:
    """One problem in a config file, located."""

    location: str  # dotted key path, e.g. "store.batch_max_rows"
    line: int | None  # 1-based YAML line, when known
    message: str

    def __str__(self) -> str:
        where = f"line {self.line}: " if self.line else ""
        return f"{where}{self.location}: {self.message}"


class ConfigError(Exception):
    """A config file that cannot be used; ``issues`` says where and why."""

    def __init__(self, path: Path | None, issues: list[ConfigIssue]) -> None:
        self.path = path
        self.issues = issues
        head = f"{path}: " if path else ""
        super().__init__(head + "invalid config:\n" + "\n".join(f"  {i}" for i in issues))


def _line_of(node: yaml.Node | None, loc: tuple[Any, ...]) -> int | None:
    """Follow a pydantic error location through the YAML node tree to a line number."""
    line = None if node is None else node.start_mark.line + 1
    for key in loc:
        if isinstance(node, yaml.MappingNode):
            nxt = None
            for k, v in node.value:
                if k.value == str(key):
                    # an unknown key is reported on the key itself
                    line, nxt = k.start_mark.line + 1, v
                    break
            if nxt is None:
                return line
            node = nxt
        elif isinstance(node, yaml.SequenceNode) and isinstance(key, int):
            if key >= len(node.value):
                return line
            node = node.value[key]
            line = node.start_mark.line + 1
        else:
            return line
    return line


def parse_config(text: str, path: Path | None = None) -> StationConfig:
    """Validate YAML text into a :class:`StationConfig`.

    Raises:
        ConfigError: listing every problem with its key path and line.
    """
    try:
        node = yaml.compose(text)
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        raise ConfigError(path, [ConfigIssue("(yaml)", line, str(e).splitlines()[0])]) from e
    if not isinstance(data, dict):
        raise ConfigError(path, [ConfigIssue("(root)", 1, "the file must be a YAML mapping")])
    base = path.resolve().parent if path else Path.cwd()
    try:
        cfg = StationConfig.model_validate(data)
    except ValidationError as e:
        issues = []
        for err in e.errors():
            # drop the discriminator tag pydantic adds for tagged unions ("folder", ...)
            loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and p in _UNION_TAGS))
            msg = (
                "unknown key (not allowed here)" + _did_you_mean(err["loc"])
                if err["type"] == "extra_forbidden"
                else err["msg"]
            )
            issues.append(
                ConfigIssue(".".join(str(p) for p in loc) or "(root)", _line_of(node, loc), msg)
            )
        raise ConfigError(path, issues) from e
    return resolve_paths(cfg, base)


_UNION_TAGS = {"folder", "video", "device", "stream", "gige"}  # gige: issue 6


def resolve_paths(cfg: StationConfig, base: Path) -> StationConfig:
    """Make relative paths in the config relative to the config file's folder.

    Camera source, model, data folder, the broker's TLS and password files, the OPC UA
    certificates, the PLC's recipe bundles and the quality gate's reference image: a
    station.yaml moved with its files keeps working wherever the station is started from.
    """

    def fix(p: Path) -> Path:
        return p if p.is_absolute() else (base / p)

    def fix_opt(p: Path | None) -> Path | None:
        return None if p is None else fix(p)

    camera = cfg.camera
    cam_path = getattr(camera, "path", None)
    if isinstance(cam_path, Path):
        camera = camera.model_copy(update={"path": fix(cam_path)})
    mqtt = cfg.sync.mqtt
    mqtt = mqtt.model_copy(
        update={
            k: fix_opt(getattr(mqtt, k))
            for k in ("ca_file", "cert_file", "key_file", "password_file")
        }
    )
    sec = cfg.plc.opcua.security
    sec = sec.model_copy(
        update={
            "certificate": fix_opt(sec.certificate),
            "private_key": fix_opt(sec.private_key),
            "trusted_clients": [fix(p) for p in sec.trusted_clients],
        }
    )
    opcua = cfg.plc.opcua.model_copy(update={"security": sec})
    recipes = {k: fix(p) for k, p in cfg.plc.recipes.items()}
    return cfg.model_copy(
        update={
            "camera": camera,
            "model": cfg.model.model_copy(update={"path": fix(cfg.model.path)}),
            "store": cfg.store.model_copy(update={"data_dir": fix(cfg.store.data_dir)}),
            "sync": cfg.sync.model_copy(update={"mqtt": mqtt}),
            "plc": cfg.plc.model_copy(update={"opcua": opcua, "recipes": recipes}),
            "quality": cfg.quality.model_copy(update={"reference": fix_opt(cfg.quality.reference)}),
        }
    )


def load_config(path: Path) -> StationConfig:
    """Read and validate a YAML config file (see :func:`parse_config`)."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(path, [ConfigIssue("(file)", None, f"cannot read: {e}")]) from e
    return parse_config(text, path)


def default_config(data_dir: Path | None = None, demo: str = DEFAULT_DEMO) -> StationConfig:
    """An embedded demo station: its images looping, its bundled model, local SQLite.

    Args:
        data_dir: the store's folder (default: the demo's own, e.g. ``kanjian-data``).
        demo: which demo (:data:`kanjian.station.demos.DEMOS`); the default, NEU-DET, is
            also what ``StationConfig()`` holds.

    Raises:
        UnknownDemoError: ``demo`` is not one of them (the message lists them).
    """
    d = get_demo(demo)
    cfg = StationConfig(
        camera=FolderSourceConfig(kind="folder", path=d.images, loop=True),
        model=ModelConfig(path=d.model),
        store=StoreConfig(data_dir=d.data_dir),
    )
    if data_dir is not None:
        cfg = cfg.model_copy(update={"store": cfg.store.model_copy(update={"data_dir": data_dir})})
    return cfg


def _did_you_mean(loc: tuple[Any, ...]) -> str:
    """``"; did you mean 'data_dir'?"`` for a misspelt key at pydantic location ``loc``
    (tagged-union tags included), or ``""`` when no key there is close."""
    import difflib
    import types
    import typing

    def models_of(ann: Any) -> list[type[BaseModel]]:
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            return [ann]
        out: list[type[BaseModel]] = []
        origin = typing.get_origin(ann)
        if origin is typing.Annotated:
            return models_of(typing.get_args(ann)[0])
        if origin in (typing.Union, types.UnionType) or origin is not None:
            for a in typing.get_args(ann):
                out += models_of(a)
        return out

    candidates: list[type[BaseModel]] = [StationConfig]
    for key in loc[:-1]:
        nxt: list[type[BaseModel]] = []
        for m in candidates:
            field = m.model_fields.get(str(key))
            if field is not None:
                nxt += models_of(field.annotation)
        if nxt:  # a union tag or a list index leaves the candidates as they are
            candidates = nxt
    keys = {k for m in candidates for k in m.model_fields}
    close = difflib.get_close_matches(str(loc[-1]), sorted(keys), n=1, cutoff=0.6)
    return f"; did you mean '{close[0]}'?" if close else ""
