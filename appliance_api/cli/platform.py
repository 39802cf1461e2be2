"""CLI commands of the cluster platform's side: ``kanjian platform receive|report|deploy|serve``
(and ``token``, :mod:`kanjian.appliance_api.cli.platform_token`).

The work lives in :mod:`kanjian.platform`; paho, boto3 and the database drivers are
imported inside the commands.
"""

from __future__ import annotations

import json
import signal
import time
import uuid
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from kanjian.appliance_api.cli.platform_db import DbOpt, connect_migrated, need_pg
from kanjian.appliance_api.cli.platform_rollout import acl_command, rollout_app
from kanjian.appliance_api.cli.platform_token import token_app

console = Console(stderr=True)
out = Console()

platform_app = typer.Typer(
    help="The cluster platform's side: receivers, report, schema, sites, model rollout."
)
platform_app.add_typer(rollout_app, name="rollout")  # staged rollouts (platform_rollout.py)
platform_app.command("acl")(acl_command)  # broker credentials and ACL (platform_rollout.py)
platform_app.add_typer(token_app, name="token")

HostOpt = Annotated[str, typer.Option(help="MQTT broker host")]
PortOpt = Annotated[int, typer.Option(help="MQTT broker port")]
UserOpt = Annotated[str | None, typer.Option(help="MQTT user name")]
PasswordOpt = Annotated[
    str | None, typer.Option(envvar="KANJIAN_MQTT_PASSWORD", help="MQTT password")
]
TlsOpt = Annotated[bool, typer.Option(help="connect with TLS")]
CaOpt = Annotated[Path | None, typer.Option(help="CA bundle for TLS")]
PrefixOpt = Annotated[str, typer.Option(help="topic prefix")]


def _mqtt(
    host: str, port: int, user: str | None, pw: str | None, tls: bool, ca: Path | None
) -> Any:
    from kanjian.station.sync.config import MqttConfig

    return MqttConfig(host=host, port=port, username=user, password=pw, tls=tls, ca_file=ca)


@platform_app.command("receive")
def platform_receive(
    db: Annotated[
        str, typer.Option(help="SQLite file, or postgresql://user:pw@host/db")
    ] = "kanjian-platform.db",
    host: HostOpt = "127.0.0.1",
    port: PortOpt = 1883,
    username: UserOpt = None,
    password: PasswordOpt = None,
    tls: TlsOpt = False,
    ca_file: CaOpt = None,
    client_id: Annotated[str, typer.Option(help="stable MQTT client id")] = "kanjian-receiver",
    prefix: PrefixOpt = "kanjian/v1",
    stations: Annotated[
        str, typer.Option(help="site/line/station levels to subscribe; + is a wildcard")
    ] = "+/+/+",
    gap_check_s: Annotated[float, typer.Option(help="ask for gaps this often, s")] = 5.0,
    share: Annotated[
        str | None,
        typer.Option(
            help="MQTT 5 shared-subscription group: N receivers started with the same group "
            "(each with its own --client-id) share the inspections; PostgreSQL"
        ),
    ] = None,
    batch: Annotated[int, typer.Option(min=1, max=65_535, help="most messages per commit")] = 1000,
) -> None:
    """Receiver: store inspections once per UUID, confirm them, ask for gaps."""
    import logging
    import re

    from kanjian.platform.receiver import Receiver
    from kanjian.platform.schema import SchemaError

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    mq = _mqtt(host, port, username, password, tls, ca_file)
    try:
        rec = Receiver(mq, db, client_id, prefix, stations, batch=batch,
                       gap_check_s=gap_check_s, share=share).start()  # fmt: skip
    except (ValueError, SchemaError) as e:
        console.print(f"[red]error:[/] {e}")
        raise typer.Exit(2) from None
    shared = f" (shared as group {share})" if share else ""
    shown = re.sub(r"(://[^:/@]*):[^@]*@", r"\1:***@", db)  # no password in logs
    console.print(f"receiving {prefix}/{stations}/inspections{shared} from {host}:{port} "
                  f"into {shown}")  # fmt: skip
    stop = {"now": False}

    def _stop(*_: Any) -> None:
        stop["now"] = True

    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    while not stop["now"]:
        time.sleep(0.2)
    rec.stop()
    console.print(f"stopped: {rec.stats}")


