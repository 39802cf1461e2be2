"""What several command groups share: loading the station config the same way."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from kanjian.station.demos import DEFAULT_DEMO, DEMOS  # standard library only: cheap

console = Console(stderr=True)

DemoOpt = Annotated[
    str | None,
    typer.Option(
        "--demo",
        metavar="NAME",
        help="which embedded demo station runs when no config is given: "
        + "; ".join(
            f"{d.name} ({d.summary}{', the default' if d.name == DEFAULT_DEMO else ''})"
            for d in DEMOS.values()
        ),
        show_default=False,
    ),
]


def load_station_config(
    config: Path | None, data_dir: Path | None = None, demo: str | None = None
) -> Any:
    """The station config from ``config``, else the embedded demo station ``demo``
    (default: NEU-DET), with ``store.data_dir`` replaced by ``data_dir`` when given.

    A config problem, an unknown demo (the line lists the known ones) or both a config
    and a demo are printed as one line and end the command with exit status 2.
    """
    from kanjian.station.config import ConfigError, default_config, load_config
    from kanjian.station.demos import UnknownDemoError

    if config is not None and demo is not None:
        console.print(
            f"[red]error:[/] give a station config (--config) or a demo (--demo {demo}), not both",
            highlight=False,
        )
        raise typer.Exit(2)
    try:
        cfg = load_config(config) if config else default_config(demo=demo or DEFAULT_DEMO)
    except (ConfigError, UnknownDemoError) as e:
        console.print(f"[red]error:[/] {e}", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from e
    if data_dir is not None:
        cfg = cfg.model_copy(update={"store": cfg.store.model_copy(update={"data_dir": data_dir})})
    return cfg


def start_refusals() -> tuple[type[Exception], ...]:
    """The errors that refuse a station's start with one line and exit status 2.

    Each names its cause and fix: the data folder in use, a model that cannot be
    loaded, rules naming unknown classes, a PLC port taken, a store written by a
    newer release, too little free disk, an unreadable broker password file. Imported here, on demand, so that a
    command's ``--help`` loads none of it.
    """
    from kanjian.inference.bundle import BundleError
    from kanjian.inference.session import ModelLoadError
    from kanjian.station.datalock import DataFolderInUseError
    from kanjian.station.plc.config import PlcConfigError, PlcServerError
    from kanjian.station.ruleset import RulesError
    from kanjian.station.schema import StoreTooNewError
    from kanjian.station.store_health import LowDiskSpaceError
    from kanjian.station.sync.config import MqttSecretError

    return (
        DataFolderInUseError,
        ModelLoadError,
        BundleError,
        RulesError,
        PlcConfigError,
        PlcServerError,
        StoreTooNewError,
        LowDiskSpaceError,
        MqttSecretError,
    )
