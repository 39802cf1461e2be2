"""``kanjian platform serve``: the fleet page over the platform's PostgreSQL, with uvicorn."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from kanjian.appliance_api.http.guard import AuthGuard, allowed_hosts
from kanjian.platform.web.app import create_app
from kanjian.platform.web.db import ReadPool
from kanjian.platform.web.deps import FleetState
from kanjian.platform.web.pictures import PictureLinks
from kanjian.station.api_config import ApiConfig

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServeOptions:
    """What ``kanjian platform serve`` was given.

    Attributes:
        db: ``postgresql://`` URL of the platform database (schema at the latest).
        host, port: where to listen.
        s3_endpoint: object storage the stations upload pictures to (the browser must
            reach it: the presigned links carry this address); None: no pictures.
        s3_bucket: their bucket.
        s3_region: the region signed for.
        link_s: how long a picture link works, s.
        hosts: more ``Host`` names to answer to (``*``: any), besides localhost, this
            machine's name and the bound address.
        connections: most database connections at once.
    """

    db: str
    host: str = "127.0.0.1"
    port: int = 8090
    s3_endpoint: str | None = None
    s3_bucket: str = "kanjian"
    s3_region: str = "us-east-1"
    link_s: int = 600
    hosts: list[str] = field(default_factory=list)
    connections: int = 4


def s3_client(opts: ServeOptions) -> Any:
    """A boto3 client that signs links with Signature Version 4 (what AWS requires, MinIO
    and SeaweedFS accept), path-style; credentials from boto3's usual places."""
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3",
        endpoint_url=opts.s3_endpoint,
        region_name=opts.s3_region,
        config=Config(signature_version="s3v4", s3={"addressing_style": "path"}),
    )


def build_state(opts: ServeOptions) -> tuple[FleetState, set[str] | None]:
    """The app's state and allowed ``Host`` names; refuses a database at another schema
    (:class:`~kanjian.platform.web.db.SchemaTooOld`)."""
    api = ApiConfig.model_validate({"host": opts.host, "port": opts.port,
                                    "allowed_hosts": opts.hosts})  # fmt: skip
    pool = ReadPool(opts.db, size=opts.connections)
    pool.check_schema()
    links = None
    if opts.s3_endpoint:
        links = PictureLinks(s3_client(opts), opts.s3_bucket, opts.link_s)
    return FleetState(pool, links, AuthGuard.from_config(api)), allowed_hosts(api)


def serve(opts: ServeOptions) -> None:
    """Run the fleet page until interrupted."""
    import uvicorn

    state, hosts = build_state(opts)
    try:
        uvicorn.run(create_app(state, hosts), host=opts.host, port=opts.port, log_level="info")
    finally:
        state.pool.close()
