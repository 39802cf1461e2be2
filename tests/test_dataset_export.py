"""``kanjian dataset export``: a real station store (written by ResultStore) back to YOLO."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path
from xml.etree import ElementTree

import pytest
import yaml

from kanjian.inference.types import Inspection
from kanjian.training.export_filter import ExportFilter
from kanjian.training.layout import dataset_sha256
from kanjian.training.station_export import export_station_log
from kanjian.training.station_log import read_station_log
from kanjian.training.yolo_source import read_yolo
from tests.support.station_log import (
    NAMES,
    T0,
    add_feedback,
    labels_by_id,
    labels_of,
    note_with,
)


def test_export_applies_feedback_and_confidence(
    station_dir: tuple[Path, list[Inspection]], tmp_path: Path
) -> None:
    data, insps = station_dir
    add_feedback(data, insps[1], "wrong_class", "crazing")  # inclusion -> crazing
    add_feedback(data, insps[2], "confirm_defect")
    add_feedback(data, insps[3], "wrong_class", "inclusion")
    add_feedback(data, insps[3], "not_defect")  # the latest feedback wins
    summary = export_station_log(data, tmp_path / "out", class_names=NAMES, val_fraction=0.0)
    labels = {k.split(".")[0]: v for k, v in labels_of(tmp_path / "out").items()}
    ids = [str(i.inspection_id) for i in insps]
    assert labels == {
        ids[0]: [("crazing", (10.0, 10.0, 200.0, 200.0))],  # the 0.1 box is below 0.25
        ids[1]: [("crazing", (100.0, 40.0, 180.0, 300.0))],
        ids[2]: [("patches", (0.0, 0.0, 416.0, 416.0))],
        ids[3]: [],
        ids[4]: [],
    }
    assert summary.images_without_labels == 2
    assert summary.boxes_per_class == {"crazing": 2, "inclusion": 0, "patches": 1}
    assert any("feedback_not_defect 1" in n and "no_feedback 2" in n for n in summary.notes)
    saved = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert saved["notes"] == list(summary.notes)


def test_export_filters(station_dir: tuple[Path, list[Inspection]], tmp_path: Path) -> None:
    data, insps = station_dir
    add_feedback(data, insps[0], "confirm_defect")
    reviewed = export_station_log(
        data, tmp_path / "a", flt=ExportFilter(reviewed_only=True), class_names=NAMES
    )
    assert sum(reviewed.images.values()) == 1
    window = export_station_log(
        data,
        tmp_path / "b",
        flt=ExportFilter(since=(T0 + timedelta(minutes=1)).isoformat(),
                         until=(T0 + timedelta(minutes=3)).isoformat(), verdicts=("FAIL",)),
        class_names=NAMES,
    )  # fmt: skip
    assert sum(window.images.values()) == 2
    low = export_station_log(
        data, tmp_path / "c", flt=ExportFilter(label_conf=0.05), class_names=NAMES
    )
    assert low.boxes_per_class["inclusion"] == 2  # the 0.1 box now counts


def test_export_reports_a_lost_image(
    station_dir: tuple[Path, list[Inspection]], tmp_path: Path
) -> None:
    data, insps = station_dir
    lost = next(data.rglob(f"{insps[2].inspection_id}.jpg"))
    lost.unlink()
    summary = export_station_log(data, tmp_path / "out", class_names=NAMES)
    assert summary.problem_counts == {"missing_image": 1}
    assert str(insps[2].inspection_id) in summary.problems[0]
    assert sum(summary.images.values()) == 4


def test_cli_dataset_export(station_dir: tuple[Path, list[Inspection]], tmp_path: Path) -> None:
    data, _ = station_dir
    exe = Path(sys.executable).parent / "kanjian"
    run = subprocess.run(
        [str(exe), "dataset", "export", str(data), str(tmp_path / "out"), "--json",
         "--classes", ",".join(NAMES)],
        capture_output=True, text=True, timeout=120, env=dict(os.environ),
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout)["source_format"] == "station"
    missing = subprocess.run(
        [str(exe), "dataset", "export", str(tmp_path / "nowhere"), str(tmp_path / "o2")],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert missing.returncode == 2 and "station database not found" in missing.stderr


def test_cli_conf_band_help_says_no_detection_counts_as_0() -> None:
    """--min-conf/--max-conf have no default; the old "(none: 0)" read like a default of 0."""
    exe = Path(sys.executable).parent / "kanjian"
    env = {**os.environ, "COLUMNS": "200", "TERMINAL_WIDTH": "200", "NO_COLOR": "1"}
    run = subprocess.run([str(exe), "dataset", "export", "--help"], capture_output=True,
                         text=True, timeout=120, env=env)  # fmt: skip
    assert run.returncode == 0, run.stderr
    text = " ".join(run.stdout.replace("│", " ").split())  # the help table may wrap lines
    for bound in ("at least", "at most"):
        assert f"score is {bound} this (an inspection with no detection counts as 0)" in text
    assert "(none: 0)" not in text


def test_class_filter_selects_images_and_keeps_their_boxes(
    station_dir: tuple[Path, list[Inspection]], tmp_path: Path
) -> None:
    data, insps = station_dir
    ids = [str(i.inspection_id) for i in insps]
    flt = ExportFilter(label_conf=0.05, has_classes=("inclusion",))
    export_station_log(data, tmp_path / "a", flt=flt, class_names=NAMES, val_fraction=0.0)
    assert labels_by_id(
        tmp_path / "a"
    ) == {  # crazing_1 is chosen by its inclusion box, and keeps both
        ids[0]: [("crazing", (10.0, 10.0, 200.0, 200.0)), ("inclusion", (5.0, 5.0, 50.0, 50.0))],
        ids[1]: [("inclusion", (100.0, 40.0, 180.0, 300.0))],
    }
    with pytest.raises(ValueError, match="has_classes: scratch not in the class list"):
        export_station_log(
            data, tmp_path / "b", flt=ExportFilter(has_classes=("scratch",)), class_names=NAMES
        )


def test_a_narrower_class_list_leaves_images_out_instead_of_emptying_them(
    station_dir: tuple[Path, list[Inspection]], tmp_path: Path
) -> None:
    data, insps = station_dir
    ids = [str(i.inspection_id) for i in insps]
    summary = export_station_log(
        data, tmp_path / "out", class_names=("crazing", "inclusion"), val_fraction=0.0
    )
    labels = labels_by_id(tmp_path / "out")
    assert ids[2] not in labels  # its patches defect must not become a background image
    assert labels[ids[3]] == [("crazing", (20.0, 30.0, 120.0, 130.0))]
    assert labels[ids[4]] == []  # the PASS image with no detection is still background
    assert summary.images_without_labels == 1
    assert summary.problem_counts == {"unknown_class": 1}
    assert ids[2] in summary.problems[0] and "image left out" in summary.problems[0]
    assert "left_out_class_not_listed 1" in note_with(summary, "station log")


def test_confidence_range_selects_inspections_apart_from_the_label_threshold(
    station_dir: tuple[Path, list[Inspection]], tmp_path: Path
) -> None:
    data, insps = station_dir
    ids = [str(i.inspection_id) for i in insps]  # top scores 0.9, 0.8, 0.7, 0.6, none (0)

    def chosen(flt: ExportFilter) -> set[str]:
        res, _ = read_station_log(data, flt, NAMES)
        return {r.image.stem for r in res.records}

    assert chosen(ExportFilter(min_conf=0.65, max_conf=0.85)) == {ids[1], ids[2]}
    assert chosen(ExportFilter(min_conf=0.9)) == {ids[0]}  # both bounds are inclusive
    assert chosen(ExportFilter(max_conf=0.5)) == {ids[4]}  # no detection counts as 0
    res, counts = read_station_log(
        data, ExportFilter(min_conf=0.65, max_conf=0.85, label_conf=0.75), NAMES
    )
    assert [(r.image.stem, len(r.boxes)) for r in res.records] == [(ids[1], 1)]
    assert counts["left_out_all_below_label_conf"] == 1  # patches_1's 0.7 box: not background
    with pytest.raises(ValueError, match=r"min_conf \(0.6\) must not be above max_conf \(0.5\)"):
        ExportFilter(min_conf=0.6, max_conf=0.5)
    with pytest.raises(ValueError, match=r"max_conf must be in \[0, 1\]"):
        ExportFilter(max_conf=1.5)


def test_include_reviewed_adds_the_answered_inspections_to_the_band(
    station_dir: tuple[Path, list[Inspection]], tmp_path: Path
) -> None:
    """The learning loop's export: the uncertain band OR an operator's answer, in one set."""
    data, insps = station_dir
    ids = [str(i.inspection_id) for i in insps]  # top scores 0.9, 0.8, 0.7, 0.6, none (0)
    add_feedback(data, insps[0], "not_defect")  # above the band: a false alarm
    add_feedback(data, insps[1], "confirm_defect")  # in the band and answered: taken once
    add_feedback(data, insps[3], "wrong_class", "crazing")  # below the band
    add_feedback(data, insps[4], "confirm_defect")  # a missed defect: no box to say where

    def chosen(**kw: object) -> tuple[set[str], dict[str, int]]:
        res, counts = read_station_log(data, ExportFilter(min_conf=0.65, max_conf=0.85, **kw),
                                       NAMES)  # fmt: skip
        return {r.image.stem for r in res.records}, counts

    assert chosen()[0] == {ids[1], ids[2]}
    got, counts = chosen(include_reviewed=True)
    assert got == {ids[0], ids[1], ids[2], ids[3]}
    assert counts["left_out_defect_feedback_without_box"] == 1  # ids[4], counted
    # the bounds on what the model said are lifted for answered rows; the others are not
    assert chosen(include_reviewed=True, verdicts=("PASS",))[0] == {ids[0], ids[1], ids[3]}
    assert chosen(include_reviewed=True, since=T0 + timedelta(minutes=2))[0] == {ids[2], ids[3]}
    assert chosen(include_reviewed=True, feedback=("not_defect",))[0] == {ids[0]}
    # through the CLI: the answers correct the labels as always
    exe = Path(sys.executable).parent / "kanjian"
    out = tmp_path / "loop"
    run = subprocess.run(
        [str(exe), "dataset", "export", str(data), str(out), "--classes", ",".join(NAMES),
         "--min-conf", "0.65", "--max-conf", "0.85", "--include-reviewed", "--no-split"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    labels = labels_by_id(out)
    assert set(labels) == {ids[0], ids[1], ids[2], ids[3]}
    assert labels[ids[0]] == []  # not_defect: a true negative
    assert {c for c, _ in labels[ids[3]]} == {"crazing"}  # wrong_class: the class named


def test_time_bounds_are_parsed_to_utc(
    station_dir: tuple[Path, list[Inspection]], tmp_path: Path
) -> None:
    data, insps = station_dir  # captured 08:00 ... 08:04 UTC on 2026-01-05
    ids = [str(i.inspection_id) for i in insps]

    def chosen(**kw: str | datetime) -> list[str]:
        res, _ = read_station_log(data, ExportFilter(**kw), NAMES)  # type: ignore[arg-type]
        return [r.image.stem for r in res.records]

    assert chosen(since="2026-01-05T17:01:00+09:00") == ids[1:]  # = 08:01 UTC
    assert chosen(until="2026-01-05T08:02Z") == ids[:2]
    assert chosen(since="2026-01-05", until="2026-01-05") == ids  # the whole UTC day
    assert chosen(until="2026-01-04") == []
    assert chosen(since="2026-01-05T08:03") == ids[3:]  # no offset: UTC
    assert chosen(since=datetime(2026, 1, 5, 3, 4, tzinfo=timezone(timedelta(hours=-5)))) == [
        ids[4]
    ]
    flt = ExportFilter(since="2026-11-27", until="2026-11-27")
    assert flt.since_utc == datetime(2026, 11, 27, tzinfo=timezone.utc)
    assert flt.until_utc == datetime(2026, 11, 28, tzinfo=timezone.utc)
    with pytest.raises(ValueError, match="since: 'yesterday' is not an ISO 8601 date or time"):
        ExportFilter(since="yesterday")
    with pytest.raises(ValueError, match="until: '2026-13-01' is not"):
        ExportFilter(until="2026-13-01")
    with pytest.raises(ValueError, match="must be before until"):
        ExportFilter(since="2026-01-06", until="2026-01-05")


def test_verdicts_are_case_insensitive_and_checked(
    station_dir: tuple[Path, list[Inspection]],
) -> None:
    data, insps = station_dir
    res, _ = read_station_log(data, ExportFilter(verdicts=("fail", " Pass ")), NAMES)
    assert len(res.records) == 5
    res, _ = read_station_log(data, ExportFilter(verdicts=("pass",)), NAMES)
    assert [r.image.stem for r in res.records] == [str(insps[4].inspection_id)]
    with pytest.raises(ValueError, match="verdict FAILED unknown; valid: PASS, FAIL, REVIEW"):
        ExportFilter(verdicts=("failed",))


def test_no_split_classes_txt_and_label_studio_predictions(
    station_dir: tuple[Path, list[Inspection]], tmp_path: Path
) -> None:
    data, insps = station_dir
    ids = [str(i.inspection_id) for i in insps]
    add_feedback(data, insps[3], "not_defect")
    out = tmp_path / "review"
    summary = export_station_log(data, out, class_names=NAMES, split=False)
    assert sorted(p.name for p in (out / "images").iterdir()) == sorted(f"{i}.jpg" for i in ids)
    assert len(list((out / "labels").glob("*.txt"))) == 5
    assert not (out / "images" / "train").exists() and not (out / "labels" / "train").exists()
    raw = yaml.safe_load((out / "data.yaml").read_text())
    assert raw["train"] == raw["val"] == "images"
    assert (out / "classes.txt").read_text() == "crazing\ninclusion\npatches\n"
    assert summary.images == {"train": 5, "val": 0} and summary.val_fraction == 0.0
    assert summary.data_sha256 == dataset_sha256(out)
    labels = labels_by_id(out)
    assert labels[ids[0]] == [("crazing", (10.0, 10.0, 200.0, 200.0))]
    # Label Studio's YOLO layout: images/, labels/ and classes.txt, no data.yaml
    flat = tmp_path / "flat"
    shutil.copytree(out, flat)
    (flat / "data.yaml").unlink()
    res = read_yolo(flat)
    assert res.class_names == NAMES
    assert {r.image.stem: len(r.boxes) for r in res.records} == {
        k: len(v) for k, v in labels.items()
    }

    tasks = json.loads((out / "label_studio.json").read_text())
    by_id = {t["data"]["inspection_id"]: t for t in tasks}
    assert sorted(by_id) == sorted(ids)
    for t in tasks:  # each image URL is the local-files prefix + a path inside the export
        rel = t["data"]["image"].removeprefix("/data/local-files/?d=")
        assert rel.startswith("images/") and (out / rel).is_file()
    first = by_id[ids[0]]["predictions"]
    assert len(first) == 1 and first[0]["model_version"] == f"neu 1 ({'ab' * 6})"
    assert first[0]["score"] == pytest.approx(0.9)
    [region] = first[0]["result"]  # the 0.1 box is below --label-conf
    assert region["type"] == "rectanglelabels" and region["score"] == pytest.approx(0.9)
    assert (region["original_width"], region["original_height"]) == (416, 416)
    v = region["value"]
    assert v["rectanglelabels"] == ["crazing"]
    assert (v["x"], v["y"], v["width"], v["height"]) == pytest.approx(
        (10 / 416 * 100, 10 / 416 * 100, 190 / 416 * 100, 190 / 416 * 100), abs=1e-3
    )
    assert by_id[ids[3]]["predictions"][0]["result"] == []  # not_defect: no boxes
    assert by_id[ids[3]]["data"]["feedback"] == "not_defect"
    assert len({r["id"] for t in tasks for p in t["predictions"] for r in p["result"]}) == 3
    config = ElementTree.fromstring((out / "label_studio.xml").read_text())
    rect = config.find("RectangleLabels")
    img = config.find("Image")
    assert rect is not None and img is not None
    assert (rect.get("name"), rect.get("toName")) == (region["from_name"], region["to_name"])
    assert img.get("name") == region["to_name"] and img.get("value") == "$image"
    # each label's class id as category: Label Studio's YOLO export keeps the ids then
    # (without it, it numbers the labels alphabetically)
    labels = [(lab.get("value"), lab.get("category")) for lab in rect.findall("Label")]
    assert labels == [(n, str(i)) for i, n in enumerate(NAMES)]


def test_label_studio_image_root_is_configurable(
    station_dir: tuple[Path, list[Inspection]], tmp_path: Path
) -> None:
    data, _ = station_dir
    out = tmp_path / "out"
    export_station_log(data, out, class_names=NAMES, ls_image_root="http://nas:8081/review/")
    tasks = json.loads((out / "label_studio.json").read_text())
    for t in tasks:
        rel = t["data"]["image"].removeprefix("http://nas:8081/review/")
        assert rel.startswith("images/train/") or rel.startswith("images/val/")
        assert (out / rel).is_file()


def test_operator_feedback_is_honoured(
    station_dir: tuple[Path, list[Inspection]], tmp_path: Path
) -> None:
    data, insps = station_dir
    ids = [str(i.inspection_id) for i in insps]
    add_feedback(data, insps[0], "not_defect")  # a false positive: a true negative
    add_feedback(data, insps[1], "wrong_class", "pitted_surface")  # a class outside the list
    add_feedback(data, insps[4], "wrong_class", "crazing")  # a defect the model missed: where?
    summary = export_station_log(data, tmp_path / "all", class_names=NAMES, val_fraction=0.0)
    labels = labels_by_id(tmp_path / "all")
    assert labels[ids[0]] == []
    assert ids[1] not in labels and ids[4] not in labels  # never exported as background
    assert summary.images_without_labels == 1
    counts = note_with(summary, "station log")
    assert "left_out_defect_feedback_without_box 1" in counts
    assert "left_out_class_not_listed 1" in counts
    negatives = export_station_log(
        data, tmp_path / "neg", flt=ExportFilter(feedback=("not_defect",)), class_names=NAMES
    )
    assert sum(negatives.images.values()) == 1 and negatives.images_without_labels == 1
    unreviewed, _ = read_station_log(data, ExportFilter(feedback=("NONE",)), NAMES)
    assert sorted(r.image.stem for r in unreviewed.records) == sorted([ids[2], ids[3]])
    with pytest.raises(ValueError, match="feedback false_positive unknown; valid: confirm_defect"):
        ExportFilter(feedback=("false_positive",))


def test_cli_dataset_export_selection_options(
    station_dir: tuple[Path, list[Inspection]], tmp_path: Path
) -> None:
    data, _ = station_dir
    exe = Path(sys.executable).parent / "kanjian"

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(exe), "dataset", "export", str(data), *args],
                              capture_output=True, text=True, timeout=120)  # fmt: skip

    ok = run(str(tmp_path / "a"), "--json", "--classes", ",".join(NAMES), "--since", "2026-01-05",
             "--until", "2026-01-05", "--verdict", "fail", "--min-conf", "0.65", "--max-conf",
             "0.85", "--label-conf", "0.3", "--no-split")  # fmt: skip
    assert ok.returncode == 0, ok.stderr
    summary = json.loads(ok.stdout)
    assert summary["images"] == {"train": 2, "val": 0}
    assert (tmp_path / "a" / "classes.txt").is_file()
    assert len(list((tmp_path / "a" / "images").glob("*.jpg"))) == 2
    bad_time = run(str(tmp_path / "b"), "--since", "27/11/2026")
    assert bad_time.returncode == 2 and "since: '27/11/2026' is not an ISO 8601" in bad_time.stderr
    bad_range = run(str(tmp_path / "c"), "--min-conf", "0.6", "--max-conf", "0.5")
    assert bad_range.returncode == 2 and "must not be above max_conf" in bad_range.stderr
    bad_verdict = run(str(tmp_path / "d"), "--verdict", "nope", "--classes", "a")
    assert bad_verdict.returncode == 2 and "valid: PASS, FAIL" in bad_verdict.stderr
    no_model = run(str(tmp_path / "e"))  # the fixture's model is not registered
    assert no_model.returncode == 2 and "Give --classes" in no_model.stderr