@platform_app.command("report")
def platform_report(
    db: Annotated[str, typer.Option(help="the receiver's database")] = "kanjian-platform.db",
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    """Per station: inspections, verdicts, yield, gaps, losses, duplicates seen."""
    from dataclasses import asdict

    from kanjian.inference.types import Verdict
    from kanjian.platform.receiver_db import ReceiverDB

    if not db.startswith(("postgresql://", "postgres://")) and not Path(db).is_file():
        console.print(f"[red]error:[/] no receiver database at {db}")
        raise typer.Exit(1)
    rdb = ReceiverDB(db)
    try:
        reports = rdb.report()
    finally:
        rdb.close()
    if as_json:
        out.print_json(json.dumps([asdict(r) for r in reports]))
        return
    shown = [v.value for v in Verdict if v is not Verdict.MISSED]  # a platform never gets MISSED
    t = Table("site/line/station", "inspections", *shown, "yield",
              "through/max", "missing", "lost", "dups", "online")  # fmt: skip
    for r in reports:
        v = r.verdicts
        t.add_row(
            f"{r.site}/{r.line}/{r.station}",
            str(r.inspections),
            *(str(v.get(k, 0)) for k in shown),
            "-" if r.yield_ is None else f"{100 * r.yield_:.1f}%",
            f"{r.through}/{r.max_seq}",
            str(r.missing) + (f" {r.gaps[:3]}" if r.gaps else ""),
            str(r.lost),
            str(r.duplicates),
            r.availability or "?",
        )
    out.print(t)


#: what ``need_pg`` says lives in PostgreSQL
_IN_PG = "the platform schema (migrations, sites, the fleet's tables) lives in PostgreSQL"


@platform_app.command("migrate")
def platform_migrate(db: DbOpt) -> None:
    """Bring the platform database to the latest schema (receivers also do it when they
    start); print the versions applied. Stop receivers of older releases first."""
    import psycopg

    from kanjian.platform.schema import LATEST, SchemaError, applied, migrate

    need_pg(db, _IN_PG)
    with psycopg.connect(db) as conn:
        try:
            done = migrate(conn)
        except SchemaError as e:
            console.print(f"[red]error:[/] {e}")
            raise typer.Exit(1) from None
        have = applied(conn)
    out.print(f"schema version {max(have)} (latest {LATEST}); applied now: "
              f"{', '.join(map(str, done)) or 'nothing'}")  # fmt: skip


@platform_app.command("site")
def platform_site(
    site: Annotated[str, typer.Argument(help="site name, as stations use it in their topics")],
    firm: Annotated[str, typer.Option(help="the firm the site belongs to")],
    db: DbOpt,
) -> None:
    """Register a site as a firm's, and label the rows already stored with the firm."""
    import re

    from kanjian.platform.pg_writer import assign_site

    need_pg(db, _IN_PG)
    for what, v in (("site", site), ("firm", firm)):
        if not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", v):
            console.print(f"[red]error:[/] {what} {v!r}: use 1 to 64 letters, digits, _ . -")
            raise typer.Exit(2)
    with connect_migrated(db, _IN_PG) as conn:
        changed = assign_site(conn, site, firm)
    out.print(f"site {site} belongs to {firm}; relabelled: "
              + ", ".join(f"{t} {n}" for t, n in changed.items()))  # fmt: skip


@platform_app.command("deploy")
def platform_deploy(
    bundle: Annotated[Path, typer.Argument(help="model bundle folder (manifest.json, model.onnx)")],
    station: Annotated[str, typer.Option(help="site/line/station to deploy to")],
    s3_endpoint: Annotated[str | None, typer.Option(help="S3 endpoint URL")] = None,
    bucket: Annotated[str, typer.Option(help="bucket for bundles")] = "kanjian",
    host: HostOpt = "127.0.0.1",
    port: PortOpt = 1883,
    username: UserOpt = None,
    password: PasswordOpt = None,
    tls: TlsOpt = False,
    ca_file: CaOpt = None,
    prefix: PrefixOpt = "kanjian/v1",
) -> None:
    """Pack a bundle, upload it to object storage and send deploy_model to a station.

    S3 credentials come from boto3's usual places (environment, ~/.aws).
    """
    import tempfile

    import paho.mqtt.publish as publish

    from kanjian.inference.bundle import read_manifest
    from kanjian.station.state.archive import pack_bundle
    from kanjian.station.sync.config import S3Config
    from kanjian.station.sync.messages import StationTopics, deploy_message
    from kanjian.station.sync.objectstore import make_s3_client

    parts = station.split("/")
    if len(parts) != 3 or not all(parts):
        console.print("[red]error:[/] --station must be site/line/station")
        raise typer.Exit(2)
    m = read_manifest(bundle)
    with tempfile.TemporaryDirectory() as tmp:
        archive = Path(tmp) / "bundle.tar.gz"
        sha = pack_bundle(bundle, archive)
        key = f"bundles/{m.name}/{m.version}/{sha[:16]}.tar.gz"
        s3 = make_s3_client(S3Config(endpoint_url=s3_endpoint, bucket=bucket))
        s3.upload_file(str(archive), bucket, key)
    cid = f"deploy-{uuid.uuid4().hex[:12]}"
    topic = StationTopics(prefix, *parts).command("deploy_model")
    auth = {"username": username, "password": password} if username else None
    publish.single(topic, deploy_message(cid, key, sha, bucket), qos=1, hostname=host, port=port,
                   auth=auth, tls={"ca_certs": str(ca_file)} if tls else None)  # type: ignore[arg-type]  # fmt: skip
    out.print(f"sent {cid}: s3://{bucket}/{key} sha256 {sha} to {topic}")


@platform_app.command("serve")
def platform_serve(
    db: DbOpt,
    host: Annotated[str, typer.Option(help="address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="TCP port")] = 8090,
    s3_endpoint: Annotated[
        str | None,
        typer.Option(
            help="object storage of the stations' pictures (the browser must reach "
            "it: links point there); credentials from boto3's usual places"
        ),
    ] = None,
    s3_bucket: Annotated[str, typer.Option(help="the pictures' bucket")] = "kanjian",
    s3_region: Annotated[str, typer.Option(help="S3 region to sign for")] = "us-east-1",
    link_s: Annotated[
        int, typer.Option(min=10, max=604_800, help="how long a picture link works, s")
    ] = 600,
    allowed_host: Annotated[
        list[str] | None,
        typer.Option(help="another Host name the page answers to (repeatable; * for any)"),
    ] = None,
) -> None:
    """The fleet page and its API over the platform's PostgreSQL (read-only), for
    platform tokens (kanjian platform token create)."""
    import logging

    from kanjian.platform.web.db import SchemaTooOld
    from kanjian.platform.web.server import ServeOptions, serve

    need_pg(db, _IN_PG)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    opts = ServeOptions(db=db, host=host, port=port, s3_endpoint=s3_endpoint,
                        s3_bucket=s3_bucket, s3_region=s3_region, link_s=link_s,
                        hosts=list(allowed_host or []))  # fmt: skip
    try:
        serve(opts)
    except SchemaTooOld as e:
        console.print(f"[red]error:[/] {e}")
        raise typer.Exit(1) from None


def register(app: typer.Typer) -> None:
    """Add the ``platform`` command group to the ``kanjian`` CLI."""
    app.add_typer(platform_app, name="platform")
