"""Boxes of two models on the same images, paired by IoU and counted per class.

Part of :mod:`kanjian.inference.agreement` (which re-exports every name here): NumPy
only, plain records in, frozen dataclasses out (``dataclasses.asdict`` gives JSON).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from kanjian.inference.matching import box_iou
from kanjian.inference.types import Detections

#: the default names of the two models: the station's active one and its shadow
ACTIVE_SHADOW: tuple[str, str] = ("active", "shadow")


def ratio(num: int, den: int) -> float | None:
    """``num / den``, None when ``den`` is 0 (no case to measure)."""
    return num / den if den else None


@dataclass(frozen=True)
class DetBox:
    """One detection as records carry it.

    Attributes:
        class_name: the model's class name.
        confidence: in ``[0, 1]``.
        xyxy: ``x1, y1, x2, y2`` in source-frame pixels.
    """

    class_name: str
    confidence: float
    xyxy: tuple[float, float, float, float]


def boxes_of(detections: Detections, class_names: Sequence[str]) -> list[DetBox]:
    """A model's :class:`Detections` as :class:`DetBox` records (class ids named)."""
    return [
        DetBox(class_names[int(k)], float(c), (float(x1), float(y1), float(x2), float(y2)))
        for (x1, y1, x2, y2), c, k in zip(
            detections.xyxy.tolist(),
            detections.confidence.tolist(),
            detections.class_id.tolist(),
            strict=True,
        )
    ]


@dataclass(frozen=True)
class BoxMatch:
    """One image's boxes of the two models, paired.

    Attributes:
        pairs: ``(i, j, iou)``: box ``a[i]`` and box ``b[j]``, same class, IoU at or
            above the threshold.
        class_swaps: ``(i, j, iou)``: boxes left after that, paired by IoU alone (the
            models saw the same object as different classes).
        only_a, only_b: indices of boxes with no partner in the other model.
    """

    pairs: tuple[tuple[int, int, float], ...]
    class_swaps: tuple[tuple[int, int, float], ...]
    only_a: tuple[int, ...]
    only_b: tuple[int, ...]

    @property
    def agrees(self) -> bool:
        """Every box found a partner of the same class."""
        return not (self.class_swaps or self.only_a or self.only_b)


def _greedy(
    a: Sequence[DetBox],
    iou: np.ndarray,
    allowed: np.ndarray,
    free_a: list[int],
    free_b: set[int],
) -> list[tuple[int, int, float]]:
    """Each free ``a`` box in falling confidence (ties: input order) takes the free ``b``
    box it is allowed with of highest IoU (ties: the lowest index)."""
    out = []
    for i in sorted(free_a, key=lambda k: -a[k].confidence):
        cand = [j for j in sorted(free_b) if allowed[i, j]]
        if not cand:
            continue
        j = max(cand, key=lambda k: iou[i, k])
        free_b.discard(j)
        out.append((i, j, float(iou[i, j])))
    return out


def match_boxes(a: Sequence[DetBox], b: Sequence[DetBox], iou_threshold: float = 0.5) -> BoxMatch:
    """Pair one image's boxes of two models.

    Greedy, as the golden-set check does: ``a``'s boxes in falling confidence each take
    the unpaired ``b`` box of the same class with the highest IoU, if that IoU is at least
    ``iou_threshold``. The boxes left over are then paired the same way ignoring the
    class: those are :attr:`BoxMatch.class_swaps`.
    """
    n, m = len(a), len(b)
    iou = np.zeros((n, m))
    if n and m:
        iou = box_iou(
            np.array([x.xyxy for x in a], np.float64), np.array([x.xyxy for x in b], np.float64)
        )
    near = iou >= iou_threshold
    same = np.array([[x.class_name == y.class_name for y in b] for x in a], bool).reshape(n, m)
    free_b = set(range(m))
    pairs = _greedy(a, iou, near & same, list(range(n)), free_b)
    used_a = {i for i, _, _ in pairs}
    swaps = _greedy(a, iou, near & ~same, [i for i in range(n) if i not in used_a], free_b)
    used_a |= {i for i, _, _ in swaps}
    return BoxMatch(
        pairs=tuple(pairs),
        class_swaps=tuple(swaps),
        only_a=tuple(i for i in range(n) if i not in used_a),
        only_b=tuple(sorted(free_b)),
    )


@dataclass(frozen=True)
class ClassAgreement:
    """One class's boxes in the two models.

    Attributes:
        class_name: the class.
        a_boxes, b_boxes: boxes of this class in each model
            (``a_boxes = matched + only_a + swapped_a``).
        matched: same-class pairs.
        only_a, only_b: boxes with no partner in the other model.
        swapped_a: ``a`` boxes of this class paired with a ``b`` box of another class;
            swapped_b likewise.
        mean_iou: mean IoU of the same-class pairs; None without any.
        agreement: ``2 * matched / (a_boxes + b_boxes)``: the share of this class's boxes
            that found a same-class partner; None when neither model has one.
    """

    class_name: str
    a_boxes: int
    b_boxes: int
    matched: int
    only_a: int
    only_b: int
    swapped_a: int
    swapped_b: int
    mean_iou: float | None
    agreement: float | None


