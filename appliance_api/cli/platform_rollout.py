"""CLI: ``kanjian platform rollout start|watch|status|abort`` and ``kanjian platform acl``.

The work lives in :mod:`kanjian.platform.rollout`, ``rollout_engine``, ``rollout_watch``
and ``broker_acl``; psycopg, boto3 and paho are imported inside the commands.
"""

from __future__ import annotations

import getpass
import json
import signal
import socket
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from kanjian.appliance_api.cli.platform_db import DbOpt, connect_migrated

console = Console(stderr=True)
out = Console()

rollout_app = typer.Typer(
    help="Staged rollouts: a bundle to canary stations, watched, then to the rest; "
    "rolled back on a regression."
)

ByOpt = Annotated[str | None, typer.Option(help="who does it, for the audit (default user@host)")]


def _who(by: str | None) -> str:
    return by or f"{getpass.getuser()}@{socket.gethostname()}"


def _fail(msg: str, code: int = 2) -> typer.Exit:
    console.print(f"[red]error:[/] {msg}")
    return typer.Exit(code)


def _pg(db: str) -> Any:
    return connect_migrated(db, "rollouts live in the platform's PostgreSQL", autocommit=True)


@rollout_app.command("start")
def rollout_start(
    db: DbOpt,
    bundle: Annotated[
        Path | None, typer.Option(help="bundle folder to pack and upload (or --s3-key)")
    ] = None,
    s3_key: Annotated[
        str | None, typer.Option(help="a bundle archive already in the bucket")
    ] = None,
    rollback_bundle: Annotated[
        list[Path] | None,
        typer.Option(
            help="bundle folder of a model a station runs now, uploaded and "
            "catalogued so it can be rolled back to (repeat for several)"
        ),
    ] = None,
    stations: Annotated[
        str | None, typer.Option(help="site/line/station,... in order: canaries first")
    ] = None,
    group: Annotated[
        str | None, typer.Option(help="every station of a site or site/line on the list")
    ] = None,
    canary: Annotated[int | None, typer.Option(min=1, help="first N stations are canaries")] = None,
    canary_share: Annotated[
        float | None, typer.Option(help="or this share of the stations (rounded up)")
    ] = None,
    window: Annotated[str, typer.Option(help="watch the canaries this long, e.g. 10m")] = "10m",
    min_inspections: Annotated[
        int, typer.Option(min=1, help="judged parts the canaries must make before judging")
    ] = 50,
    max_fail_rate_increase: Annotated[
        float, typer.Option(help="roll back above baseline + this (absolute, 0.05 = 5 points)")
    ] = 0.05,
    max_feedback_increase: Annotated[
        float,
        typer.Option(
            help="roll back when the share of parts operators said were judged wrong "
            "is above the baseline's + this"
        ),
    ] = 0.05,
    min_agreement: Annotated[
        float,
        typer.Option(
            help="where a shadow compared the new model with the old one: roll back "
            "below this verdict agreement (0: not watched)"
        ),
    ] = 0.95,
    baseline: Annotated[
        str, typer.Option(help="before: the canaries before the start; others: the rest")
    ] = "before",
    baseline_window: Annotated[str, typer.Option(help="'before' looks back this far")] = "1h",
    answer_timeout: Annotated[
        str, typer.Option(help="a station silent this long after a command refused it")
    ] = "5m",
    resend: Annotated[
        str, typer.Option(help="send an unanswered command again this often")
    ] = "60s",
    s3_endpoint: Annotated[str | None, typer.Option(help="S3 endpoint URL")] = None,
    bucket: Annotated[str, typer.Option(help="bucket for bundles")] = "kanjian",
    by: ByOpt = None,
) -> None:
    """Start a rollout (the watcher sends the commands). S3 credentials come from boto3's
    usual places (environment, ~/.aws)."""
    from kanjian.platform.bundles import BundleProblem, bundle_in_s3, upload_bundle
    from kanjian.platform.rollout import (
        RolloutPlan,
        RolloutRefused,
        canaries_for_share,
        parse_duration,
        parse_stations,
        start_rollout,
        stations_of_group,
    )
    from kanjian.station.sync.config import S3Config

    if (bundle is None) == (s3_key is None):
        raise _fail("give the bundle as --bundle DIR or --s3-key KEY (one of them)")
    if (stations is None) == (group is None):
        raise _fail("give the stations as --stations a/b/c,... or --group SITE[/LINE]")
    if canary is not None and canary_share is not None:
        raise _fail("give --canary or --canary-share, not both")
    if baseline not in ("before", "others"):
        raise _fail("--baseline is 'before' or 'others'")
    s3 = S3Config(endpoint_url=s3_endpoint, bucket=bucket)
    conn = _pg(db)
    try:
        keys = parse_stations(stations) if stations else stations_of_group(conn, str(group))
        n = canary or (canaries_for_share(len(keys), canary_share) if canary_share else 1)
        plan = RolloutPlan(
            keys, n, parse_duration(window), min_inspections, max_fail_rate_increase,
            "before" if baseline == "before" else "others", parse_duration(baseline_window),
            parse_duration(answer_timeout), parse_duration(resend), max_feedback_increase,
            min_agreement,
        )  # fmt: skip
        ref = upload_bundle(bundle, s3) if bundle else bundle_in_s3(str(s3_key), s3)
        olds = tuple(upload_bundle(p, s3) for p in rollback_bundle or [])
        rid = start_rollout(conn, ref, plan, _who(by), olds)
    except (RolloutRefused, BundleProblem) as e:
        raise _fail(str(e)) from None
    finally:
        conn.close()
    out.print(f"rollout {rid}: {ref.name} {ref.version} (model {ref.model_sha256[:12]}…) to "
              f"{len(keys)} stations, {n} canary; `kanjian platform rollout watch` sends it")  # fmt: skip


