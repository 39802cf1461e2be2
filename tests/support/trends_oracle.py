"""The shift view's numbers computed by SQL of their own on the store's file (no tests here).

Written from the definitions, not from :mod:`kanjian.appliance_api.http.trends`: local
hours and shifts by SQLite's date functions on the stored UTC text (the test station's
zone, Shanghai, is UTC+8 all year), classes from ``detections`` and ``top_class``,
the latest answer as the highest feedback id. Times are cut to whole seconds first
(SQLite's date functions round the microseconds, which could move a row across an
hour).
"""

from __future__ import annotations

from collections import Counter
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from tests.support import api as S

VERDICTS = ("PASS", "FAIL", "REVIEW", "ERROR", "MISSED")
FEEDBACK_KEYS = ("false_reject", "missed", "confirmed", "wrong_class", "agreed_pass", "other")
LOCAL = "datetime(substr(captured_at, 1, 19), '+8 hours')"
#: a row's shift (06:00 / 14:00 / 22:00 local) as "YYYY-MM-DDTHH:MM" of its start
SHIFT_OF = (
    f"CASE WHEN time({LOCAL}) >= '06:00:00' AND time({LOCAL}) < '14:00:00' "
    f"THEN date({LOCAL}) || 'T06:00' "
    f"WHEN time({LOCAL}) >= '14:00:00' AND time({LOCAL}) < '22:00:00' "
    f"THEN date({LOCAL}) || 'T14:00' "
    f"WHEN time({LOCAL}) >= '22:00:00' THEN date({LOCAL}) || 'T22:00' "
    f"ELSE date({LOCAL}, '-1 day') || 'T22:00' END"
)
PARETO_SQL = """
SELECT x.cls, i.verdict, COUNT(DISTINCT i.id) FROM inspections i
JOIN (SELECT inspection_id AS id, class_name AS cls FROM detections
      UNION SELECT id, top_class FROM inspections WHERE top_class IS NOT NULL) x ON x.id = i.id
WHERE i.captured_at >= ? AND i.captured_at < ? AND i.verdict IN ({})
GROUP BY 1, 2
"""
LATEST_SQL = """
SELECT f.kind, f.class_name, i.verdict, i.top_class FROM feedback f
JOIN inspections i ON i.id = f.inspection_id
WHERE f.id IN (SELECT MAX(id) FROM feedback GROUP BY inspection_id)
  AND i.captured_at >= ? AND i.captured_at < ?
"""


def utc(t: datetime) -> str:
    """``t`` as the store's time text."""
    return t.astimezone(timezone.utc).isoformat(timespec="microseconds")


def hour_floor(t: datetime) -> datetime:
    return t.replace(minute=0, second=0, microsecond=0)


def hour_ceil(t: datetime) -> datetime:
    f = hour_floor(t)
    return f if f == t else f + timedelta(hours=1)


def _grouped(rows: list[tuple[Any, ...]]) -> dict[Any, Counter[str]]:
    out: dict[Any, Counter[str]] = {}
    for key, verdict, n in rows:
        out.setdefault(key, Counter())[verdict] = n
    return out


def hours(db: Path, since: datetime, until: datetime) -> dict[str, Counter[str]]:
    """``{"YYYY-MM-DDTHH:00" local: Counter(verdict)}`` of the rows in ``[since, until)``."""
    q = (
        f"SELECT strftime('%Y-%m-%dT%H:00', {LOCAL}), verdict, COUNT(*) FROM inspections "
        "WHERE captured_at >= ? AND captured_at < ? GROUP BY 1, 2"
    )
    return _grouped(S.sql(db, q, (utc(since), utc(until))))


def shifts(db: Path, since: datetime, until: datetime) -> dict[str, Counter[str]]:
    """``{"YYYY-MM-DDTHH:MM" shift start: Counter(verdict)}`` of the rows in the window."""
    q = (
        f"SELECT {SHIFT_OF}, verdict, COUNT(*) FROM inspections "
        "WHERE captured_at >= ? AND captured_at < ? GROUP BY 1, 2"
    )
    return _grouped(S.sql(db, q, (utc(since), utc(until))))


