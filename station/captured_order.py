"""How far ``captured_at`` runs out of ``seq`` order: the bound that turns a time filter into a seq range.

``seq`` is commit order; ``captured_at`` is the frame's time, nearly but not
strictly in seq order (frames judged out of order, several sources, a clock that
steps back). The *disorder* ``D`` is the largest step back in time seen so far:
``max(t_i - t_j)`` over rows ``i`` older (lower seq) than ``j``, in seconds, never
negative. With it a time filter is a seq range, exactly:

- ``captured_at < U``: a row ``a`` with ``t_a >= U + D`` has every newer row at
  ``t >= t_a - D >= U``, so the matches all have ``seq < a``;
- ``captured_at >= S``: a row ``b`` with ``t_b < S - D`` has every older row at
  ``t <= t_b + D < S``, so the matches all have ``seq > b``.

``D`` is kept in the one-row table ``captured_order`` (migration 046) with the seq
it covers (``up_to_seq``) and the newest time seen up to it (``max_at``); readers
extend it over the rows committed since (:func:`current`), so the store's write
path does no work for it. Deleted rows (retention) only make ``D`` a looser bound.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass

#: julianday() keeps milliseconds; the bound is widened by this (seconds) to cover it
MARGIN_S = 0.002


@dataclass(frozen=True)
class CapturedOrder:
    """``captured_order``'s row: ``disorder_s`` covers rows with ``seq <= up_to_seq``.

    Attributes:
        up_to_seq: the newest seq included. max_at: the latest ``captured_at`` among
        them (``None``: no rows). disorder_s: ``D`` in seconds (``>= 0``).
    """

    up_to_seq: int
    max_at: str | None
    disorder_s: float


#: ``D`` over the rows after ``up_to_seq``, given the newest time before them: one
#: pass in seq order (the seq index), a running max of the times before each row
_EXTEND = """
SELECT MAX(seq), MAX(captured_at),
       MAX(CASE WHEN captured_at < pm
                THEN (julianday(pm) - julianday(captured_at)) * 86400.0 END)
FROM (SELECT seq, captured_at,
             MAX(:prev, COALESCE(MAX(captured_at) OVER (
                 ORDER BY seq ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING), '')) AS pm
      FROM inspections WHERE seq > :up)
"""


def load(conn: sqlite3.Connection) -> CapturedOrder:
    """The stored row (as migration 046 or the last :func:`save` left it)."""
    up, at, d = conn.execute(
        "SELECT up_to_seq, max_at, disorder_s FROM captured_order WHERE id = 1"
    ).fetchone()
    return CapturedOrder(int(up), at, float(d))


def extend(conn: sqlite3.Connection, order: CapturedOrder) -> CapturedOrder:
    """``order`` carried over the rows committed after ``order.up_to_seq`` (reads only).

    Costs the new rows only. A store whose newest seq fell below ``up_to_seq``
    (every row deleted, seq started again) is read again from the start.
    """
    (newest,) = conn.execute("SELECT COALESCE(MAX(seq), 0) FROM inspections").fetchone()
    if newest < order.up_to_seq:
        order = CapturedOrder(0, None, 0.0)
    if newest == order.up_to_seq:
        return order
    up, at, d = conn.execute(
        _EXTEND, {"prev": order.max_at or "", "up": order.up_to_seq}
    ).fetchone()
    if up is None:
        return order
    max_at = max(order.max_at or "", at or "") or None
    return CapturedOrder(int(up), max_at, max(order.disorder_s, float(d or 0.0)))


def save(conn: sqlite3.Connection, old: CapturedOrder, new: CapturedOrder) -> bool:
    """Store ``new`` if the row still holds ``old`` (another reader may have moved it on).

    The caller owns the transaction. Returns whether it was written.
    """
    cur = conn.execute(
        "UPDATE captured_order SET up_to_seq = ?, max_at = ?, disorder_s = ? "
        "WHERE id = 1 AND up_to_seq = ?",
        [new.up_to_seq, new.max_at, new.disorder_s, old.up_to_seq],
    )
    return cur.rowcount == 1


def bound_s(order: CapturedOrder) -> float:
    """The seconds to widen a time bound by before reading its seq (``D`` + margin)."""
    return order.disorder_s + MARGIN_S
