"""How far two models agree on the same parts, and which is right where people said.

Pure functions over plain records (NumPy only, runtime code): the station's shadow
report compares its active model (``a``) with a shadow model (``b``) on the same frames;
``kanjian model compare`` compares two bundles on a labelled folder. Every result is a
frozen dataclass of plain values: ``dataclasses.asdict`` gives JSON an API can return
as it is (tuples become lists, ``None`` null).

- :func:`verdict_agreement`: the verdict matrix (first model x second model over
  PASS / FAIL / REVIEW / ERROR), agreement and Cohen's kappa;
- :func:`match_boxes` / :func:`detection_agreement`: boxes of the two models matched by
  IoU, per class: matched, only in one model, matched to a box of another class;
- :func:`defect_call_score` / :func:`feedback_truth`: precision and recall of each
  model's *defect call* (FAIL or REVIEW: the part is taken off the line or shown to a
  person) against a truth: the labels of a folder, or operators' feedback.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from kanjian.inference.box_agreement import (
    ACTIVE_SHADOW,
    BoxMatch,
    ClassAgreement,
    ClassSwap,
    DetBox,
    DetectionAgreement,
    boxes_of,
    detection_agreement,
    match_boxes,
    ratio,
)
from kanjian.inference.types import Verdict

#: the matrix's rows and columns, in this order
VERDICT_LABELS: tuple[str, ...] = ("PASS", "FAIL", "REVIEW", "ERROR")
#: verdicts that call the part defective (it leaves the line or goes to a person)
DEFECT_CALLS: frozenset[str] = frozenset({"FAIL", "REVIEW"})
#: operator feedback kinds (``station.records.StoredFeedback.kind``)
FEEDBACK_KINDS: tuple[str, ...] = ("confirm_defect", "not_defect", "wrong_class")


def verdict_name(verdict: str | Verdict) -> str:
    """``verdict`` as one of :data:`VERDICT_LABELS` (any case; MISSED counts as ERROR:
    no part was judged).

    Raises:
        ValueError: naming a verdict that is none of them.
    """
    v = (verdict.value if isinstance(verdict, Verdict) else str(verdict)).upper()
    if v == Verdict.MISSED.value:
        return Verdict.ERROR.value
    if v not in VERDICT_LABELS:
        raise ValueError(
            f"unknown verdict {verdict!r}; expected one of {', '.join(VERDICT_LABELS)}"
        )
    return v


# -- verdicts ---------------------------------------------------------------------------


@dataclass(frozen=True)
class VerdictAgreement:
    """The two models' verdicts on the same parts, cross-counted.

    Attributes:
        models: the two models' names (rows, columns).
        labels: :data:`VERDICT_LABELS`, the order of rows and columns.
        matrix: ``matrix[i][j]``: parts the first model judged ``labels[i]`` and the
            second ``labels[j]``.
        n: parts counted.
        agreed: parts with the same verdict (the diagonal).
        agreement: ``agreed / n``; None when ``n`` is 0.
        kappa: Cohen's kappa, agreement beyond what the two verdict mixes give by
            chance (1: perfect, 0: chance); None when ``n`` is 0 or chance agreement is
            already 1 (both models always said the same single verdict).
        defect_call_pairs: parts both models judged (neither ERROR).
        defect_call_agreed: of those, parts both called defective (FAIL or REVIEW, in
            any mix) or both passed.
        defect_call_agreement: ``defect_call_agreed / defect_call_pairs``, or None.
    """

    models: tuple[str, str]
    labels: tuple[str, ...]
    matrix: tuple[tuple[int, ...], ...]
    n: int
    agreed: int
    agreement: float | None
    kappa: float | None
    defect_call_pairs: int
    defect_call_agreed: int
    defect_call_agreement: float | None


def verdict_agreement(
    pairs: Iterable[tuple[str | Verdict, str | Verdict]],
    models: tuple[str, str] = ACTIVE_SHADOW,
) -> VerdictAgreement:
    """Cross-count ``(first model's verdict, second model's verdict)`` per part.

    Raises:
        ValueError: an unknown verdict (see :func:`verdict_name`).
    """
    index = {v: i for i, v in enumerate(VERDICT_LABELS)}
    m = np.zeros((len(VERDICT_LABELS), len(VERDICT_LABELS)), np.int64)
    judged = same_call = 0
    for a, b in pairs:
        va, vb = verdict_name(a), verdict_name(b)
        m[index[va], index[vb]] += 1
        if Verdict.ERROR.value not in (va, vb):
            judged += 1
            same_call += (va in DEFECT_CALLS) == (vb in DEFECT_CALLS)
    n = int(m.sum())
    agreed = int(np.trace(m))
    kappa = None
    if n:
        chance = float((m.sum(axis=1) / n) @ (m.sum(axis=0) / n))
        kappa = (agreed / n - chance) / (1 - chance) if chance < 1 else None
    return VerdictAgreement(
        models=models,
        labels=VERDICT_LABELS,
        matrix=tuple(tuple(int(x) for x in row) for row in m),
        n=n,
        agreed=agreed,
        agreement=ratio(agreed, n),
        kappa=kappa,
        defect_call_pairs=judged,
        defect_call_agreed=same_call,
        defect_call_agreement=ratio(same_call, judged),
    )


# -- against a truth: labels or operator feedback ---------------------------------------


@dataclass(frozen=True)
class DefectCallScore:
    """One model's defect calls (FAIL or REVIEW) against a truth (defective or good).

    Attributes:
        model: its name.
        n: parts it judged that have a truth (``tp + fp + fn + tn``).
        tp: defective parts it called defective; fp: good parts it called defective;
            fn: defective parts it passed; tn: good parts it passed.
        unjudged: parts with a truth it did not judge (ERROR), not in ``n``.
        precision: ``tp / (tp + fp)``: of its defect calls, the share that were
            defective; None without a defect call.
        recall: ``tp / (tp + fn)``: of the defective parts, the share it caught; None
            without a defective part.
    """

    model: str
    n: int
    tp: int
    fp: int
    fn: int
    tn: int
    unjudged: int
    precision: float | None
    recall: float | None


def defect_call_score(
    judged: Iterable[tuple[str | Verdict, bool]], model: str = "model"
) -> DefectCallScore:
    """Score ``(verdict, part is defective)`` pairs: a labelled folder's truth is "its
    label file has boxes", the station's is operator feedback (:func:`feedback_truth`).

    Raises:
        ValueError: an unknown verdict.
    """
    c: Counter[str] = Counter()
    for verdict, defective in judged:
        v = verdict_name(verdict)
        if v == Verdict.ERROR.value:
            c["unjudged"] += 1
            continue
        called = v in DEFECT_CALLS
        c[("t" if called == defective else "f") + ("p" if called else "n")] += 1
    tp, fp, fn, tn = c["tp"], c["fp"], c["fn"], c["tn"]
    return DefectCallScore(
        model=model,
        n=tp + fp + fn + tn,
        tp=tp,
        fp=fp,
        fn=fn,
        tn=tn,
        unjudged=c["unjudged"],
        precision=ratio(tp, tp + fp),
        recall=ratio(tp, tp + fn),
    )


def feedback_says_defect(kind: str) -> bool:
    """What an operator's answer says about the part, whichever verdict it was given on.

    ``confirm_defect`` and ``wrong_class`` (a defect, of the class named): defective;
    ``not_defect``: good. On a PASS, ``confirm_defect`` says the model missed a defect
    (the station's trends count it as ``missed``, ``training.station_export`` as a
    defect), so the answer is a fact about the part, not about the verdict.

    Raises:
        ValueError: naming an unknown kind.
    """
    if kind not in FEEDBACK_KINDS:
        raise ValueError(f"unknown feedback kind {kind!r}; expected one of {FEEDBACK_KINDS}")
    return kind != "not_defect"


@dataclass(frozen=True)
class FeedbackRecord:
    """One inspection both models judged and an operator answered (the latest answer).

    Attributes:
        a_verdict, b_verdict: the two models' verdicts (active, shadow).
        feedback_kind: ``confirm_defect`` / ``not_defect`` / ``wrong_class``.
        feedback_class: ``wrong_class``: the right class; else None.
        inspection_id: to list it (may be empty).
    """

    a_verdict: str
    b_verdict: str
    feedback_kind: str
    feedback_class: str | None = None
    inspection_id: str = ""


@dataclass(frozen=True)
class Disagreement:
    """An answered inspection the two models judged differently.

    Attributes:
        inspection_id, a_verdict, b_verdict, feedback_kind, feedback_class: the record.
        defective: what the answer says about the part.
        right: whose defect call the answer bears out: ``"a"``, ``"b"``, ``"both"``
            (FAIL against REVIEW: both called it defective, and it was) or ``"neither"``
            (both wrong, or the one that judged it was wrong and the other said ERROR).
    """

    inspection_id: str
    a_verdict: str
    b_verdict: str
    feedback_kind: str
    feedback_class: str | None
    defective: bool
    right: str


@dataclass(frozen=True)
class FeedbackTruth:
    """Both models scored against operator feedback.

    Read with care: feedback is a biased sample. Operators answer mostly on what the
    active model flagged (FAIL, REVIEW) and rarely on parts it passed, so:

    - precision (of a defect call, the share that was defective) is estimated well for
      the active model and less well for the shadow, whose calls were not what drew
      the answers;
    - recall (of defective parts, the share caught) is estimated over the answered
      inspections only: defects both models passed and nobody answered are not in it,
      so it is an upper bound more than an estimate, for either model.

    The counts are given so a reader can judge how much to trust each ratio.

    Attributes:
        models: the two models' names.
        n: answered inspections counted; defective, good: what the answers said.
        a, b: each model's :class:`DefectCallScore` against the answers.
        disagreements: answered inspections with different verdicts.
        a_right, b_right, both_right, neither_right: those by
            :attr:`Disagreement.right`.
        listed: the disagreements, in input order, up to ``max_listed``.
    """

    models: tuple[str, str]
    n: int
    defective: int
    good: int
    a: DefectCallScore
    b: DefectCallScore
    disagreements: int
    a_right: int
    b_right: int
    both_right: int
    neither_right: int
    listed: tuple[Disagreement, ...]


def _right(va: str, vb: str, defective: bool) -> str:
    ok_a = va != Verdict.ERROR.value and (va in DEFECT_CALLS) == defective
    ok_b = vb != Verdict.ERROR.value and (vb in DEFECT_CALLS) == defective
    return {(True, True): "both", (True, False): "a", (False, True): "b"}.get(
        (ok_a, ok_b), "neither"
    )


def feedback_truth(
    records: Iterable[FeedbackRecord],
    models: tuple[str, str] = ACTIVE_SHADOW,
    max_listed: int = 1000,
) -> FeedbackTruth:
    """Score both models' defect calls against operators' answers (see
    :class:`FeedbackTruth` for what the numbers can and cannot say).

    Raises:
        ValueError: an unknown verdict or feedback kind.
    """
    rows = []
    listed: list[Disagreement] = []
    right: Counter[str] = Counter()
    for r in records:
        va, vb = verdict_name(r.a_verdict), verdict_name(r.b_verdict)
        defective = feedback_says_defect(r.feedback_kind)
        rows.append((va, vb, defective))
        if va == vb:
            continue
        who = _right(va, vb, defective)
        right[who] += 1
        if len(listed) < max_listed:
            listed.append(
                Disagreement(
                    r.inspection_id, va, vb, r.feedback_kind, r.feedback_class, defective, who
                )
            )
    return FeedbackTruth(
        models=models,
        n=len(rows),
        defective=sum(d for _, _, d in rows),
        good=sum(not d for _, _, d in rows),
        a=defect_call_score(((va, d) for va, _, d in rows), models[0]),
        b=defect_call_score(((vb, d) for _, vb, d in rows), models[1]),
        disagreements=sum(right.values()),
        a_right=right["a"],
        b_right=right["b"],
        both_right=right["both"],
        neither_right=right["neither"],
        listed=tuple(listed),
    )


__all__ = [
    "ACTIVE_SHADOW",
    "DEFECT_CALLS",
    "FEEDBACK_KINDS",
    "VERDICT_LABELS",
    "BoxMatch",
    "ClassAgreement",
    "ClassSwap",
    "DefectCallScore",
    "DetBox",
    "DetectionAgreement",
    "Disagreement",
    "FeedbackRecord",
    "FeedbackTruth",
    "VerdictAgreement",
    "boxes_of",
    "defect_call_score",
    "detection_agreement",
    "feedback_says_defect",
    "feedback_truth",
    "match_boxes",
    "verdict_agreement",
    "verdict_name",
]
