"""The ``inspections.timings_json`` text, made fast for the store's writer thread.

Split from :mod:`kanjian.station.records` (which uses it in
:func:`~kanjian.station.records.stored_rows`) to keep that module small.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping

_JSON_KEYS: dict[str, str] = {}  # timing name -> its JSON text (a few stage names)


def timings_json(timings: Mapping[str, float]) -> str:
    """``timings_json``: each time (ms) rounded to 3 decimals, as ``json.dumps`` writes it.

    The same text as ``json.dumps({k: round(v, 3) ...})``, made without the encoder
    for the usual case (str names, finite floats): it took a third of the row's time.
    """
    parts = []
    for k, v in timings.items():
        if type(v) is not float or type(k) is not str or not math.isfinite(v):
            return json.dumps({k: round(v, 3) for k, v in timings.items()})
        key = _JSON_KEYS.get(k)
        if key is None:
            key = json.dumps(k)
            if len(_JSON_KEYS) < 256:
                _JSON_KEYS[k] = key
        parts.append(f"{key}: {round(v, 3)!r}")
    return "{" + ", ".join(parts) + "}"
