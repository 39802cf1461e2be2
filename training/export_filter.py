"""Which inspections ``kanjian dataset export`` takes: UTC times, verdicts, the filter.

:class:`ExportFilter` checks and normalises every field when it is made;
:func:`parse_utc` reads the ISO 8601 dates and times its bounds accept.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone

from kanjian.inference.types import Verdict

FEEDBACK_KINDS = ("confirm_defect", "not_defect", "wrong_class", "none")  # "none": no feedback
_TIME_EXAMPLES = "e.g. 2026-11-27, 2026-11-27T08:30, 2026-11-27T08:30+09:00, 2026-11-26T23:30Z"


def _as_utc(t: datetime) -> datetime:
    # a time without offset is UTC: the station stores UTC, and so do its users' scripts
    return t.replace(tzinfo=timezone.utc) if t.tzinfo is None else t.astimezone(timezone.utc)


def parse_utc(text: str, *, end_of_day: bool = False, what: str = "time") -> datetime:
    """An ISO 8601 date or date-time as an aware UTC datetime.

    A bare date (``2026-11-27``) stands for that whole UTC day: its start
    (00:00 UTC), or with ``end_of_day`` the start of the next day, an exclusive
    upper bound that takes in all of that day. A time without offset is UTC;
    ``Z`` and offsets such as ``+09:00`` are converted to UTC.

    Raises:
        ValueError: naming ``what`` and the text, when it is neither.
    """
    s = text.strip()
    try:
        day = date.fromisoformat(s)
    except ValueError:
        pass
    else:
        start = datetime(day.year, day.month, day.day, tzinfo=timezone.utc)
        return start + timedelta(days=1) if end_of_day else start
    try:
        return _as_utc(datetime.fromisoformat(s))
    except ValueError:
        raise ValueError(
            f"{what}: {text!r} is not an ISO 8601 date or time ({_TIME_EXAMPLES})"
        ) from None


def _bound(value: datetime | str | None, what: str, end_of_day: bool) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        return _as_utc(value)
    return parse_utc(value, end_of_day=end_of_day, what=what)


@dataclass(frozen=True)
class ExportFilter:
    """Which inspections to export, and which of their detections become labels.

    Everything is checked and normalised when the filter is made; a wrong value
    raises ``ValueError`` naming the field.

    Attributes:
        since, until: bounds on ``captured_at``, ``since <= t < until``. Strings are
            ISO 8601 (see :func:`parse_utc`): a bare date is a whole UTC day (``since``
            its start, ``until`` its end), a time without offset is UTC. Stored as
            aware UTC datetimes.
        model_sha256: only inspections judged by this model.
        reviewed_only: only inspections an operator gave feedback on.
        label_conf: detections at or above this confidence (0-1) become label boxes.
        min_conf, max_conf: only inspections whose top detection score (0-1, none = 0)
            lies in ``[min_conf, max_conf]``; None: no bound.
        verdicts: only these verdicts, any case (normalised to the store's ``FAIL``...);
            empty: all.
        has_classes: only inspections with at least one label box of these classes
            (after feedback and ``label_conf``); all their boxes are kept. Empty: all.
        feedback: only inspections whose latest feedback is one of these kinds
            (``FEEDBACK_KINDS``; ``none``: no feedback). Empty: all.
        min_score, max_score: only inspections whose anomaly image score (0-1, 0.5 =
            the model's fail point) lies in ``[min_score, max_score]``; an inspection
            without a score (not an anomaly model's) is left out by either bound.
            None: no bound.
        include_reviewed: also take every inspection an operator answered (it has
            feedback), whatever its verdict and scores: ``verdicts``, ``min_conf``,
            ``max_conf``, ``min_score`` and ``max_score`` do not apply to it (the time,
            model, feedback and class filters do). The learning loop's export: the
            uncertain band and the answers in one dataset.
    """

    since: datetime | str | None = None
    until: datetime | str | None = None
    model_sha256: str | None = None
    reviewed_only: bool = False
    label_conf: float = 0.25
    min_conf: float | None = None
    max_conf: float | None = None
    verdicts: tuple[str, ...] = ()
    has_classes: tuple[str, ...] = ()
    feedback: tuple[str, ...] = ()
    min_score: float | None = None
    max_score: float | None = None
    include_reviewed: bool = False

    def __post_init__(self) -> None:
        since = _bound(self.since, "since", end_of_day=False)
        until = _bound(self.until, "until", end_of_day=True)
        if since is not None and until is not None and since >= until:
            raise ValueError(
                f"since ({since.isoformat()}) must be before until ({until.isoformat()})"
            )
        valid = [v.value for v in Verdict]
        verdicts = tuple(dict.fromkeys(v.strip().upper() for v in self.verdicts))
        wrong = [v for v in verdicts if v not in valid]
        if wrong:
            raise ValueError(f"verdict {', '.join(wrong)} unknown; valid: {', '.join(valid)}")
        kinds = tuple(dict.fromkeys(k.strip().lower() for k in self.feedback))
        wrong = [k for k in kinds if k not in FEEDBACK_KINDS]
        if wrong:
            raise ValueError(
                f"feedback {', '.join(wrong)} unknown; valid: {', '.join(FEEDBACK_KINDS)}"
            )
        for name in ("label_conf", "min_conf", "max_conf", "min_score", "max_score"):
            v = getattr(self, name)
            if v is not None and not 0.0 <= v <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {v}")
        for what in ("conf", "score"):
            lo, hi = getattr(self, f"min_{what}"), getattr(self, f"max_{what}")
            if lo is not None and hi is not None and lo > hi:
                raise ValueError(f"min_{what} ({lo}) must not be above max_{what} ({hi})")
        has = tuple(dict.fromkeys(c.strip() for c in self.has_classes if c.strip()))
        object.__setattr__(self, "since", since)
        object.__setattr__(self, "until", until)
        object.__setattr__(self, "verdicts", verdicts)
        object.__setattr__(self, "feedback", kinds)
        object.__setattr__(self, "has_classes", has)

    @property
    def since_utc(self) -> datetime | None:
        """``since`` as an aware UTC datetime (normalised when the filter was made)."""
        return self.since if isinstance(self.since, datetime) else None

    @property
    def until_utc(self) -> datetime | None:
        """``until`` as an aware UTC datetime, exclusive."""
        return self.until if isinstance(self.until, datetime) else None
