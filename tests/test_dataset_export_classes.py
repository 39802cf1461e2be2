"""``kanjian dataset export``: class ids and class lists come from the model that judged."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
import yaml

from kanjian.inference.bundle import BundleManifest, write_manifest
from kanjian.inference.types import Inspection, ModelRef, Verdict
from kanjian.training.export_filter import ExportFilter
from kanjian.training.records import ProblemKind
from kanjian.training.station_export import export_station_log
from kanjian.training.station_log import read_station_log
from tests.support.station_log import (
    T0,
    Plan,
    add_feedback,
    log_plan,
    note_with,
)

MODEL_NAMES = ("patches", "crazing", "rolled-in_scale", "inclusion")  # not sorted, one unseen


def _bundle(folder: Path, model: ModelRef, names: tuple[str, ...]) -> Path:
    folder.mkdir(parents=True)
    manifest = BundleManifest(
        name=model.name,
        version=model.version,
        task="detect",
        class_names=list(names),
        imgsz=(416, 416),
        onnx_sha256=model.sha256,
    )
    write_manifest(folder, manifest)
    return folder


def _register(data: Path, model: ModelRef, path: str) -> None:
    with sqlite3.connect(data / "kanjian.db") as conn:
        conn.execute(
            "INSERT INTO models (sha256, name, version, task, path, origin, added_at) "
            "VALUES (?, ?, ?, 'detect', ?, 'config', ?)",
            [model.sha256, model.name, model.version, path, T0.isoformat()],
        )


@pytest.fixture()
def model_store(tmp_path: Path, neu_det_dir: Path) -> tuple[Path, ModelRef, list[Inspection]]:
    """Three inspections by a model whose classes are MODEL_NAMES, registered by bundle."""
    data = tmp_path / "station"
    model = ModelRef("steel", "3", "cd" * 32)
    plan: Plan = [
        ("crazing_1.jpg", Verdict.FAIL, [(1, 0.9, 10, 10, 200, 200)]),
        ("patches_1.jpg", Verdict.FAIL, [(0, 0.7, 0, 0, 416, 416)]),
        ("inclusion_1.jpg", Verdict.FAIL, [(3, 0.8, 100, 40, 180, 300), (1, 0.5, 1, 1, 9, 9)]),
    ]
    insps = log_plan(data, neu_det_dir, plan, model, MODEL_NAMES)
    _bundle(data / "models" / model.sha256, model, MODEL_NAMES)
    _register(data, model, f"models/{model.sha256}")  # relative to the data folder
    return data, model, insps


def test_class_ids_are_the_models(
    model_store: tuple[Path, ModelRef, list[Inspection]], tmp_path: Path
) -> None:
    data, _, insps = model_store
    out = tmp_path / "out"
    summary = export_station_log(data, out, val_fraction=0.0)
    raw = yaml.safe_load((out / "data.yaml").read_text())
    assert raw["names"] == dict(enumerate(MODEL_NAMES))
    assert (out / "classes.txt").read_text() == "".join(f"{n}\n" for n in MODEL_NAMES)
    assert summary.class_names == MODEL_NAMES
    assert summary.boxes_per_class["rolled-in_scale"] == 0
    ids = {
        i.inspection_id: [
            int(line.split()[0])
            for line in (out / "labels" / "train" / f"{i.inspection_id}.txt")
            .read_text()
            .split("\n")
            if line
        ]
        for i in insps
    }
    assert list(ids.values()) == [[1], [0], [3, 1]]  # the ids the model gave
    assert "classes: the model's, from its bundle" in note_with(summary, "classes:")


def test_class_list_from_a_bare_onnx_model(tmp_path: Path, neu_det_dir: Path) -> None:
    import onnx
    from onnx import TensorProto, helper

    data = tmp_path / "station"
    model = ModelRef("bare", "0", "ef" * 32)
    log_plan(data, neu_det_dir, [("crazing_1.jpg", Verdict.FAIL, [(1, 0.9, 1, 1, 9, 9)])], model,
         MODEL_NAMES)  # fmt: skip
    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    proto.ir_version = 8
    names = str(dict(enumerate(MODEL_NAMES)))  # as Ultralytics writes it
    helper.set_model_props(proto, {"task": "detect", "names": names, "imgsz": "[416, 416]"})
    onnx.save(proto, str(tmp_path / "bare.onnx"))
    _register(data, model, str(tmp_path / "bare.onnx"))
    res, _ = read_station_log(data, ExportFilter())
    assert res.class_names == MODEL_NAMES


def test_unknown_or_mixed_class_lists_need_classes(
    model_store: tuple[Path, ModelRef, list[Inspection]], tmp_path: Path, neu_det_dir: Path
) -> None:
    data, model, _ = model_store
    other = ModelRef("steel", "4", "ef" * 32)
    log_plan(data, neu_det_dir, [("patches_2.jpg", Verdict.FAIL, [(0, 0.6, 20, 30, 120, 130)])],
         other, ("crazing", "inclusion"), start=10)  # fmt: skip
    with pytest.raises(ValueError, match=r"not in the station's model registry; the log shows "
                       r"ids 0 crazing.*Give --classes"):  # fmt: skip
        read_station_log(data, ExportFilter())
    _bundle(tmp_path / "other", other, ("crazing", "inclusion"))
    _register(data, other, str(tmp_path / "other"))
    with pytest.raises(ValueError, match=r"2 models with different class lists.*--classes"):
        read_station_log(data, ExportFilter())
    res, _ = read_station_log(data, ExportFilter(model_sha256=model.sha256))
    assert res.class_names == MODEL_NAMES
    given = ("crazing", "inclusion", "patches", "rolled-in_scale")
    summary = export_station_log(data, tmp_path / "out", class_names=given, val_fraction=0.0)
    assert summary.boxes_per_class == {"crazing": 3, "inclusion": 1, "patches": 1,
                                       "rolled-in_scale": 0}  # fmt: skip
    assert any("mapped to the given list by class name" in n for n in summary.notes)


def test_only_inspections_to_export_settle_the_class_list(
    model_store: tuple[Path, ModelRef, list[Inspection]], tmp_path: Path, neu_det_dir: Path
) -> None:
    """Another model's inspections that a filter leaves out, or whose frame is gone, have
    no say in the class list; the old reader settled it from every inspection in the
    time/SQL selection, so they failed the export ("not known", "different class lists")."""
    data, _, insps = model_store
    other = ModelRef("steel", "4", "ef" * 32)
    [stray] = log_plan(data, neu_det_dir, [("patches_2.jpg", Verdict.FAIL, [(0, 0.6, 20, 30, 120, 130)])],
                   other, ("crazing", "inclusion"), start=10)  # fmt: skip
    for insp in insps:
        add_feedback(data, insp, "confirm_defect")
    # the other model is not in the registry: its class list is not known
    reviewed = export_station_log(
        data, tmp_path / "out", flt=ExportFilter(reviewed_only=True), val_fraction=0.0
    )
    assert reviewed.class_names == MODEL_NAMES
    assert sum(reviewed.images.values()) == 3
    # registered with another list: the lists differ, unless the filter leaves it out
    _bundle(tmp_path / "other", other, ("crazing", "inclusion"))
    _register(data, other, str(tmp_path / "other"))
    with pytest.raises(ValueError, match="2 models with different class lists"):
        read_station_log(data, ExportFilter())
    res, counts = read_station_log(data, ExportFilter(feedback=("confirm_defect",)))
    assert res.class_names == MODEL_NAMES
    assert counts == {"feedback_confirm_defect": 3, "feedback_not_selected": 1}
    # its saved frame is gone (deleted, retention): reported, and no say either
    next(data.rglob(f"{stray.inspection_id}.jpg")).unlink()
    res, counts = read_station_log(data, ExportFilter())
    assert res.class_names == MODEL_NAMES
    assert [(p.kind, p.file.split("#")[1]) for p in res.problems] == [
        (ProblemKind.MISSING_IMAGE, str(stray.inspection_id))
    ]
    assert counts == {"feedback_confirm_defect": 3}


def test_a_registered_bundle_that_disagrees_with_the_log_is_refused(
    tmp_path: Path, neu_det_dir: Path
) -> None:
    data = tmp_path / "station"
    model = ModelRef("steel", "5", "aa" * 32)
    log_plan(data, neu_det_dir, [("crazing_1.jpg", Verdict.FAIL, [(1, 0.9, 1, 1, 9, 9)])], model,
         MODEL_NAMES)  # fmt: skip
    _bundle(tmp_path / "b", model, tuple(sorted(MODEL_NAMES)))  # ids differ from the log's
    _register(data, model, str(tmp_path / "b"))
    with pytest.raises(ValueError, match="does not match the log: the log has class 1 = 'crazing'"):
        read_station_log(data, ExportFilter())