def totals(db: Path, since: datetime, until: datetime) -> Counter[str]:
    q = (
        "SELECT verdict, COUNT(*) FROM inspections WHERE captured_at >= ? AND captured_at < ? "
        "GROUP BY verdict"
    )
    return Counter(dict(S.sql(db, q, (utc(since), utc(until)))))


def yield_pct(c: Counter[str] | dict[str, int]) -> float | None:
    judged = c["PASS"] + c["FAIL"] + c["REVIEW"]
    return None if judged == 0 else round(100.0 * c["PASS"] / judged, 2)


def pareto(
    db: Path, since: datetime, until: datetime, verdicts: tuple[str, ...] = ("FAIL", "REVIEW")
) -> list[tuple[str, Counter[str]]]:
    """Classes with their counts per verdict, most first (then by name)."""
    q = PARETO_SQL.format(",".join("?" * len(verdicts)))
    per = _grouped(S.sql(db, q, (utc(since), utc(until), *verdicts)))
    return sorted(per.items(), key=lambda kv: (-sum(kv[1].values()), kv[0]))


def category(kind: str, verdict: str) -> str:
    if verdict in ("ERROR", "MISSED"):
        return "other"
    if verdict == "PASS":
        return "agreed_pass" if kind == "not_defect" else "missed"
    by_kind = {"not_defect": "false_reject", "confirm_defect": "confirmed"}
    return by_kind.get(kind, "wrong_class")


def feedback(db: Path, since: datetime, until: datetime) -> dict[str | None, Counter[str]]:
    """``{class: Counter(category)}`` of the latest answers on rows in the window."""
    per: dict[str | None, Counter[str]] = {}
    for kind, named, verdict, top in S.sql(db, LATEST_SQL, (utc(since), utc(until))):
        cls = named if kind == "wrong_class" else top
        per.setdefault(cls, Counter())[category(kind, verdict)] += 1
    return per


def p_chart(ns: list[int], xs: list[int]) -> tuple[float, list[tuple[float, float, float] | None]]:
    """p̄ and per subgroup ``(p, lcl, ucl)`` (``None`` for n = 0), from the textbook formula."""
    import math

    pbar = sum(xs) / sum(ns)
    out: list[tuple[float, float, float] | None] = []
    for n, x in zip(ns, xs, strict=True):
        if n == 0:
            out.append(None)
            continue
        sigma = math.sqrt(pbar * (1 - pbar) / n)
        out.append((x / n, max(0.0, pbar - 3 * sigma), min(1.0, pbar + 3 * sigma)))
    return pbar, out


def listed(
    db: Path,
    since: datetime | None = None,
    until: datetime | None = None,
    verdicts: tuple[str, ...] = (),
    class_name: str | None = None,
    feedback_kind: str | None = None,
) -> list[str]:
    """Every inspection id the history's filters match, newest (highest seq) first."""
    where, args = ["1"], []
    if since is not None:
        where.append("captured_at >= ?")
        args.append(utc(since))
    if until is not None:
        where.append("captured_at < ?")
        args.append(utc(until))
    if verdicts:
        where.append(f"verdict IN ({','.join('?' * len(verdicts))})")
        args.extend(verdicts)
    if class_name is not None:
        where.append(
            "(top_class = ? OR id IN (SELECT inspection_id FROM detections WHERE class_name = ?))"
        )
        args.extend([class_name, class_name])
    if feedback_kind is not None:
        where.append(
            "(SELECT kind FROM feedback f WHERE f.inspection_id = inspections.id "
            "ORDER BY f.id DESC LIMIT 1) = ?"
        )
        args.append(feedback_kind)
    q = f"SELECT id FROM inspections WHERE {' AND '.join(where)} ORDER BY seq DESC"
    return [r[0] for r in S.sql(db, q, tuple(args))]
