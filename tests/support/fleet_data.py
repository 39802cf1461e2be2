"""A cluster's worth of station traffic for the fleet page's tests and screenshots (no tests here).

Three firms, two sites each (and one site no firm registered), two lines per site, three
stations per site: every station's inspections over the last ``hours`` hours, shaped as
the station's sync sends them (``schemas/inspection.v1.json``; a sample is checked
against it), its events (model activated, camera lost and back, backlog high and normal)
and its retained availability. The newest FAIL parts of each station have a picture,
keyed as the station's own uploader keys it (:func:`kanjian.station.sync.messages.image_key`).
One row is forged: a borealis station names an acme picture's key, which the page must
refuse to sign. Pure: the same seed and ``now`` give the same traffic.
"""

from __future__ import annotations

import random
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from kanjian.station.records import utc_iso
from kanjian.station.sync.messages import image_key

FIRMS: dict[str, tuple[str, ...]] = {
    "acme": ("sz-01", "sz-02"),
    "borealis": ("wx-01", "wx-02"),
    "cathay": ("nb-01", "nb-02"),
}
#: a site no firm registered: only a cluster-wide token sees it
UNREGISTERED = "lab-00"
LINES = {"L1": ("L1-a", "L1-b"), "L2": ("L2-a",)}
CLASSES = ("crazing", "inclusion", "patches", "pitted_surface", "rolled-in_scale", "scratches")
BUCKET = "kanjian"
PREFIX = "kanjian/v1"
#: the newest FAIL parts of each station that get a picture
PICTURES_PER_STATION = 5


@dataclass(frozen=True)
class StationSpec:
    """One station and how it behaves. ``availability``: the retained value, or None
    (it never said)."""

    firm: str | None
    site: str
    line: str
    station: str
    fail_p: float
    availability: str | None
    model: tuple[str, str]

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.site, self.line, self.station)


@dataclass
class FleetData:
    """What the stations send: messages in publish order, events, availability, pictures."""

    now: datetime
    hours: int
    stations: list[StationSpec]
    messages: list[dict[str, Any]] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    images: dict[str, bytes] = field(default_factory=dict)  # key -> JPEG bytes
    #: (station key, inspection id) of the row whose key names another firm's picture
    forged: tuple[tuple[str, str, str], str] | None = None

    def of(self, key: tuple[str, str, str]) -> StationSpec:
        return next(s for s in self.stations if s.key == key)


def stations() -> list[StationSpec]:
    """The fleet: 19 stations over 7 sites, a few offline or silent, one much worse."""
    out = []
    sites = [(f, s) for f, ss in FIRMS.items() for s in ss] + [(None, UNREGISTERED)]
    k = 0
    for firm, site in sites:
        for line, names in LINES.items():
            for name in names:
                if site == UNREGISTERED and name != "L1-a":
                    continue
                avail: str | None = "online"
                if (site, name) in (("sz-02", "L2-a"), ("wx-01", "L1-b")):
                    avail = "offline"
                if site == UNREGISTERED:
                    avail = None
                version = "1.5.0" if k % 3 else "1.4.2"
                fail_p = 0.03 + 0.01 * (k % 4) + (0.05 if (site, name) == ("nb-01", "L2-a") else 0)
                out.append(StationSpec(firm, site, line, name, fail_p, avail,
                                       ("neu-det-yolo11n", version)))  # fmt: skip
                k += 1
    return out


def picture(rng: random.Random, size: int = 200) -> bytes:
    """A steel-like grey texture with a dark scratch, as JPEG (a stand-in for a frame)."""
    g = np.random.default_rng(rng.randrange(2**32))
    img = (128 + 18 * g.standard_normal((size, size))).clip(0, 255).astype(np.uint8)
    x0, y0 = (int(v) for v in g.integers(10, size - 60, 2))
    cv2.line(img, (x0, y0), (x0 + 50, y0 + int(g.integers(-20, 20))), 40, 3)
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(img, cv2.COLOR_GRAY2BGR))
    assert ok
    return buf.tobytes()


def _event(name: str, at: datetime, s: StationSpec, data: dict[str, Any], n: int) -> dict[str, Any]:
    return {"type": "event", "version": 1, "event_id": str(uuid.UUID(int=(1 << 64) + n)),
            "event": name, "at": utc_iso(at), "site": s.site, "line": s.line,
            "station": s.station, "data": data}  # fmt: skip


