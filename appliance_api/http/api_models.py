"""Pydantic models of every request and response body of the HTTP API."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from kanjian.appliance_api.http.quality_models import QualityOut
from kanjian.appliance_api.http.shadow_models import ShadowOut
from kanjian.inference.verdict import ReasonCode, ReasonParams, VerdictRules
from kanjian.station.records import verdict_names

if TYPE_CHECKING:
    VerdictName = str
else:  # the names of kanjian.inference.types.Verdict, as plain strings
    VerdictName = verdict_names()
FeedbackKind = Literal["confirm_defect", "not_defect", "wrong_class"]
RoleName = Literal["operator", "engineer", "admin"]
#: a picture's labels' language (``?lang=``; the screen asks for its own)
LabelLang = Literal["zh", "en"]

_IN = ConfigDict(extra="forbid")


class ErrorOut(BaseModel):
    """Every error response: what went wrong, for a person."""

    detail: str


# -- status ----------------------------------------------------------------------------


class StationOut(BaseModel):
    id: str
    site: str
    line: str
    language: str = Field(description="api.language: the station's language (zh, en)")


class CameraOut(BaseModel):
    """The frame source's health."""

    source_id: str
    state: str = Field(description="connected, reconnecting, ended or error")
    frames_read: int
    failures: int
    reconnects: int
    dropped: int = Field(description="frames the 'latest' policy replaced unread")
    last_frame_at: str | None
    last_error: str | None


class ModelOut(BaseModel):
    """The model judging now, and where it runs."""

    name: str
    version: str
    sha256: str
    task: str
    class_names: list[str]
    imgsz: tuple[int, int]
    provider: str = Field(description="execution provider actually running the graph")
    providers_requested: list[str]
    providers_active: list[str]
    fell_back: bool = Field(
        description="the first requested provider is not the one running (the station "
        "started, or this model was activated, with model.allow_fallback: true)"
    )
    fallback_cause: str | None = Field(
        None, description="why the first requested provider does not run (null: it does)"
    )
    display_names: dict[str, dict[str, str]] = Field(
        description="what the screen calls the classes, per language: {lang: {class_name: "
        "name}} (the bundle's, with the ones set on the station over them; "
        "GET/PUT /api/models/{sha256}/display-names). A class without one: its class name"
    )


class LatencyOut(BaseModel):
    p50: float = Field(description="median, milliseconds")
    p99: float = Field(description="99th percentile, milliseconds")


class QueuesOut(BaseModel):
    store: int = Field(description="inspections waiting for the database writer")
    triggers: int = Field(description="triggers waiting to be served")
    camera: int = Field(description="frames waiting in the frame pump")


class StoreOut(BaseModel):
    db_bytes: int = Field(description="database file plus its WAL, bytes")
    rows_written: int = Field(description="rows committed since start")
    judged: int = Field(
        description="inspections handed to the store since start (``frames`` counts them too); "
        "judged - committed are not in the database yet"
    )
    committed: int = Field(description="inspection rows committed since start (= rows_written)")
    stalled: bool = Field(
        description="a commit failed and is being retried now (e.g. disk full): judged "
        "inspections pile up in memory until it clears"
    )
    stalled_since: str | None = Field(description="when the current stall began (UTC)")
    last_error: str | None = Field(description="the last write error (kept after a stall)")
    images_not_saved: int = Field(
        description="images dropped since start (disk full, queue over store.queue_max_mb); "
        "their rows were written"
    )
    queued_bytes: int = Field(description="frame pixels waiting for the writer, bytes")
    writer: str = Field(description="who commits: process (a child process) or thread")
    writer_pid: int | None = Field(description="the writer process's PID (null: thread)")
    writer_restarts: int = Field(
        description="writer processes that died and were replaced since start (the batch "
        "a dead writer held is looked up in the database before anything is sent again)"
    )
    batches: int
    errors: int = Field(description="failed (retried) transactions since start")
    blocked_puts: int
    last_commit_ms: float
    outbox_pending: int = Field(description="inspections not yet confirmed by the platform")
    images_bytes: int | None = Field(
        description="saved images (data_dir/images), bytes: the last walk of the folder plus "
        "what the station saved since; null before the first walk"
    )
    images_counted_at: str | None = Field(
        description="when the folder was last walked (UTC; every 5 minutes)"
    )


class SyncOut(BaseModel):
    """The platform sync (``sync:`` config); off when not enabled."""

    enabled: bool
    connected: bool
    backlog: int = Field(description="inspections the platform has not confirmed yet")
    oldest_backlog_age_s: float | None
    last_confirm_at: str | None
    last_error: str | None


class DiskOut(BaseModel):
    path: str
    free_bytes: int
    total_bytes: int