@dataclass(frozen=True)
class ClassSwap:
    """How often an object the first model called ``a_class`` was ``b_class`` in the second."""

    a_class: str
    b_class: str
    count: int


@dataclass(frozen=True)
class DetectionAgreement:
    """Boxes of two models over many images.

    Attributes:
        models: the two models' names.
        iou_threshold: the IoU a pair needed.
        images: images compared; images_agreeing: those where :attr:`BoxMatch.agrees`.
        classes: per class, the given class names first (in their order), then any
            other class met, sorted.
        class_swaps: per (a_class, b_class), most frequent first.
        a_boxes, b_boxes, matched, only_a, only_b, swapped: totals over the classes
            (``swapped``: pairs in :attr:`class_swaps`).
        mean_iou: over every same-class pair; None without any.
        agreement: ``2 * matched / (a_boxes + b_boxes)``; None without boxes.
    """

    models: tuple[str, str]
    iou_threshold: float
    images: int
    images_agreeing: int
    classes: tuple[ClassAgreement, ...]
    class_swaps: tuple[ClassSwap, ...]
    a_boxes: int
    b_boxes: int
    matched: int
    only_a: int
    only_b: int
    swapped: int
    mean_iou: float | None
    agreement: float | None


def detection_agreement(
    images: Iterable[tuple[Sequence[DetBox], Sequence[DetBox]]],
    iou_threshold: float = 0.5,
    class_names: Sequence[str] = (),
    models: tuple[str, str] = ACTIVE_SHADOW,
) -> DetectionAgreement:
    """Match every image's boxes (:func:`match_boxes`) and count per class.

    Args:
        images: per image, ``(first model's boxes, second model's boxes)``.
        iou_threshold: IoU a pair needs (0.5 by default).
        class_names: classes listed even when no box has them (the model's names).
    """
    keys = ("matched", "only_a", "only_b", "swapped_a", "swapped_b")
    counts: dict[str, Counter[str]] = {k: Counter() for k in keys}
    ious: dict[str, list[float]] = {}
    swaps: Counter[tuple[str, str]] = Counter()
    n_images = agreeing = 0
    for a, b in images:
        n_images += 1
        match = match_boxes(a, b, iou_threshold)
        agreeing += match.agrees
        for i, _j, iou in match.pairs:
            counts["matched"][a[i].class_name] += 1
            ious.setdefault(a[i].class_name, []).append(iou)
        for i, j, _ in match.class_swaps:
            counts["swapped_a"][a[i].class_name] += 1
            counts["swapped_b"][b[j].class_name] += 1
            swaps[(a[i].class_name, b[j].class_name)] += 1
        counts["only_a"].update(a[i].class_name for i in match.only_a)
        counts["only_b"].update(b[j].class_name for j in match.only_b)
    seen = set().union(*(c.keys() for c in counts.values()))
    names = list(dict.fromkeys(class_names)) + sorted(seen - set(class_names))
    per_class = []
    for name in names:
        c = {k: counts[k][name] for k in keys}
        na = c["matched"] + c["only_a"] + c["swapped_a"]
        nb = c["matched"] + c["only_b"] + c["swapped_b"]
        got = ious.get(name, [])
        per_class.append(
            ClassAgreement(
                class_name=name,
                a_boxes=na,
                b_boxes=nb,
                **c,
                mean_iou=sum(got) / len(got) if got else None,
                agreement=ratio(2 * c["matched"], na + nb),
            )
        )
    all_ious = [x for v in ious.values() for x in v]
    total = {k: sum(counts[k].values()) for k in keys}
    a_boxes = total["matched"] + total["only_a"] + total["swapped_a"]
    b_boxes = total["matched"] + total["only_b"] + total["swapped_b"]
    return DetectionAgreement(
        models=models,
        iou_threshold=iou_threshold,
        images=n_images,
        images_agreeing=agreeing,
        classes=tuple(per_class),
        class_swaps=tuple(
            ClassSwap(x, y, k) for (x, y), k in sorted(swaps.items(), key=lambda t: (-t[1], t[0]))
        ),
        a_boxes=a_boxes,
        b_boxes=b_boxes,
        matched=total["matched"],
        only_a=total["only_a"],
        only_b=total["only_b"],
        swapped=total["swapped_a"],
        mean_iou=sum(all_ious) / len(all_ious) if all_ious else None,
        agreement=ratio(2 * total["matched"], a_boxes + b_boxes),
    )
