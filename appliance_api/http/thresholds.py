"""The thresholds' HTTP face: the station's rules in force as the API's JSON.

What is in force, and how an override is kept and restored, is the station's
business (:mod:`kanjian.station.state.rules`); this module only translates.
"""

from __future__ import annotations

from kanjian.appliance_api.http.api_models import BundleDefaults, ThresholdsBody, ThresholdsOut
from kanjian.inference.model import OnnxModel
from kanjian.station.ruleset import RuleSet


def to_ruleset(body: ThresholdsBody) -> RuleSet:
    """The request's values as a rule set (its origin is decided when it is set)."""
    return RuleSet(body.rules, body.conf, body.iou, body.max_det)


def describe(rs: RuleSet, model: OnnxModel) -> ThresholdsOut:
    """The thresholds in force, what ``null`` means for ``model``, and where they come from."""
    th = model.default_thresholds()
    return ThresholdsOut(
        conf=rs.conf,
        iou=rs.iou,
        max_det=rs.max_det,
        rules=rs.rules,
        bundle_defaults=BundleDefaults(
            conf=th.conf, iou=th.iou, max_det=th.max_det, rules=model.default_rules()
        ),
        source=rs.origin,
        set_at=rs.set_at,
        set_by=rs.set_by,
    )
