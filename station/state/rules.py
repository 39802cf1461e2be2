"""The inspector's thresholds and verdict rules: station.yaml's, or an override that
outlives restarts.

An engineer who tunes thresholds on the running station through
``PUT /api/thresholds`` expects them to hold after a power cut, under ``kanjian
run`` as under ``kanjian serve``. The override is kept as one ``settings`` row
(written in the same transaction as its audit row) and put back in force by
:meth:`RulesKeeper.restore` when the station is built, until it is cleared
(``DELETE /api/thresholds``). station.yaml itself is never rewritten: it is
the engineer's file, comments and all.

What judges is one frozen :class:`RuleSet` (rules, decoding thresholds, where
they come from); a change builds a new one and the inspector swaps it in with
one reference assignment, so a frame never sees half of a change.
"""

from __future__ import annotations

import json
import logging
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING

from kanjian.inference.verdict import unknown_classes
from kanjian.station.ruleset import Origin, RulesError, RuleSet, StoredRules
from kanjian.station.state.audit import Actor, now_iso, write_audit
from kanjian.station.state.db import ConnectionPool, stored_override, write_tx

if TYPE_CHECKING:
    import sqlite_utils

    from kanjian.station.inspector import Inspector

log = logging.getLogger(__name__)
KEY = "thresholds"


@dataclass(frozen=True)
class Expected:
    """What a change was made against: the ``set_at`` of the rules the client loaded
    (``None``: station.yaml's, no override), so a change made meanwhile is not overwritten."""

    set_at: str | None


class RulesChanged(RuntimeError):
    """The rules in force are not the ones the change was made against.

    Attributes:
        now: the rules in force.
        by, at: who changed them and when (the newest ``thresholds.*`` audit row), when known.
    """

    def __init__(self, now: RuleSet, by: str | None, at: str | None) -> None:
        self.now, self.by, self.at = now, by, at
        what = "set through the API" if now.origin == "api" else "reset to station.yaml's"
        super().__init__(
            f"the rules were changed after you loaded them: {what} by {by or '?'} at "
            f"{at or '?'}; load them again (GET /api/thresholds) and redo your change"
        )


class RulesKeeper:
    """Sets, clears and restores the rules the inspector judges with.

    Args:
        pool: connections to the station database.
        inspector: the station's inspector.
        from_config: station.yaml's rules and thresholds.
    """

    def __init__(self, pool: ConnectionPool, inspector: Inspector, from_config: RuleSet) -> None:
        self.pool = pool
        self.inspector = inspector
        self.from_config = from_config
        self._lock = threading.Lock()  # one change at a time: its row, then its swap

    def in_force(self) -> RuleSet:
        """What the inspector judges the next frame with."""
        return self.inspector.ruleset

    def set(self, new: RuleSet, actor: Actor, expected: Expected | None = None) -> RuleSet:
        """Make ``new``'s values judge from the next frame on and keep them over restarts.

        ``expected``: refuse when the rules in force were set at another time (checked
        under the same lock as the write, so two editors cannot both pass it).

        Raises:
            RulesError: the rules name a class the running model does not have.
            RulesChanged: ``expected`` is not what is in force.
        """
        names = self.inspector.model.info.class_names
        missing = unknown_classes(new.rules, names)
        if missing:  # a misspelt class would silently fall back to the default rule
            raise RulesError(
                f"rules name classes the running model does not have: {', '.join(missing)}; "
                f"its classes are: {', '.join(names)}"
            )
        stored = StoredRules(conf=new.conf, iou=new.iou, max_det=new.max_det, rules=new.rules)
        at = now_iso()
        with self._lock:
            db = self.pool.get()
            with write_tx(db):
                old = self.inspector.ruleset
                if expected is not None and old.set_at != expected.set_at:
                    raise RulesChanged(old, *_last_change(db, old))
                write_audit(db, actor, "thresholds.set", None,
                            {"old": old.values(), "new": stored.model_dump(mode="json")})  # fmt: skip
                db.execute(
                    "INSERT INTO settings (key, value_json, set_at, set_by) VALUES (?, ?, ?, ?) "
                    "ON CONFLICT(key) DO UPDATE SET value_json = excluded.value_json, "
                    "set_at = excluded.set_at, set_by = excluded.set_by",
                    [KEY, stored.model_dump_json(), at, actor.name],
                )
            rs = _ruleset(stored, "api", at, actor.name)
            self.inspector.set_ruleset(rs)
        return rs

    def reset(self, actor: Actor) -> RuleSet:
        """Drop the override: station.yaml's values judge again from the next frame on."""
        with self._lock:
            db = self.pool.get()
            with write_tx(db):
                had = db.execute("DELETE FROM settings WHERE key = ?", [KEY]).rowcount > 0
                write_audit(db, actor, "thresholds.reset", None,
                            {"old": self.inspector.ruleset.values(),
                             "new": self.from_config.values(), "had_override": had})  # fmt: skip
            self.inspector.set_ruleset(self.from_config)
        return self.from_config

    def stored(self) -> RuleSet | None:
        """The stored override, or ``None``; one that no longer validates is logged and
        ignored."""
        got = stored_override(self.pool.get(), KEY, StoredRules, "thresholds")
        return None if got is None else _ruleset(got[0], "api", got[1], got[2])

    def restore(self) -> RuleSet | None:
        """At start-up: put a stored override back in force, saying so in the log."""
        rs = self.stored()
        if rs is None:
            return None
        model = self.inspector.model
        missing = unknown_classes(rs.rules, model.info.class_names)
        if missing:  # e.g. station.yaml names another model now: those rules are inert
            log.warning("model %s v%s has no class %s named in the rules set through the API; "
                        "those rules do nothing while it judges", model.info.name,
                        model.info.version, ", ".join(missing))  # fmt: skip
        with self._lock:
            self.inspector.set_ruleset(rs)
        if rs.rules is not None:  # also over every model's own rules, until cleared
            log.warning(
                "verdict rules set through the API replace the model bundles' default rules "
                "(this model's: %s) until DELETE /api/thresholds",
                model.default_rules().model_dump_json(),
            )
        log.warning(
            "thresholds set through the API on %s by %s override station.yaml's "
            "(DELETE /api/thresholds returns to them): %s",
            rs.set_at, rs.set_by, json.dumps(rs.values(), sort_keys=True),
        )  # fmt: skip
        return rs


def _last_change(db: sqlite_utils.Database, now: RuleSet) -> tuple[str | None, str | None]:
    """Who changed the rules last and when: the override's own row, else the newest reset."""
    if now.origin == "api":
        return now.set_by, now.set_at
    row = db.execute(
        "SELECT actor, at FROM audit WHERE action = 'thresholds.reset' ORDER BY id DESC LIMIT 1"
    ).fetchone()
    return (str(row[0]), str(row[1])) if row else (None, None)


def _ruleset(s: StoredRules, origin: Origin, at: str | None, by: str | None) -> RuleSet:
    return RuleSet(s.rules, s.conf, s.iou, s.max_det, origin, at, by)
