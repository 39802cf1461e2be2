"""Verdict rules: from detections (or class probabilities) to PASS / FAIL / REVIEW."""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cached_property
from typing import Literal, get_args

import numpy as np
from numpy.typing import NDArray
from pydantic import BaseModel, ConfigDict, Field, model_validator

from kanjian.inference.quality_gate import (
    QUALITY_CODES,
    quality_from_text,
    quality_text,
)
from kanjian.inference.types import Detections, Verdict
from kanjian.inference.where import where_on_frame
from kanjian.inference.zones import ZoneOverlap, Zones, ZoneSet


class ClassRule(BaseModel):
    """How detections of one class count.

    A detection at or above ``fail_confidence`` fails the part; one between
    ``review_confidence`` and ``fail_confidence`` sends it to a person.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    fail_confidence: float = Field(0.5, ge=0, le=1, description="confidence that fails a part")
    review_confidence: float = Field(
        0.25, ge=0, le=1, description="confidence that asks for review (<= fail_confidence)"
    )
    min_area_px: float = Field(
        0.0, ge=0, description="boxes smaller than this (square source pixels) are ignored"
    )
    ignore: bool = Field(False, description="never let this class change the verdict")

    @model_validator(mode="after")
    def _order(self) -> ClassRule:
        if self.review_confidence > self.fail_confidence:
            raise ValueError("review_confidence must be <= fail_confidence")
        return self


class VerdictRules(BaseModel):
    """Rules that turn a model's output into a verdict."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    default: ClassRule = Field(default_factory=ClassRule, description="rule for unlisted classes")
    classes: dict[str, ClassRule] = Field(
        default_factory=dict, description="per-class rules, by class name"
    )
    roi_xyxy: tuple[float, float, float, float] | None = Field(
        None,
        description="region of interest in source pixels; boxes centred outside are ignored "
        "(the older, rectangular form of a roi zone; both may be set)",
    )
    zones: Zones = Field(
        (),
        description="polygons in source pixels (see kanjian.inference.zones): detections count "
        "only by their share inside the roi zones and outside the ignore zones",
    )
    zone_overlap: ZoneOverlap = Field(
        default_factory=ZoneOverlap, description="the shares that decide (zones only)"
    )
    pass_classes: list[str] = Field(
        default_factory=list,
        description="classify models: class names that mean a good part (e.g. 'ok')",
    )

    def rule_for(self, name: str) -> ClassRule:
        return self.classes.get(name, self.default)

    @cached_property
    def zone_set(self) -> ZoneSet:
        """The zones compiled for judging, made once per rules object."""
        return ZoneSet(self.zones, self.zone_overlap)


def unknown_classes(
    rules: VerdictRules | None, class_names: tuple[str, ...] | list[str]
) -> list[str]:
    """Class names in ``rules`` (``classes``, ``pass_classes``) that the model lacks.

    ``None`` (no rules set: a bundle's own) names none.
    """
    if rules is None:
        return []
    known = set(class_names)
    return sorted({*rules.classes, *rules.pass_classes} - known)


#: What a verdict's reason says, for machines: a stable code the screen translates, with
#: the facts of the English sentence as parameters (see :func:`reason_text`). The first
#: eight come from :func:`judge_detections` / :func:`judge_probs`, the three ``anomaly_``
#: ones from :func:`judge_anomaly`; then the reasons of ERROR / MISSED inspections, made
#: by the inspector and the camera, and the five ``quality_`` ones of the image quality
#: gate (ERROR: :mod:`kanjian.inference.quality_gate`).
ReasonCode = Literal[
    "no_defect",  # detect: nothing counted reaches a review confidence
    "defect_fail",  # detect: {class, confidence, box, more}
    "defect_review",  # detect: {class, confidence, box}
    "class_pass",  # classify: top class is a pass class {class, confidence}
    "class_ignored",  # classify: top class is ignored {class, confidence}
    "class_fail",  # classify: {class, confidence}
    "class_review",  # classify: {class, confidence}
    "no_confident_class",  # classify: top below review confidence {class, confidence}
    "anomaly_pass",  # anomaly: image score below review {score}
    "anomaly_review",  # anomaly: score in the review band {score} (+ box of its top region)
    "anomaly_fail",  # anomaly: score at or above fail {score} (+ box of its top region)
    "model_error",  # ERROR from the model: {detail}
    "frame_error",  # ERROR from the camera / decoder: {detail}
    "frame_missed",  # MISSED: a trigger got no frame in time {detail}
    "quality_dark",  # ERROR from the quality gate: mean luma below min_mean {value, limit}
    "quality_bright",  # ERROR, gate: mean luma above max_mean {value, limit}
    "quality_clipped",  # ERROR, gate: clipped pixels above max_clipped {value, limit} (%)
    "quality_reference",  # ERROR, gate: unlike the reference frame {value, limit}
    "quality_blurred",  # ERROR, gate: focus below min_focus {value, limit}
]
REASON_CODES: tuple[ReasonCode, ...] = get_args(ReasonCode)
#: JSON-safe reason parameters: ``class`` (str), ``confidence`` (float rounded to the two
#: decimals the sentence shows), ``box`` (4 ints, source pixels ``x1, y1, x2, y2``),
#: ``more`` (int, other counted detections), ``detail`` (str, English, from the error);
#: detect reasons of a station also ``where`` (str, the 3x3 cell of the frame the box's
#: centre is in: top_left ... bottom_right) and, with a camera scale, ``size_mm``
#: ([w, h] floats, one decimal): see :mod:`kanjian.inference.where`; anomaly reasons
#: ``score`` (float, two decimals: the normalised image score) and, for a failed or
#: reviewed part with a defect region, its strongest region's ``box`` (and where, size);
#: quality reasons ``value`` and ``limit`` (floats, one decimal: the frame's number and
#: the threshold it broke)
ReasonParams = dict[str, str | float | int | list[int] | list[float]]


