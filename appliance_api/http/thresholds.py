"""The inspector's thresholds: station.yaml's, or an API override that outlives restarts.

An engineer who tunes thresholds on the running station through
``PUT /api/thresholds`` expects them to hold after a power cut. The override
is kept as one ``settings`` row (written in the same transaction as its audit
row) and applied again by :func:`restore` when the station starts, until
``DELETE /api/thresholds`` returns to station.yaml. station.yaml itself is
never rewritten: it is the engineer's file, comments and all.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass

import sqlite_utils
from pydantic import ValidationError

from kanjian.appliance_api.http.api_models import BundleDefaults, ThresholdsBody, ThresholdsOut
from kanjian.appliance_api.http.audit import Actor
from kanjian.appliance_api.http.auth import now_iso
from kanjian.station.inspector import Inspector
from kanjian.station.pipeline import Station

log = logging.getLogger(__name__)
KEY = "thresholds"


@dataclass(frozen=True)
class Override:
    """A stored override: the values, when and by whom they were set."""

    body: ThresholdsBody
    set_at: str
    set_by: str | None


def from_config(station: Station) -> ThresholdsBody:
    """The thresholds station.yaml gives (``None``: the bundle's default)."""
    m = station.config.model
    return ThresholdsBody(conf=m.conf, iou=m.iou, max_det=m.max_det, rules=station.config.rules)


def in_force(ins: Inspector) -> ThresholdsBody:
    """What the inspector judges with now."""
    return ThresholdsBody(conf=ins.conf, iou=ins.iou, max_det=ins.max_det, rules=ins.rules)


def apply(ins: Inspector, body: ThresholdsBody) -> None:
    """Make ``body`` the inspector's thresholds from the next frame on."""
    # rules first: a frame in flight may see new rules with old conf, never the reverse
    ins.rules = body.rules
    ins.conf, ins.iou, ins.max_det = body.conf, body.iou, body.max_det


def load(db: sqlite_utils.Database) -> Override | None:
    """The stored override, or ``None``; one that no longer validates is logged and ignored."""
    row = db.execute(
        "SELECT value_json, set_at, set_by FROM settings WHERE key = ?", [KEY]
    ).fetchone()
    if row is None:
        return None
    try:
        body = ThresholdsBody.model_validate(json.loads(row[0]))
    except (ValueError, ValidationError) as e:
        log.error("the thresholds set through the API on %s are not valid any more, "
                  "station.yaml's are used: %s", row[1], e)  # fmt: skip
        return None
    return Override(body, row[1], row[2])


def save(db: sqlite_utils.Database, body: ThresholdsBody, actor: Actor) -> None:
    """Store ``body`` as the override (call inside the change's write transaction)."""
    db.execute(
        "INSERT INTO settings (key, value_json, set_at, set_by) VALUES (?, ?, ?, ?) "
        "ON CONFLICT(key) DO UPDATE SET value_json = excluded.value_json, "
        "set_at = excluded.set_at, set_by = excluded.set_by",
        [KEY, body.model_dump_json(), now_iso(), actor.name],
    )


def clear(db: sqlite_utils.Database) -> bool:
    """Drop the override; ``True`` if there was one."""
    return db.execute("DELETE FROM settings WHERE key = ?", [KEY]).rowcount > 0


def describe(ins: Inspector, override: Override | None) -> ThresholdsOut:
    """The thresholds in force, with where they come from."""
    cur = in_force(ins).model_dump()
    model = ins.model
    th = model.default_thresholds()
    cur["bundle_defaults"] = BundleDefaults(
        conf=th.conf, iou=th.iou, max_det=th.max_det, rules=model.default_rules()
    )
    if override is None:
        return ThresholdsOut(**cur, source="station.yaml")
    return ThresholdsOut(**cur, source="api", set_at=override.set_at, set_by=override.set_by)


def restore(db: sqlite_utils.Database, station: Station) -> Override | None:
    """At start-up: put a stored override back in force, saying so in the log."""
    o = load(db)
    if o is not None:
        apply(station.inspector, o.body)
        if o.body.rules is not None:  # also over every model's own rules, until DELETE
            log.warning(
                "verdict rules set through the API replace the model bundles' default rules "
                "(this model's: %s) until DELETE /api/thresholds",
                station.inspector.model.default_rules().model_dump_json(),
            )
        log.warning(
            "thresholds set through the API on %s by %s override station.yaml's "
            "(DELETE /api/thresholds returns to them): %s",
            o.set_at, o.set_by, o.body.model_dump_json(),
        )  # fmt: skip
    return o
