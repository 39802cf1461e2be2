"""``kanjian model compare A B --data DIR``: two models scored on one labelled folder.

The wiring only: the work is :func:`kanjian.training.compare.compare_models` (no torch,
no Ultralytics: it runs on a station). Mounted on ``kanjian model`` by
:mod:`kanjian.appliance_api.cli.model`.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.table import Table

if TYPE_CHECKING:
    from kanjian.training.compare import Comparison

out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)

#: how much an archive may unpack to here (as ``kanjian model check``)
_MAX_UNPACKED = 8 * 2**30


def _fail(message: str) -> typer.Exit:
    err.print(f"error: {message}", markup=False, highlight=False)
    return typer.Exit(2)


@contextmanager
def _model_path(given: Path) -> Iterator[Path]:
    """A bundle folder or .onnx as it is; an archive unpacked into a temporary folder."""
    from kanjian.station.state.archive import ArchiveRejected, extract_bundle

    if given.is_dir() or given.suffix.lower() == ".onnx":
        yield given
        return
    if not given.exists():
        raise _fail(f"{given}: no such file or folder")
    with tempfile.TemporaryDirectory(prefix="kanjian-compare-") as tmp:
        try:
            yield extract_bundle(given, Path(tmp) / "bundle", _MAX_UNPACKED)
        except ArchiveRejected as e:
            raise _fail(f"{given}: {e}") from e


def _num(x: float | None, digits: int = 3) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def _print(c: Comparison) -> None:
    out.print(
        f"data: {c.data} ({c.source}): {c.images} images, {c.defective} defective "
        f"(label boxes), {c.good} good (no label box)",
        markup=False,
    )
    for m in (c.a, c.b):
        out.print(
            f"{m.label}: {m.path}: {m.name} {m.version} (sha256 {m.sha256[:12]}, {m.task}) on "
            f"{m.provider}; verdicts at its conf {m.conf:g} and its rules",
            markup=False,
        )
    t = Table(title="per model (mAP: predictions down to conf 0.001, as Ultralytics validates)")
    t.add_column("")
    t.add_column("A", justify="right")
    t.add_column("B", justify="right")
    t.add_row("mAP50", _num(c.a.map.map50), _num(c.b.map.map50))
    t.add_row("mAP50-95", _num(c.a.map.map50_95), _num(c.b.map.map50_95))
    for ca, cb in zip(c.a.map.classes, c.b.map.classes, strict=True):
        t.add_row(f"AP50 {ca.class_name} ({ca.labels} labels)", _num(ca.ap50), _num(cb.ap50))
    t.add_row("boxes at its conf", str(c.a.boxes), str(c.b.boxes))
    for name in c.a.verdicts:
        t.add_row(name, str(c.a.verdicts[name]), str(c.b.verdicts[name]))
    for what in ("precision", "recall"):
        row = [f"defect call {what} vs labels"]
        for m in (c.a, c.b):
            s = m.vs_labels
            den = s.tp + (s.fp if what == "precision" else s.fn)
            row.append(f"{_num(getattr(s, what))} ({s.tp}/{den})")
        t.add_row(*row)
    out.print(t)
    v = c.verdicts
    mt = Table(title="verdicts: rows A, columns B")
    mt.add_column("A \\ B")
    for label in v.labels:
        mt.add_column(label, justify="right")
    for label, counts in zip(v.labels, v.matrix, strict=True):
        mt.add_row(label, *(str(x) for x in counts))
    out.print(mt)
    out.print(
        f"verdict agreement {_num(v.agreement)} ({v.agreed}/{v.n}), Cohen's kappa "
        f"{_num(v.kappa)}; defect call agreement {_num(v.defect_call_agreement)} "
        f"({v.defect_call_agreed}/{v.defect_call_pairs})",
        markup=False,
    )
    d = c.detections
    bt = Table(title=f"boxes at each bundle's conf, paired at IoU >= {d.iou_threshold:g}")
    for col in ("class", "A", "B", "matched", "only A", "only B", "other class A/B", "mean IoU"):
        bt.add_column(col, justify="left" if col == "class" else "right")
    bt.add_column("agreement", justify="right")
    for k in d.classes:
        bt.add_row(
            k.class_name, str(k.a_boxes), str(k.b_boxes), str(k.matched), str(k.only_a),
            str(k.only_b), f"{k.swapped_a}/{k.swapped_b}", _num(k.mean_iou), _num(k.agreement),
        )  # fmt: skip
    bt.add_row(
        "all", str(d.a_boxes), str(d.b_boxes), str(d.matched), str(d.only_a), str(d.only_b),
        f"{d.swapped}/{d.swapped}", _num(d.mean_iou), _num(d.agreement),
    )  # fmt: skip
    out.print(bt)
    out.print(f"images whose boxes agree: {d.images_agreeing}/{d.images}", markup=False)
    for swap in d.class_swaps:
        out.print(f"  A {swap.a_class} = B {swap.b_class}: {swap.count}", markup=False)
    for line in c.problems[:10]:
        out.print(f"note: {line}", markup=False)
    if len(c.problems) > 10:
        out.print(f"note: {len(c.problems) - 10} more label problems (--json lists all)")


def compare_command(
    a: Annotated[
        Path, typer.Argument(metavar="A", help="model A: bundle folder, archive or .onnx")
    ],
    b: Annotated[
        Path, typer.Argument(metavar="B", help="model B: bundle folder, archive or .onnx")
    ],
    data: Annotated[
        Path,
        typer.Option(
            help="labelled folder: a YOLO dataset (data.yaml, as kanjian dataset import / "
            "export write) or images/ + labels/ (+ classes.txt)"
        ),
    ],
    split: Annotated[str, typer.Option(help="data.yaml's split to score on")] = "val",
    providers: Annotated[
        str, typer.Option(help="execution providers, as a station lists them (e.g. cuda,cpu)")
    ] = "cpu",
    iou: Annotated[
        float,
        typer.Option(min=0.05, max=1.0, help="IoU at which two models' boxes are one object"),
    ] = 0.5,
    json_file: Annotated[
        Path | None, typer.Option("--json", help="also write the whole comparison as JSON")
    ] = None,
) -> None:
    """Score two models on one labelled folder, side by side.

    Per model: mAP50, mAP50-95 and per-class AP50 (computed as Ultralytics validates),
    its verdicts with its bundle's conf and rules, and its defect calls (FAIL or REVIEW)
    against the labels (an image with label boxes is a defective part, one without a
    good part). Between the two: the verdict agreement matrix and, per class, how many
    boxes the other model found too. Both models must have the folder's classes, in
    the same order.
    """
    from kanjian.inference.bundle import BundleError
    from kanjian.inference.model import load_model
    from kanjian.inference.session import ModelLoadError
    from kanjian.training.compare import compare_models
    from kanjian.training.compare_data import CompareDataError, read_labelled

    chosen = tuple(p.strip() for p in providers.split(",") if p.strip()) or ("cpu",)
    with ExitStack() as stack:
        models = []
        for given in (a, b):
            path = stack.enter_context(_model_path(given))
            try:
                models.append(load_model(path, chosen))
            except (ModelLoadError, BundleError, OSError) as e:
                raise _fail(f"{given}: {e}") from e
        from kanjian.appliance_api.cli.progress import ReadProgress

        progress = ReadProgress(err, "comparing", unit="images")
        try:
            labelled = read_labelled(data, split, tuple(models[0].info.class_names))
            result = compare_models(
                models[0],
                models[1],
                labelled,
                shown=(str(a), str(b)),
                iou_threshold=iou,
                progress=progress,
            )
        except CompareDataError as e:
            raise _fail(str(e)) from e
        finally:
            progress.close()
    _print(result)
    if json_file is not None:
        json_file.write_text(
            json.dumps(asdict(result), indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
        )
        out.print(f"written: {json_file}", markup=False)