@rollout_app.command("watch")
def rollout_watch(
    db: DbOpt,
    host: Annotated[str, typer.Option(help="MQTT broker host")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="MQTT broker port")] = 1883,
    username: Annotated[
        str | None, typer.Option(help="MQTT user (kanjian-deployer where the broker has ACLs)")
    ] = None,
    password: Annotated[
        str | None, typer.Option(envvar="KANJIAN_MQTT_PASSWORD", help="MQTT password")
    ] = None,
    password_file: Annotated[Path | None, typer.Option(help="file holding the password")] = None,
    tls: Annotated[bool, typer.Option(help="connect with TLS")] = False,
    ca_file: Annotated[Path | None, typer.Option(help="CA bundle for TLS")] = None,
    prefix: Annotated[str, typer.Option(help="topic prefix")] = "kanjian/v1",
    client_id: Annotated[
        str | None, typer.Option(help="MQTT client id (default kanjian-rollout-<host>)")
    ] = None,
    interval: Annotated[str, typer.Option(help="look at the rollouts this often")] = "5s",
    once: Annotated[bool, typer.Option(help="one step of each rollout, then exit")] = False,
    actor: ByOpt = None,
) -> None:
    """Move the rollouts on until stopped: send commands, read the stations' answers and
    FAIL rates, go on or roll back. Restart it any time; several may run."""
    import logging
    import threading

    from pydantic import ValidationError

    from kanjian.platform.rollout import RolloutRefused, parse_duration
    from kanjian.platform.rollout_watch import CommandPublisher, watch
    from kanjian.station.sync.config import MqttConfig

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    _pg(db).close()  # a wrong URL or schema stops here, loudly
    try:
        every = parse_duration(interval)
        mq = MqttConfig(host=host, port=port, username=username, password=password,
                        password_file=password_file, tls=tls, ca_file=ca_file)  # fmt: skip
        mq.secret()
    except (RolloutRefused, ValidationError, ValueError) as e:
        raise _fail(str(e)) from None
    publisher = CommandPublisher(mq, client_id or f"kanjian-rollout-{socket.gethostname()}", prefix)
    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    console.print(f"watching rollouts in the database; commands via {host}:{port}")
    try:
        watch(db, publisher, _who(actor), every, stop, once)
    finally:
        publisher.close()


