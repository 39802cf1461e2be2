"""``kanjian model names show|set|reset``: the display names people read for a model's classes.

On a station (its database, like ``kanjian token``): the names set there override the
bundle's, class by class, are audited and outlive restarts; a running station shows
them from its next status poll and picture. On a bundle folder (``--bundle``): the
manifest's own ``display_names``, before the bundle is shipped. Also the parser of
``kanjian train --names-zh / --names``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from kanjian.appliance_api.cli.common import DemoOpt
from kanjian.appliance_api.cli.serve import ConfigOpt, DataDirOpt, _cli_actor

console = Console(stderr=True)
out = Console(soft_wrap=True)
names_app = typer.Typer(
    help="Show and change the names the screen shows for a model's classes.",
    no_args_is_help=True,
)

ModelOpt = Annotated[
    str | None,
    typer.Option(
        "--model",
        help="the model's sha256 (or a unique prefix); default: the one the station ran last",
    ),
]
BundleOpt = Annotated[
    Path | None,
    typer.Option("--bundle", help="change a bundle folder's manifest instead of a station"),
]


def names_from_flags(names_zh: str | None, names_file: Path | None) -> dict[str, dict[str, str]]:
    """``--names FILE`` with ``--names-zh`` over it: {lang: {class_name: name}}.

    Checked for shape here (exit 2 before anything runs); the classes are checked
    against the dataset's before training.
    """
    from kanjian.inference.display_names import (
        NamesError,
        check_display_names,
        load_names_file,
        merge_names,
        parse_pairs,
    )

    try:
        names = load_names_file(names_file) if names_file is not None else {}
        if names_zh is not None:
            names = merge_names(names, {"zh": parse_pairs(names_zh, "--names-zh")})
        return check_display_names(names)
    except NamesError as e:
        hint = "--names" if names_zh is None else "--names-zh"
        raise typer.BadParameter(str(e), param_hint=hint) from e


def _fail(message: str, code: int = 2) -> typer.Exit:
    console.print(f"[red]error:[/] {message}", highlight=False, soft_wrap=True, markup=True)
    return typer.Exit(code)


def _station(config: Path | None, data_dir: Path | None, demo: str | None) -> Any:
    """The station's display names keeper (its database, no model loaded)."""
    from kanjian.appliance_api.cli.common import load_station_config
    from kanjian.station.schema import StoreTooNewError
    from kanjian.station.state.db import ConnectionPool
    from kanjian.station.state.display_names import DisplayNamesKeeper
    from kanjian.station.store import DB_NAME

    cfg = load_station_config(config, data_dir, demo)
    db_path = cfg.store.data_dir / DB_NAME
    if not db_path.is_file():
        raise _fail(f"no station database at {db_path}: start the station once first")
    pool = ConnectionPool(db_path)
    try:
        pool.get()
    except StoreTooNewError as e:
        raise _fail(str(e)) from e
    return DisplayNamesKeeper(pool, cfg.store.data_dir)


def _pick_model(keeper: Any, model: str | None) -> str:
    from kanjian.station.state.display_names import last_model_sha

    db = keeper.pool.get()
    if model is None:
        sha = last_model_sha(keeper.pool)
        if sha is None:
            raise _fail("the station has run no model yet: name one with --model SHA256")
        return str(sha)
    rows = db.execute(
        "SELECT sha256, name, version FROM models WHERE sha256 LIKE ? ORDER BY added_at",
        [model.lower() + "%"],
    ).fetchall()
    if len(rows) == 1:
        return str(rows[0][0])
    known = db.execute("SELECT sha256, name, version FROM models ORDER BY added_at").fetchall()
    listing = "; ".join(f"{r[0][:12]} {r[1]} v{r[2]}" for r in known) or "none"
    what = "matches no" if not rows else "matches more than one"
    raise _fail(f"--model {model} {what} registered model; registered: {listing}")


def _pairs(lang: str, pairs: list[str], file: Path | None) -> dict[str, dict[str, str]]:
    from kanjian.inference.display_names import (
        NamesError,
        load_names_file,
        merge_names,
        parse_pairs,
    )

    try:
        names = load_names_file(file) if file is not None else {}
        if pairs:
            names = merge_names(names, {lang: parse_pairs(",".join(pairs), "names")})
    except NamesError as e:
        raise _fail(str(e)) from e
    if not names:
        raise _fail("give names as CLASS=NAME arguments or --file FILE")
    return names


