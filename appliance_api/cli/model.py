"""``kanjian model check``: a bundle folder, a bundle archive (.zip / .tar.gz / .tar, as
uploaded to a station) or a bare ``.onnx``, checked as the station would take it."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from kanjian.appliance_api.cli.model_compare import compare_command
from kanjian.appliance_api.cli.model_names import names_app
from kanjian.appliance_api.cli.model_shadow import promote_command, shadow_app

out = Console(soft_wrap=True)
model_app = typer.Typer(
    help="Check model bundles; compare two on labelled images; name their classes; shadow "
    "and promote a model on a station.",
    no_args_is_help=True,
)
model_app.add_typer(names_app, name="names")
model_app.command("compare")(compare_command)
model_app.add_typer(shadow_app, name="shadow")
model_app.command("promote")(promote_command)

#: how much an archive may unpack to here (a station's own limit is api.max_unpacked_mb)
_MAX_UNPACKED = 8 * 2**30


def _check_folder(bundle: Path, shown: Path, providers: tuple[str, ...], fallback: bool) -> None:
    from kanjian.inference.golden import check_bundle

    report = check_bundle(bundle, providers, allow_fallback=fallback)
    for line in report.problems:
        out.print(f"FAIL {line}", markup=False)
    if not report.ok:
        raise typer.Exit(1)
    out.print(
        f"OK {shown}: {report.images} golden images reproduced on {report.provider}",
        markup=False,
    )
    _check_weights(bundle)


def _check_weights(bundle: Path) -> None:
    """One line on the training weights a bundle carries (the station never reads them)."""
    from kanjian.inference.bundle import read_manifest, sha256_file

    ref = read_manifest(bundle).training.weights
    if ref is None:
        return
    path = bundle / ref.file
    if not path.is_file():
        says = "is missing"
    elif sha256_file(path) != ref.sha256:
        says = "does not match the manifest's sha256"
    else:
        out.print(
            f"OK {ref.file}: sha256 as the manifest records ({ref.bytes / 2**20:.1f} MiB): "
            "kanjian train --model BUNDLE_FOLDER continues from it",
            markup=False,
        )
        return
    out.print(f"note: {ref.file} {says}: kanjian train --model refuses the bundle", markup=False)


def _check_onnx(onnx: Path, providers: tuple[str, ...], fallback: bool) -> None:
    from kanjian.inference.bundle import BundleError
    from kanjian.inference.model import load_model
    from kanjian.inference.session import ModelLoadError

    try:
        m = load_model(onnx, providers, allow_fallback=fallback)
    except (ModelLoadError, BundleError) as e:
        out.print(f"FAIL {e}", markup=False)
        raise typer.Exit(1) from e
    info = m.info
    out.print(
        f"OK {onnx}: loads on {m.session_info.provider} ({info.task}, "
        f"{len(info.class_names)} classes, input {info.imgsz[1]}x{info.imgsz[0]}, sha256 "
        f"{info.sha256[:12]}); a bare "
        ".onnx has no manifest hash or golden set to check",
        markup=False,
    )


@model_app.command("check")
def model_check_command(
    bundle: Annotated[
        Path,
        typer.Argument(help="bundle folder, bundle archive (.zip / .tar.gz / .tar) or .onnx"),
    ],
    providers: Annotated[
        str,
        typer.Option(
            help="execution providers to replay on, as a station lists them "
            "(e.g. cuda,cpu; tensorrt,cuda,cpu)"
        ),
    ] = "cpu",
    allow_fallback: Annotated[
        bool,
        typer.Option(
            "--allow-fallback",
            help="when the first provider cannot run the model, replay on the next one (as "
            "a station with model.allow_fallback: true would) instead of failing",
        ),
    ] = False,
) -> None:
    """Verify a bundle: ONNX hash against the manifest, then replay its golden set.

    An archive is unpacked as a station's upload is (same checks), into a temporary
    folder; a bare .onnx is loaded and described (it carries nothing to verify). When
    the first of --providers cannot run the model, that fails (naming the cause) unless
    --allow-fallback is given.
    """
    from kanjian.station.state.archive import ArchiveRejected, extract_bundle

    chosen = tuple(p.strip() for p in providers.split(",") if p.strip()) or ("cpu",)
    if bundle.is_dir():
        _check_folder(bundle, bundle, chosen, allow_fallback)
    elif not bundle.exists():
        out.print(f"FAIL {bundle}: no such file or folder", markup=False)
        raise typer.Exit(1)
    elif bundle.suffix.lower() == ".onnx":
        _check_onnx(bundle, chosen, allow_fallback)
    else:
        with tempfile.TemporaryDirectory(prefix="kanjian-check-") as tmp:
            try:
                root = extract_bundle(bundle, Path(tmp) / "bundle", _MAX_UNPACKED)
            except ArchiveRejected as e:
                out.print(f"FAIL {bundle}: {e}", markup=False)
                raise typer.Exit(1) from e
            _check_folder(root, bundle, chosen, allow_fallback)