@rollout_app.command("status")
def rollout_status_cmd(
    db: DbOpt,
    rollout_id: Annotated[str | None, typer.Argument(help="one rollout (default: latest)")] = None,
    limit: Annotated[int, typer.Option(min=1, help="how many rollouts")] = 10,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    """Rollouts, newest first: state, numbers, stations (and with one id, its audit)."""
    from kanjian.platform.rollout import rollout_status

    conn = _pg(db)
    try:
        rows = rollout_status(conn, rollout_id, limit)
    finally:
        conn.close()
    if rollout_id and not rows:
        raise _fail(f"no rollout {rollout_id}", 1)
    if as_json:
        out.print_json(json.dumps(rows))
        return

    def pct(v: float | None) -> str:
        return "-" if v is None else f"{100 * v:.1f}%"

    for r in rows:
        out.print(f"[bold]{r['rollout_id']}[/] {r['state']}  {r['name']} {r['version']}  "
                  f"by {r['created_by']} at {r['created_at']}")  # fmt: skip
        out.print(f"  canary FAIL {pct(r['canary_rate'])} of {r['canary_judged'] or 0} judged, "
                  f"baseline {pct(r['baseline_rate'])} ({r['baseline_mode']}) of "
                  f"{r['baseline_judged'] or 0}; margin {r['max_fail_rate_increase']:g}; "
                  f"window ends {r['window_ends'] or '-'}")  # fmt: skip
        out.print(f"  judged wrong by operators {pct(r['canary_wrong_rate'])} "
                  f"({r['canary_wrong'] or 0} of {r['canary_answered'] or 0} answered), baseline "
                  f"{pct(r['baseline_wrong_rate'])}; margin {r['max_feedback_increase']:g}; "
                  f"shadow agreement {pct(r['agreement'])} of {r['shadow_frames'] or 0} frames "
                  f"(least {r['min_agreement']:g})")  # fmt: skip
        if r["reason"]:
            out.print(f"  reason: {r['reason']}")
        t = Table("#", "station", "phase", "state", "model before", "reason")
        for s in r["stations"]:
            t.add_row(str(s["position"]), f"{s['site']}/{s['line']}/{s['station']}", s["phase"],
                      s["state"], s["model_before"][:12], s["reason"] or "")  # fmt: skip
        out.print(t)
        if rollout_id:
            for a in r["audit"]:
                where = "/".join(x for x in (a["site"], a["line"], a["station"]) if x)
                out.print(f"  {a['at']}  {a['actor']}  {a['action']}  {where}")


@rollout_app.command("abort")
def rollout_abort(
    rollout_id: Annotated[str, typer.Argument(help="the rollout")],
    db: DbOpt,
    reason: Annotated[str, typer.Option(help="why, for the audit")] = "",
    by: ByOpt = None,
) -> None:
    """Stop a rollout and roll back every station that got the bundle (the watcher does it)."""
    from kanjian.platform.rollout import RolloutRefused, abort_rollout

    conn = _pg(db)
    try:
        abort_rollout(conn, rollout_id, _who(by), reason)
    except RolloutRefused as e:
        raise _fail(str(e), 1) from None
    finally:
        conn.close()
    out.print(f"rollout {rollout_id}: rolling back")


def acl_command(
    stations: Annotated[
        str,
        typer.Option(help="file of site/line/station lines, or the platform's postgresql:// URL"),
    ],
    out_dir: Annotated[Path, typer.Option("--out", help="folder to write the files into")],
    prefix: Annotated[str, typer.Option(help="topic prefix")] = "kanjian/v1",
    receiver_user: Annotated[str, typer.Option(help="the receivers' broker user")] = (
        "kanjian-receiver"
    ),
    deployer_user: Annotated[str, typer.Option(help="the deploy/rollout broker user")] = (
        "kanjian-deployer"
    ),
    rotate: Annotated[bool, typer.Option(help="new passwords for every user")] = False,
) -> None:
    """Write Mosquitto's password file and ACL: each station may publish only under its own
    topics; one password file per user under OUT/credentials/ (passwords already there kept)."""
    from kanjian.platform.broker_acl import BrokerUsers, read_station_list, write_acl

    try:
        if stations.startswith(("postgresql://", "postgres://")):
            conn = _pg(stations)
            try:
                rows = conn.execute("SELECT site, line, station FROM stations").fetchall()
            finally:
                conn.close()
            keys = read_station_list("\n".join("/".join(r) for r in rows))
        else:
            p = Path(stations)
            if not p.is_file():
                raise _fail(f"no station list at {p}: give a file or a postgresql:// URL")
            keys = read_station_list(p.read_text(encoding="utf-8"))
        files = write_acl(out_dir, keys, BrokerUsers(receiver_user, deployer_user), prefix,
                          rotate)  # fmt: skip
    except ValueError as e:
        raise _fail(str(e)) from None
    out.print(f"{len(keys)} stations: {files.passwd}, {files.acl}, {files.conf}; "
              f"passwords under {out_dir / 'credentials'} "
              f"(new: {', '.join(files.new_users) or 'none'})")  # fmt: skip