@dataclass(frozen=True)
class VerdictResult:
    """A verdict, the reason a person can read, and the same reason for machines.

    ``reason`` is always ``reason_text(code, params)``; it is what the store keeps.
    """

    verdict: Verdict
    reason: str
    code: ReasonCode
    params: ReasonParams


def reason_text(code: ReasonCode, params: ReasonParams) -> str:
    """The English sentence for a reason code (the text stored with the inspection)."""
    if code == "no_defect":
        return "no defect above threshold"
    if code in ("model_error", "frame_error", "frame_missed"):
        detail = str(params["detail"])
        return f"model error: {detail}" if code == "model_error" else detail
    if code in ("anomaly_pass", "anomaly_review", "anomaly_fail"):
        return _anomaly_text(code, params)
    if code in QUALITY_CODES:
        value, limit = params["value"], params["limit"]
        if not isinstance(value, float | int) or not isinstance(limit, float | int):
            raise TypeError(f"reason {code}: value and limit must be numbers, got {params!r}")
        return quality_text(code, {"value": float(value), "limit": float(limit)})
    conf = params["confidence"]
    if not isinstance(conf, float | int):
        raise TypeError(f"reason {code}: confidence must be a number, got {conf!r}")
    what = f"{params['class']} {conf:.2f}"
    if code in ("defect_fail", "defect_review"):
        box = params["box"]
        if not isinstance(box, list) or len(box) != 4:
            raise TypeError(f"reason {code}: box must be 4 ints x1, y1, x2, y2, got {box!r}")
        what += f" at [{','.join(str(v) for v in box)}]" + _place_text(params)
        if code == "defect_review":
            return f"uncertain: {what}"
        more = params.get("more", 0)
        return what + (f" (+{more} more)" if isinstance(more, int) and more > 0 else "")
    if code == "class_ignored":
        return f"{what} (ignored class)"
    if code == "class_review":
        return f"uncertain: {what}"
    if code == "no_confident_class":
        return f"no class is confident (top {what})"
    return what  # class_pass, class_fail


def _anomaly_text(code: ReasonCode, params: ReasonParams) -> str:
    """``"[uncertain: ]anomaly score 0.73[ at [x1,y1,x2,y2], where, size]"``."""
    score = params["score"]
    if not isinstance(score, float | int):
        raise TypeError(f"reason {code}: score must be a number, got {score!r}")
    text = f"anomaly score {score:.2f}"
    box = params.get("box")
    if code != "anomaly_pass" and isinstance(box, list) and len(box) == 4:
        text += f" at [{','.join(str(v) for v in box)}]" + _place_text(params)
    return "uncertain: " + text if code == "anomaly_review" else text


def _place_text(params: ReasonParams) -> str:
    """``", top left, 12.3x4.5 mm"``: where and how big, when the params say (or ``""``)."""
    out = ""
    where = params.get("where")
    if isinstance(where, str):
        out += f", {where.replace('_', ' ')}"
    size = params.get("size_mm")
    if isinstance(size, list) and len(size) == 2:
        out += f", {float(size[0]):.1f}x{float(size[1]):.1f} mm"
    return out


def _result(verdict: Verdict, code: ReasonCode, params: ReasonParams) -> VerdictResult:
    return VerdictResult(verdict, reason_text(code, params), code, params)


