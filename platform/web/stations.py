"""One row of :data:`kanjian.platform.web.queries.STATIONS` as the API's :class:`StationOut`."""

from __future__ import annotations

from typing import Any

from kanjian.platform.web.models import (
    BacklogOut,
    CameraOut,
    InspectionRef,
    ModelOut,
    StationOut,
)


def _camera(event: str | None, data: Any, at: Any) -> CameraOut:
    if event is None:
        return CameraOut(state="unknown", since=None)
    if event == "camera_back":
        return CameraOut(state="connected", since=at)
    said = data.get("state") if isinstance(data, dict) else None
    return CameraOut(state=str(said) if said else "lost", since=at)


def _number(v: Any) -> float | None:
    return float(v) if isinstance(v, int | float) and not isinstance(v, bool) else None


def _backlog(event: str | None, data: Any, at: Any) -> BacklogOut:
    if event is None:
        return BacklogOut(state="unknown", entries=None, oldest_age_s=None, since=None)
    d = data if isinstance(data, dict) else {}
    entries = _number(d.get("backlog"))
    return BacklogOut(
        state="high" if event == "sync_backlog_high" else "normal",
        entries=None if entries is None else int(entries),
        oldest_age_s=_number(d.get("oldest_age_s")),
        since=at,
    )


def station_out(r: Any) -> StationOut:
    """``r``: a STATIONS row (firm, site, line, station, availability, its time, last
    received, latest inspection id/time/verdict/model name/version, camera event/data/at,
    backlog event/data/at)."""
    (firm, site, line, station, avail, avail_at, received, iid, captured, verdict,
     m_name, m_version, c_ev, c_data, c_at, b_ev, b_data, b_at) = r  # fmt: skip
    return StationOut(
        firm=firm,
        site=site,
        line=line,
        station=station,
        availability=avail if avail in ("online", "offline") else "unknown",
        availability_at=avail_at,
        last_confirmed_at=received,
        last_inspection=None
        if iid is None
        else InspectionRef(inspection_id=str(iid), captured_at=captured, verdict=str(verdict)),
        model=None if iid is None else ModelOut(name=m_name, version=m_version),
        camera=_camera(c_ev, c_data, c_at),
        backlog=_backlog(b_ev, b_data, b_at),
    )