class StatusOut(BaseModel):
    """``GET /api/status``: everything the screen's badges and a dashboard need."""

    station: StationOut
    mode: Literal["free_run", "triggered"]
    loop_running: bool
    uptime_s: float
    frames: int = Field(
        description="inspections judged since start (committed or not: see store.committed)"
    )
    fps: float = Field(description="inspections per second since start")
    fps_recent: float = Field(
        description="inspections committed per second over the last 10 s (0 when stalled)"
    )
    verdicts: dict[str, int]
    camera: CameraOut
    model: ModelOut
    latency_ms: dict[str, LatencyOut] = Field(description="per stage, over the last 1000 frames")
    queues: QueuesOut
    store: StoreOut
    sync: SyncOut
    disk: DiskOut
    shadow: ShadowOut | None = Field(
        description="the shadow model judging beside the active one (null: none; "
        "GET /api/shadow has its promotion gate too)"
    )


class ShiftOut(BaseModel):
    """Counts of the current shift (local start times from ``api.shift_starts``)."""

    start: str
    end: str
    counts: dict[str, int]
    total: int
    yield_pct: float | None = Field(
        description="PASS share of judged parts (PASS+FAIL+REVIEW), percent; null before any"
    )


class WhoAmIOut(BaseModel):
    authenticated: bool
    name: str | None
    role: RoleName | None
    open_reads: bool


class LoginIn(BaseModel):
    model_config = _IN
    token: str = Field(min_length=1, max_length=200)


# -- inspections -------------------------------------------------------------------------


class ModelRefOut(BaseModel):
    name: str | None
    version: str | None
    sha256: str | None


class FeedbackIn(BaseModel):
    """What the operator says about an inspection."""

    model_config = _IN
    kind: FeedbackKind = Field(
        description="confirm_defect: the verdict is right; not_defect: a good part was "
        "flagged; wrong_class: a defect, but of class_name"
    )
    class_name: str | None = Field(None, min_length=1, max_length=64)
    note: str | None = Field(None, max_length=500)

    @model_validator(mode="after")
    def _class_for_wrong_class(self) -> FeedbackIn:
        if self.kind == "wrong_class" and not self.class_name:
            raise ValueError("wrong_class feedback needs class_name (the right class)")
        return self


class FeedbackOut(BaseModel):
    id: int
    inspection_id: str
    kind: FeedbackKind
    class_name: str | None
    note: str | None
    actor: str
    created_at: str


# -- the screen: one part at a time; an answer changed or undone is audited (issue 13) --


class FeedbackSavedOut(FeedbackOut):
    """What ``POST /api/inspections/{id}/feedback`` recorded."""

    replaces: FeedbackOut | None = Field(
        description="the inspection's answer before this one, which this one changes "
        "(audited as feedback.change, old and new); null for a first answer"
    )
    undo_until: str | None = Field(
        description="UTC time until which this token may undo it "
        "(DELETE /api/inspections/{id}/feedback/{fid}; api.feedback_undo_s); null when "
        "this token cannot undo it (too late, or no token)"
    )
    undo_s_left: float | None = Field(
        description="seconds left to undo it, by the station's clock when it answered "
        "(a screen counts down from this, not from its own clock); null with undo_until"
    )


class FeedbackUndoneOut(BaseModel):
    """What ``DELETE /api/inspections/{id}/feedback/{fid}`` took back (audited as
    feedback.undo with the whole answer)."""

    undone: FeedbackOut
    latest: FeedbackOut | None = Field(
        description="the inspection's answer that stands now (the one the undone answer "
        "had changed), or null"
    )


class ScreenOut(BaseModel):
    """The operator screen's settings (``api.screen_*`` and ``api.feedback_undo_s``)."""

    hold_s: float = Field(description="each FAIL / REVIEW stays large at least this long")
    min_show_s: float = Field(description="any other part stays large at least this long")
    strip: int = Field(description="defects in the strip of thumbnails")
    sound: bool = Field(description="beep on FAIL, unless the screen chose otherwise")
    flash: bool = Field(description="flash on FAIL, unless the screen chose otherwise")
    undo_s: float = Field(description="how long an answer can be undone")


class DetectionOut(BaseModel):
    idx: int
    class_id: int
    class_name: str
    confidence: float
    xyxy: tuple[float, float, float, float] = Field(description="source-frame pixels")
    mask_area: int | None