# the sentences of reason_text, read back; a class name may hold any character
_WHAT = r"(?P<cls>.+) (?P<conf>\d+\.\d\d)"
_BOX = (
    r" at \[(?P<box>-?\d+,-?\d+,-?\d+,-?\d+)\]"  # then, since issue 13, where and size:
    r"(?:, (?P<where>(?:top|bottom)(?: left| right)?|left|right|centre))?"
    r"(?:, (?P<w>\d+\.\d)x(?P<h>\d+\.\d) mm)?"
)
_DEFECT_FAIL = re.compile(_WHAT + _BOX + r"(?: \(\+(?P<more>\d+) more\))?", re.S)
_DEFECT_REVIEW = re.compile("uncertain: " + _WHAT + _BOX, re.S)
_CLASS = re.compile(_WHAT, re.S)
_CLASS_IGNORED = re.compile(_WHAT + r" \(ignored class\)", re.S)
_CLASS_REVIEW = re.compile("uncertain: " + _WHAT, re.S)
_NO_CONFIDENT = re.compile(r"no class is confident \(top " + _WHAT + r"\)", re.S)
_ANOMALY = re.compile(r"anomaly score (?P<score>\d+\.\d\d)(?:" + _BOX + ")?", re.S)
_ANOMALY_REVIEW = re.compile("uncertain: " + _ANOMALY.pattern, re.S)


def explain_reason(
    verdict: Verdict | str, reason: str, frame_wh: tuple[int, int] | None = None
) -> tuple[ReasonCode | None, ReasonParams]:
    """Code and parameters of a stored English reason: the inverse of :func:`reason_text`.

    Inspections carry only the English sentence (it is what SQLite, MQTT and the PLC
    get), so the screen recovers the code from it here, next to where the sentence is
    made. A sentence this module does not make gives ``(None, {})``: show it as it is.

    Args:
        frame_wh: the frame's width and height, pixels: a detect reason stored before
            reasons said where (``"... at [x1,y1,x2,y2]"``) gets its ``where`` from the
            box. Its size in mm is not made up: the scale then is not known.
    """
    v = Verdict(verdict)
    if v is Verdict.MISSED:
        return "frame_missed", {"detail": reason}
    if v is Verdict.ERROR:
        gate = quality_from_text(reason)
        if gate is not None:
            return gate[0], {**gate[1]}
        if reason.startswith("model error: "):
            return "model_error", {"detail": reason.removeprefix("model error: ")}
        return "frame_error", {"detail": reason}
    if v is Verdict.PASS and reason == "no defect above threshold":
        return "no_defect", {}
    # anomaly sentences first: "anomaly score 0.73" would read as a class named
    # "anomaly score" too
    tries: dict[Verdict, tuple[tuple[re.Pattern[str], ReasonCode], ...]] = {
        Verdict.PASS: (
            (_ANOMALY, "anomaly_pass"),
            (_CLASS_IGNORED, "class_ignored"),
            (_CLASS, "class_pass"),
        ),
        Verdict.FAIL: (
            (_ANOMALY, "anomaly_fail"),
            (_DEFECT_FAIL, "defect_fail"),
            (_CLASS, "class_fail"),
        ),
        Verdict.REVIEW: (
            (_ANOMALY_REVIEW, "anomaly_review"),
            (_DEFECT_REVIEW, "defect_review"),
            (_NO_CONFIDENT, "no_confident_class"),
            (_CLASS_REVIEW, "class_review"),
        ),
    }
    for pattern, code in tries[v]:
        m = pattern.fullmatch(reason)
        if m is None:
            continue
        params: ReasonParams
        if code.startswith("anomaly_"):
            params = {"score": float(m["score"])}
            if code == "anomaly_pass" and m["box"]:
                continue  # a passed part's sentence names no region
        else:
            params = {"class": m["cls"], "confidence": float(m["conf"])}
        if "box" in m.re.groupindex and m["box"]:
            box = [int(x) for x in m["box"].split(",")]
            params["box"] = box
            if m["where"]:
                params["where"] = m["where"].replace(" ", "_")
            elif frame_wh is not None and min(frame_wh) > 0:
                params["where"] = where_on_frame(box, frame_wh)
            if m["w"]:
                params["size_mm"] = [float(m["w"]), float(m["h"])]
        if code == "defect_fail":
            params["more"] = int(m["more"] or 0)
        return code, params
    return None, {}


