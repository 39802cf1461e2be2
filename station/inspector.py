"""One frame in, one :class:`Inspection` out — whatever happens on the way."""

from __future__ import annotations

import logging
import threading
import time

from kanjian.camera.frame import Frame, FrameFailure
from kanjian.inference.model import OnnxModel
from kanjian.inference.quality_gate import quality_text
from kanjian.inference.reason_where import place_reason
from kanjian.inference.types import Inspection, Verdict
from kanjian.inference.verdict import VerdictRules, unknown_classes
from kanjian.kernels.quality import FrameQuality
from kanjian.station.quality import QualityGate
from kanjian.station.ruleset import RulesError, RuleSet

log = logging.getLogger(__name__)

__all__ = ["Inspector", "RuleSet", "RulesError"]


class Inspector:
    """Judges frames with the active model and the rules in force.

    The model (:meth:`swap_model`) and the rules (:meth:`set_ruleset`, one frozen
    :class:`RuleSet`) can be swapped while frames flow: each frame reads both
    references once, so it is judged by exactly one model version and one set of
    rules, and that version is recorded in its inspection. The station's
    :class:`~kanjian.station.state.service.StationState` makes the changes.
    """

    def __init__(
        self,
        model: OnnxModel,
        rules: VerdictRules | None = None,
        conf: float | None = None,
        iou: float | None = None,
        max_det: int | None = None,
        mm_per_px: float | None = None,
        quality: QualityGate | None = None,
    ) -> None:
        """``rules``/``conf``/``iou``/``max_det``: ``None`` takes the active model bundle's.

        ``mm_per_px``: the camera's scale (``camera.mm_per_px``); a defect's reason then
        says its size in mm besides where it is (:mod:`kanjian.inference.where`).
        ``quality``: the image quality gate (default: off).
        """
        missing = unknown_classes(rules, model.info.class_names)
        if missing:
            # a misspelt class would silently fall back to the default rule
            raise RulesError(
                f"rules name classes model {model.info.name} v{model.info.version} does "
                f"not have: {', '.join(missing)}; its classes are: "
                f"{', '.join(model.info.class_names)}"
            )
        self._model = model
        self._lock = threading.Lock()
        self._ruleset = RuleSet(rules, conf, iou, max_det)
        self._quality = quality or QualityGate()
        self.mm_per_px = mm_per_px

    @property
    def ruleset(self) -> RuleSet:
        """The rules and thresholds that judge the next frame (``None`` fields: the bundle's)."""
        return self._ruleset

    def set_ruleset(self, ruleset: RuleSet) -> RuleSet:
        """Make ``ruleset`` judge from the next frame on; returns the one it replaced."""
        with self._lock:
            old, self._ruleset = self._ruleset, ruleset  # one reference: never half a change
        return old

    @property
    def quality(self) -> QualityGate:
        """The image quality gate that measures and judges the next frame."""
        return self._quality

    def set_quality(self, gate: QualityGate) -> QualityGate:
        """Make ``gate`` measure and judge from the next frame on; returns the one it replaced."""
        with self._lock:
            old, self._quality = self._quality, gate
        return old

    @property
    def rules(self) -> VerdictRules | None:
        """The verdict rules set (``None``: the judging model's bundle defaults)."""
        return self._ruleset.rules

    def rules_in_force(self, model: OnnxModel | None = None) -> VerdictRules:
        """The rules that judge the next frame: set ones, else ``model``'s bundle defaults."""
        rules = self._ruleset.rules
        return rules if rules is not None else (model or self._model).default_rules()

    @property
    def model(self) -> OnnxModel:
        return self._model

    def swap_model(self, model: OnnxModel) -> OnnxModel:
        """Make ``model`` judge the next frames; returns the one it replaced."""
        rules = self._ruleset.rules  # None: the new model brings its own default rules
        missing = unknown_classes(rules, model.info.class_names)
        if missing:  # e.g. a model with fewer classes: those rules are inert now
            log.warning("model %s v%s has no class %s named in the verdict rules; "
                        "those rules do nothing while it judges", model.info.name,
                        model.info.version, ", ".join(missing))  # fmt: skip
        with self._lock:
            old, self._model = self._model, model
        return old

    def inspect(self, item: Frame | FrameFailure) -> Inspection:
        """Judge a frame; a failure or any error becomes an ERROR / MISSED inspection, and a
        frame the quality gate rejects an ERROR inspection with its quality reason."""
        model = self._model  # read once: this frame is judged by this model only
        rs = self._ruleset  # and by these rules only
        gate = self._quality  # and measured by this gate only
        names = model.info.class_names
        if isinstance(item, FrameFailure):
            verdict = Verdict.MISSED if item.missed else Verdict.ERROR
            return Inspection(frame=item, verdict=verdict, reason=item.reason, class_names=names)
        t0 = time.perf_counter()
        timings: dict[str, float] = {}
        quality: FrameQuality | None = None
        # this frame's model's defaults when none are set
        rules = rs.rules if rs.rules is not None else model.default_rules()
        try:
            if gate.enabled:
                quality = gate.measure(item.image)
                timings["quality"] = (time.perf_counter() - t0) * 1e3
                failed = gate.judge(quality)
                if failed is not None:  # not judged: the model does not run
                    timings["total"] = (time.perf_counter() - t0) * 1e3
                    return Inspection(
                        frame=item,
                        verdict=Verdict.ERROR,
                        reason=quality_text(*failed),
                        class_names=names,
                        timings_ms=timings,
                        quality=quality,
                    )
            pred = model.predict(item.image, rs.conf, rs.iou, rs.max_det)
            # where on the part, in words (and how big): the frame's size is known here
            result = place_reason(model.judge(pred, rules), item.resolution_wh, self.mm_per_px)
        except Exception as e:  # the loop must survive any model or decoder failure
            log.exception("inspection of frame %s failed", item.frame_id)
            timings["total"] = (time.perf_counter() - t0) * 1e3
            return Inspection(
                frame=item,
                verdict=Verdict.ERROR,
                reason=f"model error: {type(e).__name__}: {e}",
                model=model.ref,
                class_names=names,
                timings_ms=timings,
                quality=quality,
            )
        timings.update(pred.timings_ms)
        timings["total"] = (time.perf_counter() - t0) * 1e3
        return Inspection(
            frame=item,
            verdict=result.verdict,
            reason=result.reason,
            model=model.ref,
            detections=pred.detections,
            class_names=names,
            probs=pred.probs,
            score=pred.score,
            anomaly_map=pred.anomaly_map,
            timings_ms=timings,
            task=model.info.task,
            quality=quality,
        )
