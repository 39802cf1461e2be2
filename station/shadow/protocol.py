"""What the station and its shadow child say to each other, over two pipes.

Each message is one length-prefixed block of :class:`multiprocessing.connection.Connection`
(``send_bytes`` / ``recv_bytes``): JSON text, and for a frame one more block with its
raw pixels. Nothing is pickled: the child runs a model nobody has vouched for yet, and
a child that went wrong must not be able to make the station run code. What comes
back is checked field by field (:meth:`ShadowResult.from_json`) before it is stored.

Station → child: ``init`` (the model to load), then ``job`` headers each followed by
the frame's pixels. Child → station: ``ready`` (or why not), then one ``result`` per job.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

#: a stored box: ``[class_id, class_name, confidence, x1, y1, x2, y2]`` in frame pixels
DetectionRow = tuple[int, str, float, float, float, float, float]

VERDICTS = ("PASS", "FAIL", "REVIEW", "ERROR")


class ProtocolError(ValueError):
    """The child sent something that is not a message of this protocol."""


@dataclass(frozen=True)
class Job:
    """One frame for the shadow to judge.

    Attributes:
        inspection_id: the committed inspection's id (text UUID).
        image: ``(H, W, 3)`` or ``(H, W)`` uint8, the pixels the active model judged.
        frame_id, source_id, captured_at: the frame's own (``captured_at``: ISO 8601).
        ruleset: the station's rules in force as :meth:`~kanjian.station.ruleset.RuleSet.values`
            gives them (``rules`` null: the shadow bundle's own rules).
        active_verdict: the active model's verdict (station side only, never sent: the
            runner keeps the frame's picture when the shadow's differs).
    """

    inspection_id: str
    image: NDArray[np.uint8]
    frame_id: int
    source_id: str
    captured_at: str
    ruleset: dict[str, Any]
    active_verdict: str = ""

    def header(self) -> bytes:
        return json.dumps(
            {
                "id": self.inspection_id,
                "shape": list(self.image.shape),
                "frame_id": self.frame_id,
                "source_id": self.source_id,
                "captured_at": self.captured_at,
                "ruleset": self.ruleset,
            }
        ).encode()

    @classmethod
    def from_blocks(cls, header: bytes, pixels: bytes) -> Job:
        h = json.loads(header)
        shape = tuple(int(v) for v in h["shape"])
        image = np.frombuffer(pixels, np.uint8).reshape(shape)
        return cls(
            str(h["id"]),
            image,
            int(h["frame_id"]),
            str(h["source_id"]),
            str(h["captured_at"]),
            dict(h["ruleset"]),
        )


def _num(v: Any, what: str) -> float | None:
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
        raise ProtocolError(f"{what} must be a finite number, got {v!r}")
    return float(v)


def _text(v: Any, what: str, limit: int = 2000) -> str | None:
    if v is None:
        return None
    if not isinstance(v, str) or len(v) > limit:
        raise ProtocolError(f"{what} must be text of at most {limit} characters")
    return v


@dataclass(frozen=True)
class ShadowResult:
    """The shadow's judgement of one frame, as ``shadow_results`` keeps it.

    Attributes:
        inspection_id: the job's.
        verdict: PASS / FAIL / REVIEW / ERROR by the shadow (its own bundle's rules, or
            the station's rules when set).
        reason, top_class, top_confidence, score: as the active model's row has them.
        detections: boxes ``[class_id, class_name, confidence, x1, y1, x2, y2]``, frame pixels.
        probs: classify only: the class probabilities.
        latency_ms: the child's own judging time (preprocess, model, decode, verdict), ms.
    """

    inspection_id: str
    verdict: str
    reason: str | None
    top_class: str | None
    top_confidence: float | None
    score: float | None
    detections: tuple[DetectionRow, ...]
    probs: tuple[float, ...] | None
    latency_ms: float

    def to_json(self) -> bytes:
        return json.dumps(
            {
                "id": self.inspection_id,
                "verdict": self.verdict,
                "reason": self.reason,
                "top_class": self.top_class,
                "top_confidence": self.top_confidence,
                "score": self.score,
                "detections": [list(d) for d in self.detections],
                "probs": None if self.probs is None else list(self.probs),
                "latency_ms": self.latency_ms,
            }
        ).encode()

    @classmethod
    def from_json(cls, data: bytes, max_boxes: int = 100_000) -> ShadowResult:
        """Parse and check a ``result`` message. Raises ProtocolError naming the field."""
        try:
            d = json.loads(data)
        except ValueError as e:
            raise ProtocolError(f"not JSON: {e}") from e
        if not isinstance(d, dict):
            raise ProtocolError("a result must be a JSON object")
        verdict = d.get("verdict")
        if verdict not in VERDICTS:
            raise ProtocolError(f"verdict must be one of {VERDICTS}, got {verdict!r}")
        raw = d.get("detections")
        if not isinstance(raw, list) or len(raw) > max_boxes:
            raise ProtocolError("detections must be a list")
        boxes: list[DetectionRow] = []
        for b in raw:
            if not isinstance(b, list) or len(b) != 7 or not isinstance(b[0], int):
                raise ProtocolError(
                    f"a detection must be [class_id, name, conf, x1, y1, x2, y2]: {b!r}"
                )
            nums = [_num(x, "a detection's number") for x in b[2:]]
            if any(n is None for n in nums):
                raise ProtocolError(f"a detection's numbers must not be null: {b!r}")
            name = _text(b[1], "a class name", 200) or ""
            c, x1, y1, x2, y2 = (float(n) for n in nums if n is not None)
            boxes.append((int(b[0]), name, c, x1, y1, x2, y2))
        probs_raw = d.get("probs")
        probs: tuple[float, ...] | None = None
        if probs_raw is not None:
            if not isinstance(probs_raw, list) or len(probs_raw) > max_boxes:
                raise ProtocolError("probs must be a list of numbers")
            probs = tuple(float(_num(p, "a probability") or 0.0) for p in probs_raw)
        latency = _num(d.get("latency_ms"), "latency_ms")
        if latency is None or latency < 0:
            raise ProtocolError("latency_ms must be a number ≥ 0")
        iid = _text(d.get("id"), "id", 64)
        if not iid:
            raise ProtocolError("id is missing")
        return cls(
            inspection_id=iid,
            verdict=str(verdict),
            reason=_text(d.get("reason"), "reason"),
            top_class=_text(d.get("top_class"), "top_class", 200),
            top_confidence=_num(d.get("top_confidence"), "top_confidence"),
            score=_num(d.get("score"), "score"),
            detections=tuple(boxes),
            probs=probs,
            latency_ms=latency,
        )