def _counted(dets: Detections, names: tuple[str, ...], rules: VerdictRules) -> NDArray[np.bool_]:
    """``(n,)`` bool: detections the rules let count (class not ignored, area, ROI, zones)."""
    keep = np.ones(len(dets), bool)
    area = dets.area
    for i, cid in enumerate(dets.class_id):
        rule = rules.rule_for(names[cid] if 0 <= cid < len(names) else str(cid))
        keep[i] = not rule.ignore and area[i] >= rule.min_area_px
    if rules.roi_xyxy is not None and len(dets):
        x1, y1, x2, y2 = rules.roi_xyxy
        cx = (dets.xyxy[:, 0] + dets.xyxy[:, 2]) / 2
        cy = (dets.xyxy[:, 1] + dets.xyxy[:, 3]) / 2
        keep &= (cx >= x1) & (cx <= x2) & (cy >= y1) & (cy <= y2)
    if rules.zones:
        keep &= rules.zone_set.counts(dets)
    return keep


def judge_detections(
    dets: Detections, names: tuple[str, ...], rules: VerdictRules
) -> VerdictResult:
    """FAIL if a counted detection reaches its class's fail confidence, REVIEW if one
    reaches its review confidence, else PASS. The reason names the strongest one."""
    counted = _counted(dets, names, rules)
    worst: tuple[int, float, int] | None = None  # (level, confidence, index)
    for i in np.flatnonzero(counted):
        cid = int(dets.class_id[i])
        name = names[cid] if 0 <= cid < len(names) else str(cid)
        rule = rules.rule_for(name)
        c = float(dets.confidence[i])
        level = 2 if c >= rule.fail_confidence else 1 if c >= rule.review_confidence else 0
        if level and (worst is None or (level, c) > worst[:2]):
            worst = (level, c, int(i))
    if worst is None:
        return _result(Verdict.PASS, "no_defect", {})
    level, c, best = worst
    cid = int(dets.class_id[best])
    params: ReasonParams = {
        "class": names[cid] if 0 <= cid < len(names) else str(cid),
        "confidence": round(c, 2),  # what the sentence shows
        "box": [int(v) for v in dets.xyxy[best]],
    }
    if level == 2:
        params["more"] = int(counted.sum()) - 1
        return _result(Verdict.FAIL, "defect_fail", params)
    return _result(Verdict.REVIEW, "defect_review", params)


def judge_probs(
    probs: NDArray[np.float32], names: tuple[str, ...], rules: VerdictRules
) -> VerdictResult:
    """Classify models: the top class decides; a good class passes, a defect class
    fails at its fail confidence and goes to review between the two thresholds."""
    top: int = int(np.argmax(probs))
    name = names[top] if top < len(names) else str(top)
    p = float(probs[top])
    params: ReasonParams = {"class": name, "confidence": round(p, 2)}
    if name in rules.pass_classes:
        return _result(Verdict.PASS, "class_pass", params)
    rule = rules.rule_for(name)
    if rule.ignore:
        return _result(Verdict.PASS, "class_ignored", params)
    if p >= rule.fail_confidence:
        return _result(Verdict.FAIL, "class_fail", params)
    if p >= rule.review_confidence:
        return _result(Verdict.REVIEW, "class_review", params)
    return _result(Verdict.REVIEW, "no_confident_class", params)


def judge_anomaly(
    score: float | None, regions: Detections, names: tuple[str, ...], rules: VerdictRules
) -> VerdictResult:
    """Anomaly models: the normalised image score against the anomaly class's rule
    (its fail and review confidences; by default 0.5 and 0.25, which a calibrated model's
    normalisation puts at its image and review thresholds).

    Where the rules limit where defects count (``roi_xyxy``, zones, or the class's
    ``min_area_px``), only the defect regions they let count speak: the score that
    judges is then the lower of the image score and the strongest counted region's
    confidence (0 with none), so a region in an ignore zone cannot fail the part.

    Args:
        score: normalised image score in ``[0, 1]``; ``None``: the regions alone judge.
        regions: defect regions (one class, ``names[0]``), confidence = the region's
            highest normalised map value.
    """
    name = names[0] if names else "anomaly"
    rule = rules.rule_for(name)
    counted = _counted(regions, names, rules)
    idx = np.flatnonzero(counted)
    top = max((float(regions.confidence[i]) for i in idx), default=0.0)
    limited = rules.roi_xyxy is not None or bool(rules.zones) or rule.min_area_px > 0
    s = top if score is None else min(score, top) if limited else score
    if rule.ignore:
        s = 0.0
    params: ReasonParams = {"score": round(s, 2)}
    if s < rule.review_confidence:
        return _result(Verdict.PASS, "anomaly_pass", params)
    if len(idx):
        best = int(idx[np.argmax(regions.confidence[idx])])
        params["box"] = [int(v) for v in regions.xyxy[best]]
    if s >= rule.fail_confidence:
        return _result(Verdict.FAIL, "anomaly_fail", params)
    return _result(Verdict.REVIEW, "anomaly_review", params)