class InspectionOut(BaseModel):
    """One inspection row, with the latest operator feedback."""

    id: str
    seq: int
    station_id: str
    source_id: str | None
    frame_id: int | None
    trigger_id: str | None
    uri: str | None
    captured_at: str
    judged_at: str
    verdict: VerdictName
    reason: str | None
    model: ModelRefOut
    num_detections: int | None
    top_class: str | None
    top_confidence: float | None
    width: int | None
    height: int | None
    has_image: bool
    timings_ms: dict[str, float]
    feedback: FeedbackOut | None
    # issue 13: the screen and the history page say the reason in their own language
    reason_code: ReasonCode | None = Field(
        None, description="the reason's stable code, as in /api/events; null: show `reason`"
    )
    reason_params: ReasonParams = Field(
        default_factory=dict, description="the reason's facts (class, confidence, box, ...)"
    )
    score: float | None = Field(
        None,
        description="anomaly models: the image's anomaly score in [0, 1], normalised so "
        "that 0.5 is the model's fail point and 0.25 its review point (the stored value); "
        "null for detect, segment and classify models and for inspections not judged",
    )
    quality: QualityOut | None = Field(
        None, description="the image quality gate's numbers (null: the gate was off)"
    )


class InspectionDetailOut(InspectionOut):
    detections: list[DetectionOut]
    probs: list[float] | None
    feedback_history: list[FeedbackOut]


class InspectionPage(BaseModel):
    """Newest first; pass ``next_before`` as ``before`` for the next page."""

    items: list[InspectionOut]
    next_before: int | None


class LiveInspection(BaseModel):
    """A just-committed inspection, as pushed to the screen."""

    id: str
    frame_id: int
    source_id: str
    trigger_id: str | None
    captured_at: str
    verdict: VerdictName
    reason: str
    model: ModelRefOut
    detections: list[DetectionOut]
    timings_ms: dict[str, float]
    image_saved: bool
    score: float | None = Field(
        None,
        description="anomaly models: the normalised image score in [0, 1] (0.5: the fail "
        "point), 6 decimals; null for other tasks",
    )
    quality: QualityOut | None = Field(
        None, description="the image quality gate's numbers (null: the gate is off)"
    )


class TriggerIn(BaseModel):
    model_config = _IN
    trigger_id: str | None = Field(None, min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")


# -- models and thresholds ----------------------------------------------------------------


class ModelEntryOut(BaseModel):
    sha256: str
    name: str
    version: str
    task: str
    origin: str = Field(description="config (station.yaml), upload (this API) or platform (sync)")
    size_bytes: int | None
    golden_images: int | None = Field(description="golden images it passed when accepted")
    added_at: str
    added_by: str | None
    active: bool
    previous: bool = Field(description="what a rollback would activate")


class ModelListOut(BaseModel):
    active_sha256: str
    models: list[ModelEntryOut]


class UploadOut(BaseModel):
    created: bool = Field(description="false: this exact model was already registered")
    model: ModelEntryOut


class ThresholdsBody(BaseModel):
    """Decoding thresholds and verdict rules of the running inspector."""

    model_config = _IN
    conf: float | None = Field(None, ge=0, le=1, description="null: the bundle's default")
    iou: float | None = Field(None, ge=0, le=1, description="null: the bundle's default")
    max_det: int | None = Field(None, ge=1, le=10000, description="null: the bundle's default")
    rules: VerdictRules | None = Field(None, description="null: the bundle's default rules")


class ThresholdsPut(ThresholdsBody):
    """A change of thresholds and rules, optionally made against the ones loaded."""

    expected_set_at: str | None = Field(
        None,
        description="the set_at of the thresholds this change was made against (null: "
        "station.yaml's, no override). When sent, the change is refused with 409 if the "
        "ones in force were changed since; when left out, it is applied whatever changed",
    )


class BundleDefaults(BaseModel):
    """What ``null`` means: the running model bundle's own thresholds and rules."""

    model_config = ConfigDict(extra="forbid")
    conf: float
    iou: float
    max_det: int
    rules: VerdictRules


class ThresholdsOut(ThresholdsBody):
    """The thresholds in force and where they come from."""

    model_config = ConfigDict(extra="forbid")
    bundle_defaults: BundleDefaults = Field(
        description="the running model's manifest values, used wherever a field above is null"
    )
    source: Literal["station.yaml", "api"] = Field(
        description="api: set through PUT /api/thresholds, kept across restarts until "
        "DELETE /api/thresholds returns to station.yaml"
    )
    set_at: str | None = Field(None, description="when the API override was set (UTC)")
    set_by: str | None = Field(None, description="who set it (token name)")


# -- tokens and audit --------------------------------------------------------------------


class TokenCreateIn(BaseModel):
    model_config = _IN
    name: str = Field(min_length=1, max_length=64, pattern=r"^[\w.@ -]+$")
    role: RoleName


class TokenOut(BaseModel):
    id: str
    name: str
    role: RoleName
    created_at: str
    created_by: str | None
    revoked_at: str | None


class TokenCreatedOut(TokenOut):
    token: str = Field(description="the bearer token; shown this once, only its hash is kept")


class AuditOut(BaseModel):
    id: int
    at: str
    actor: str
    token_id: str | None
    role: str | None
    action: str
    target: str | None
    detail: dict[str, object]
    remote_addr: str | None


class AuditPage(BaseModel):
    items: list[AuditOut]
    next_before: int | None
