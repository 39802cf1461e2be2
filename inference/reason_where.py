"""A detect verdict's reason, told where on the part (and how big) its defect is.

Apart from :mod:`kanjian.inference.verdict` so the rules' module stays about rules:
judging needs no frame size, placing does (:mod:`kanjian.inference.where`).
"""

from __future__ import annotations

from dataclasses import replace

from kanjian.inference.verdict import ReasonParams, VerdictResult, reason_text
from kanjian.inference.where import size_mm, where_on_frame

#: the reasons that name a defect's box
_PLACED = ("defect_fail", "defect_review", "anomaly_fail", "anomaly_review")


def place_reason(
    result: VerdictResult,
    frame_wh: tuple[int, int],
    mm_per_px: float | None = None,
) -> VerdictResult:
    """``result`` with ``where`` (and ``size_mm`` when ``mm_per_px`` is set) in its
    parameters and its sentence; other reasons than a detected defect are returned as
    they are.

    Args:
        result: a verdict of :func:`~kanjian.inference.verdict.judge_detections`.
        frame_wh: the judged frame's width and height, pixels.
        mm_per_px: the camera's scale, or ``None``.

    Both are taken from the reason's ``box`` (whole pixels), so a row stored without
    them gets the same ``where`` from its box later
    (:func:`~kanjian.inference.verdict.explain_reason` with the frame size).
    """
    box = result.params.get("box")
    if result.code not in _PLACED or not isinstance(box, list):
        return result
    xyxy = [float(v) for v in box]
    params: ReasonParams = {**result.params, "where": where_on_frame(xyxy, frame_wh)}
    if mm_per_px is not None:
        params["size_mm"] = size_mm(xyxy, mm_per_px)
    return replace(result, reason=reason_text(result.code, params), params=params)