def _print(data: dict[str, Any], as_json: bool) -> None:
    if as_json:
        out.print(json.dumps(data, ensure_ascii=False, indent=2), markup=False, highlight=False)
        return
    out.print(f"model {data['sha256'][:12]}  classes: {', '.join(data['class_names'])}")
    for lang, names in data["display_names"].items():
        for cls, name in names.items():
            src = "station" if cls in data.get("station", {}).get(lang, {}) else "bundle"
            out.print(f"  {lang}  {cls} = {name}  ({src})", markup=False, highlight=False)
    if not data["display_names"]:
        out.print("  no display names: the screen shows the class names", markup=False)


def _bundle_data(bundle: Path) -> dict[str, Any]:
    from kanjian.inference.bundle import BundleError, read_manifest

    try:
        m = read_manifest(bundle)
    except BundleError as e:
        raise _fail(str(e)) from e
    return {
        "sha256": m.onnx_sha256,
        "class_names": m.class_names,
        "display_names": m.display_names,
    }


def _station_data(n: Any) -> dict[str, Any]:
    return {
        "sha256": n.sha256,
        "class_names": list(n.class_names),
        "display_names": n.effective,
        "bundle": n.bundle,
        "station": n.station,
        "set_at": n.set_at,
        "set_by": n.set_by,
    }


@names_app.command("show")
def names_show(
    model: ModelOpt = None,
    bundle: BundleOpt = None,
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
    demo: DemoOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    """The names shown for each class, per language, and where each comes from."""
    if bundle is not None:
        _print(_bundle_data(bundle), as_json)
        return
    from kanjian.station.state.display_names import UnknownModel

    keeper = _station(config, data_dir, demo)
    try:
        _print(_station_data(keeper.get(_pick_model(keeper, model))), as_json)
    except UnknownModel as e:
        raise _fail(str(e)) from e
    finally:
        keeper.pool.close_all()


@names_app.command("set")
def names_set(
    pairs: Annotated[
        list[str] | None,
        typer.Argument(metavar="[CLASS=NAME]...", help="e.g. scratches=划痕 crazing=龟裂"),
    ] = None,
    lang: Annotated[str, typer.Option(help="language of the CLASS=NAME pairs")] = "zh",
    file: Annotated[
        Path | None,
        typer.Option(help="YAML/JSON {lang: {class_name: name}}; the pairs win over it"),
    ] = None,
    model: ModelOpt = None,
    bundle: BundleOpt = None,
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
    demo: DemoOpt = None,
) -> None:
    """Add or change names (the others stay): on the station, or in a bundle's manifest."""
    from kanjian.inference.display_names import NamesError, merge_names

    names = _pairs(lang, pairs or [], file)
    if bundle is not None:
        from kanjian.inference.bundle import BundleError, read_manifest, write_manifest

        try:
            m = read_manifest(bundle)
            merged = merge_names(m.display_names, names)
            new = type(m).model_validate({**m.model_dump(), "display_names": merged})
        except (BundleError, ValueError) as e:
            raise _fail(str(e)) from e
        write_manifest(bundle, new)
        _print(_bundle_data(bundle), False)
        return
    from kanjian.station.state.display_names import UnknownModel

    keeper = _station(config, data_dir, demo)
    try:
        sha = _pick_model(keeper, model)
        merged = merge_names(keeper.get(sha).station, names)
        _print(_station_data(keeper.set(sha, merged, _cli_actor())), False)
    except (UnknownModel, NamesError) as e:
        raise _fail(str(e)) from e
    finally:
        keeper.pool.close_all()


@names_app.command("reset")
def names_reset(
    model: ModelOpt = None,
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
    demo: DemoOpt = None,
) -> None:
    """Drop the names set on the station for the model: the bundle's are shown again."""
    from kanjian.station.state.display_names import UnknownModel

    keeper = _station(config, data_dir, demo)
    try:
        _print(_station_data(keeper.reset(_pick_model(keeper, model), _cli_actor())), False)
    except UnknownModel as e:
        raise _fail(str(e)) from e
    finally:
        keeper.pool.close_all()