def _events(data: FleetData) -> None:
    now, n = data.now, 0
    for k, s in enumerate(data.stations):
        model = {"name": s.model[0], "version": s.model[1], "sha256": f"{k:064x}"}

        def add(name: str, ago_h: float, d: dict[str, Any], s: StationSpec = s) -> None:
            nonlocal n
            n += 1
            data.events.append(_event(name, now - timedelta(hours=ago_h), s, d, n))

        add("model_activated", data.hours - 0.5, {"source": "platform", "model": model})
        if k % 4 == 1:  # the camera went away and came back
            add("camera_lost", 5.0, {"state": "reconnecting"})
            add("camera_back", 4.8, {"state": "connected", "was": "reconnecting"})
        if k % 7 == 3:  # lost half an hour ago and still away
            add("camera_lost", 0.5, {"state": "reconnecting"})
        if s.availability == "offline":
            add("sync_backlog_high", 1.0, {"backlog": 12_000 + k, "oldest_age_s": 3600.0,
                                           "threshold": 10_000})  # fmt: skip
        elif k % 5 == 2:
            add("sync_backlog_high", 10.0, {"backlog": 10_500, "oldest_age_s": 900.0,
                                            "threshold": 10_000})  # fmt: skip
            add("sync_backlog_normal", 9.0, {"backlog": 4_000, "oldest_age_s": 60.0,
                                             "threshold": 10_000})  # fmt: skip


def make_fleet(now: datetime, hours: int, per_hour: int, seed: int = 16,
               images_dir: Path | None = None) -> FleetData:  # fmt: skip
    """The traffic of :func:`stations` over the ``hours`` hours before ``now``, about
    ``per_hour`` parts per station and hour. ``images_dir``: JPEGs to use as the FAIL
    pictures (e.g. NEU-DET's), else textures made here."""
    rng = random.Random(seed)
    data = FleetData(now, hours, stations())
    pool = sorted(images_dir.glob("*.jpg")) if images_dir is not None else []
    start = now - timedelta(hours=hours)
    n = 0
    for k, s in enumerate(data.stations):
        mine = []
        for h in range(hours):
            # one hour of one station much worse: an out-of-control point on its p-chart
            spike = (s.site, s.station, h) == ("sz-01", "L1-b", hours - 6)
            for _ in range(max(1, int(rng.gauss(per_hour, per_hour**0.5)))):
                t = start + timedelta(hours=h, seconds=rng.uniform(0, 3600))
                if t >= now:
                    continue
                u = rng.random()
                fail = 0.35 if spike else s.fail_p
                verdict = ("FAIL" if u < fail else "REVIEW" if u < fail + 0.02
                           else "ERROR" if u < fail + 0.025 else "PASS")  # fmt: skip
                weights = [1 + ((c + k) % 3) * 2 for c in range(len(CLASSES))]
                dets = [] if verdict not in ("FAIL", "REVIEW") else [
                    {"class_id": c, "class_name": CLASSES[c],
                     "confidence": round(rng.uniform(0.5 if verdict == "FAIL" else 0.25, 0.97), 4),
                     "xyxy": [10.0, 20.0, 90.0, 70.0]}
                    for c in rng.choices(range(len(CLASSES)), weights, k=rng.randint(1, 3))]  # fmt: skip
                n += 1
                mine.append({
                    "type": "inspection", "version": 1, "inspection_id": str(uuid.UUID(int=n)),
                    "site": s.site, "line": s.line, "station": s.station,
                    "stream": f"{s.site}.{s.station}.stream", "seq": 0, "attempt": 1,
                    "captured_at": utc_iso(t), "judged_at": utc_iso(t + timedelta(milliseconds=45)),
                    "sent_at": utc_iso(t + timedelta(milliseconds=60)), "source_id": "cam0",
                    "frame_id": n, "trigger_id": None, "uri": None, "verdict": verdict,
                    "reason": "", "model": {"name": s.model[0], "version": s.model[1],
                                            "sha256": f"{k:064x}"},
                    "width": 200, "height": 200, "detections": dets, "probs": None,
                    "timings_ms": {"infer": 41.0}, "image": None,
                })  # fmt: skip
        mine.sort(key=lambda m: m["captured_at"])
        for seq, m in enumerate(mine, 1):
            m["seq"] = seq
        fails = [m for m in mine if m["verdict"] == "FAIL"]
        for m in fails[-PICTURES_PER_STATION:]:
            key = image_key("", s.site, s.station, m["inspection_id"], m["captured_at"], "FAIL",
                            "saved.jpg", ("FAIL", "REVIEW"), 0.0)  # fmt: skip
            assert key is not None
            m["image"] = {"bucket": BUCKET, "key": key}
            data.images[key] = pool[len(data.images) % len(pool)].read_bytes() if pool else (
                picture(rng))  # fmt: skip
        data.messages.extend(mine)
    _forge(data)
    _events(data)
    return data


def _forge(data: FleetData) -> None:
    """A borealis station's newest FAIL names an acme picture's key (never signed)."""
    acme = [m for m in data.messages if m["site"] == "sz-01" and m["image"]]
    victim = [m for m in data.messages if (m["site"], m["station"]) == ("wx-02", "L1-a")
              and m["image"]][-1]  # fmt: skip
    del data.images[victim["image"]["key"]]
    victim["image"] = dict(acme[0]["image"])
    data.forged = ((victim["site"], victim["line"], victim["station"]), victim["inspection_id"])
