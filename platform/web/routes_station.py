"""One station's routes: its row, its events, its latest FAIL pictures (presigned links).

A station outside the token's scope is 404, worded as for a station nobody runs.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from kanjian.platform.web import queries as Q
from kanjian.platform.web.deps import Db, State, Viewer, not_found
from kanjian.platform.web.models import EventOut, ModelOut, PictureOut, StationOut
from kanjian.platform.web.pictures import Link
from kanjian.platform.web.routes_fleet import check_exists, events_out
from kanjian.platform.web.stations import station_out

router = APIRouter(prefix="/api/stations/{site}/{line}/{station}", tags=["station"])

Limit = Annotated[int, Query(ge=1, le=200)]
NO_STORAGE = Link(None, "this platform serves no object storage (--s3-endpoint)")


@router.get("", response_model=StationOut)
def station(site: str, line: str, station: str, who: Viewer, conn: Db) -> StationOut:
    """The station as the station list shows it."""
    sql, args = Q.scoped(Q.STATIONS, who.scope, "s.site", site=site, line=line, station=station)
    row = conn.execute(sql, args).fetchone()
    if row is None:
        raise not_found(f"station {site}/{line}/{station}")
    return station_out(row)


@router.get("/events", response_model=list[EventOut])
def station_events(
    site: str, line: str, station: str, who: Viewer, conn: Db, limit: Limit = 50
) -> list[EventOut]:
    """The station's events, newest first."""
    check_exists(conn, who, site, line, station)
    sql, args = Q.scoped(Q.EVENTS, who.scope, "e.site", site=site, line=line, station=station,
                         limit=limit)  # fmt: skip
    return events_out(conn.execute(sql, args))


@router.get("/pictures", response_model=list[PictureOut])
def station_pictures(
    site: str, line: str, station: str, who: Viewer, conn: Db, state: State, limit: Limit = 12
) -> list[PictureOut]:
    """The station's latest FAIL parts with a picture in object storage, newest first,
    each with a presigned GET link (none when the page serves no object storage, or the
    row's key is not the station's own)."""
    check_exists(conn, who, site, line, station)
    sql, args = Q.scoped(Q.FAIL_PICTURES, who.scope, "site", site=site, line=line,
                         station=station, limit=limit)  # fmt: skip
    out = []
    links = state.links
    for iid, captured, verdict, top, conf, m_name, m_version, bucket, key in conn.execute(
        sql, args
    ):
        link, expires = NO_STORAGE, 0
        if links is not None:
            link, expires = links.link(site, station, iid, bucket, key), links.expires_s
        url, refused = link.url, link.refused
        out.append(
            PictureOut(
                inspection_id=str(iid), captured_at=captured, verdict=str(verdict),
                top_class=top, top_confidence=conf,
                model=ModelOut(name=m_name, version=m_version),
                url=url, refused=refused, expires_s=expires if url else 0,
            )
        )  # fmt: skip
    return out
