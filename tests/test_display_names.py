"""Display names per language in model bundles: the manifest field and its format version,
``kanjian train --names-zh / --names``, ``kanjian model names --bundle``, the parsers.

Bundles are made cheaply from the demo bundle's ONNX with the same packaging code
``kanjian train`` uses (``training.package.write_bundle``): no training runs here.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import yaml

from kanjian.inference.bundle import (
    MANIFEST_NAME,
    MODEL_NAME,
    BundleError,
    Thresholds,
    TrainingInfo,
    read_manifest,
)
from kanjian.inference.display_names import (
    NamesError,
    check_display_names,
    label_names,
    load_names_file,
    merge_names,
    parse_pairs,
)
from kanjian.inference.model import load_model
from kanjian.station.config import DEMO_IMAGES, DEMO_MODEL
from tests.support import api as S

CLASSES = ["crazing", "inclusion", "patches", "pitted_surface", "rolled-in_scale", "scratches"]
#: the words the screen used for NEU-DET before bundles carried names (i18n.js zh.classes)
ZH = {
    "crazing": "龟裂",
    "inclusion": "夹杂",
    "patches": "斑块",
    "pitted_surface": "麻点",
    "rolled-in_scale": "压入氧化皮",
    "scratches": "划痕",
}


def _bundle(tmp: Path, names: dict[str, dict[str, str]] | None) -> Path:
    from kanjian.training.package import write_bundle

    out = tmp / ("named" if names else "plain")
    write_bundle(
        DEMO_MODEL / MODEL_NAME,
        out,
        name="demo-copy",
        version="1",
        thresholds=Thresholds(conf=0.1),
        metrics={},
        training=TrainingInfo(command="tests/test_display_names.py"),
        golden_candidates=sorted(DEMO_IMAGES.glob("*.jpg"))[:4],
        golden_count=2,
        display_names=names,
    )
    return out


def test_manifest_round_trip_with_display_names(tmp_path: Path) -> None:
    names = {"zh": dict(ZH), "en": {"rolled-in_scale": "Rolled-in scale"}}
    named = _bundle(tmp_path, names)
    m = read_manifest(named)
    assert m.display_names == names and m.schema_version == 3
    assert load_model(named, ("cpu",)).manifest.display_names == names  # type: ignore[union-attr]
    raw = json.loads((named / MANIFEST_NAME).read_text(encoding="utf-8"))
    assert raw["display_names"]["zh"]["scratches"] == "划痕"  # UTF-8, not \\u escapes
    assert "划痕" in (named / MANIFEST_NAME).read_text(encoding="utf-8")
    # a bundle without names does not carry the key: stations that read format 1/2 and
    # forbid unknown keys still read it
    plain = _bundle(tmp_path, None)
    raw = json.loads((plain / MANIFEST_NAME).read_text(encoding="utf-8"))
    assert "display_names" not in raw and raw["schema_version"] == 1
    assert read_manifest(plain).display_names == {}


def test_the_demo_bundle_names_its_classes_in_chinese() -> None:
    m = read_manifest(DEMO_MODEL)
    assert m.display_names == {"zh": ZH} and m.class_names == CLASSES


def test_bad_display_names_in_a_manifest_are_refused_by_name(tmp_path: Path) -> None:
    bundle = tmp_path / "b"
    shutil.copytree(DEMO_MODEL, bundle)
    raw = json.loads((bundle / MANIFEST_NAME).read_text(encoding="utf-8"))
    for bad, says in (
        ({"zh": {"scratchez": "划痕"}}, r"no class 'scratchez'.*classes are: crazing"),
        ({"Chinese": {"scratches": "划痕"}}, "language 'Chinese' must be a tag"),
        ({"zh": {"scratches": " "}}, "must be non-empty"),
        ({"zh": {"scratches": "x" * 65}}, "over 64 characters"),
        ({"zh": {"scratches": "a\nb"}}, "control characters"),
    ):
        (bundle / MANIFEST_NAME).write_text(json.dumps({**raw, "display_names": bad}))
        with pytest.raises(BundleError, match=says):
            read_manifest(bundle)


def test_display_names_are_bounded_with_a_message_naming_the_limit() -> None:
    from kanjian.inference import display_names as D

    # each limit: at it, accepted; one over, refused with a message that says it
    langs = [f"x{chr(97 + i // 26)}{chr(97 + i % 26)}" for i in range(D.MAX_LANGS + 1)]
    assert len(set(langs)) == D.MAX_LANGS + 1 and all(re.match(D.LANG_PATTERN, t) for t in langs)
    ok = {t: {"scratches": "划痕"} for t in langs[: D.MAX_LANGS]}
    assert check_display_names(ok, CLASSES) == dict(sorted(ok.items()))
    too_many = {t: {"scratches": "划痕"} for t in langs}
    with pytest.raises(NamesError, match=f"{D.MAX_LANGS + 1} languages: at most {D.MAX_LANGS}"):
        check_display_names(too_many, CLASSES)
    at, over = f"zh{'-abcd' * 6}-ab", f"zh{'-abcd' * 6}-abc"  # BCP-47-shaped
    assert (len(at), len(over)) == (D.MAX_TAG, D.MAX_TAG + 1)
    assert re.match(D.LANG_PATTERN, at) and re.match(D.LANG_PATTERN, over)
    assert check_display_names({at: {"scratches": "划痕"}}, CLASSES) == {at: {"scratches": "划痕"}}
    with pytest.raises(NamesError, match=f"a tag is at most {D.MAX_TAG} characters"):
        check_display_names({over: {"scratches": "划痕"}}, CLASSES)
    many = {f"c{i}": "名" for i in range(D.MAX_CLASSES + 1)}
    assert len(check_display_names({"zh": dict(list(many.items())[:-1])})["zh"]) == D.MAX_CLASSES
    with pytest.raises(NamesError, match=f"zh: {D.MAX_CLASSES + 1} names, at most {D.MAX_CLASSES}"):
        check_display_names({"zh": many})
    assert check_display_names({"zh": {"scratches": "x" * D.MAX_NAME}}, CLASSES)
    with pytest.raises(NamesError, match=f"over {D.MAX_NAME} characters"):
        check_display_names({"zh": {"scratches": "x" * (D.MAX_NAME + 1)}}, CLASSES)
    # many problems: the message lists some and counts the rest, it does not grow with them
    wrong = {"zh": {f"nope{i}": "名" for i in range(500)}}
    with pytest.raises(NamesError) as e:
        check_display_names(wrong, CLASSES)
    said = str(e.value)
    assert "no class 'nope0'" in said and "more" in said and "nope499" not in said
    assert len(said) < 2000, len(said)


def test_parsers_of_the_flags_and_files(tmp_path: Path) -> None:
    assert parse_pairs("crazing=龟裂, scratches = 划痕，patches=斑块") == {
        "crazing": "龟裂",
        "scratches": "划痕",
        "patches": "斑块",
    }  # a full-width comma from a Chinese input method separates too
    for bad, says in (("scratches", "must look like class=name"), ("a=1,a=2", "named twice")):
        with pytest.raises(NamesError, match=says):
            parse_pairs(bad)
    f = tmp_path / "names.yaml"
    f.write_text("zh:\n  scratches: 划痕\nen:\n  scratches: Scratch\n", encoding="utf-8")
    assert load_names_file(f) == {"en": {"scratches": "Scratch"}, "zh": {"scratches": "划痕"}}
    j = tmp_path / "names.json"
    j.write_text(json.dumps({"zh": ZH}, ensure_ascii=False), encoding="utf-8")
    assert load_names_file(j) == {"zh": dict(sorted(ZH.items()))}
    (tmp_path / "list.yaml").write_text("- a\n")
    with pytest.raises(NamesError, match=r"list.yaml: expected \{language"):
        load_names_file(tmp_path / "list.yaml")
    assert merge_names({"zh": {"a": "1", "b": "2"}}, {"zh": {"b": "3"}, "en": {"a": "A"}}) == {
        "en": {"a": "A"},
        "zh": {"a": "1", "b": "3"},
    }
    assert label_names({"zh": {"a": "甲"}}, "zh-CN") == {"a": "甲"}
    assert label_names({"zh": {"a": "甲"}}, "en") == {}
    with pytest.raises(NamesError, match="the model's classes are: a, b"):
        check_display_names({"zh": {"c": "丙"}}, ["a", "b"])


def test_train_flags_become_the_manifests_names() -> None:
    from kanjian.appliance_api.cli.model_names import names_from_flags

    assert names_from_flags(None, None) == {}
    assert names_from_flags("scratches=划痕,crazing=龟裂", None) == {
        "zh": {"crazing": "龟裂", "scratches": "划痕"}
    }


def _tiny_yolo_dataset(root: Path) -> Path:
    """A two-image YOLO dataset with the demo model's classes (enough for the checks
    ``kanjian train`` makes before it trains)."""
    for split, img in (
        ("train", "crazing_7.jpg"),
        ("val", sorted(DEMO_IMAGES.glob("scratches_*.jpg"))[0].name),
    ):
        (root / "images" / split).mkdir(parents=True)
        (root / "labels" / split).mkdir(parents=True)
        shutil.copyfile(DEMO_IMAGES / img, root / "images" / split / img)
        (root / "labels" / split / img.replace(".jpg", ".txt")).write_text("0 0.5 0.5 0.2 0.2\n")
    data = root / "data.yaml"
    data.write_text(
        yaml.safe_dump(
            {"path": str(root), "train": "images/train", "val": "images/val", "names": CLASSES}
        )
    )
    return data


def test_train_refuses_bad_names_before_training(tmp_path: Path) -> None:
    data = _tiny_yolo_dataset(tmp_path / "data")
    base = ["train", str(data), "--project", str(tmp_path / "runs"), "--epochs", "1"]
    names = tmp_path / "names.yaml"
    names.write_text("zh:\n  scratchez: 划痕\n", encoding="utf-8")
    for extra, says in (
        (["--names-zh", "scratchez=划痕"], "the model has no class 'scratchez'"),
        (["--names", str(names)], "the model has no class 'scratchez'"),
        (["--names-zh", "scratches"], "must look like class=name"),
        (["--names", str(tmp_path / "missing.yaml")], "cannot read the names file"),
    ):
        run = S.kanjian(*base, *extra)
        assert run.returncode == 2, (extra, run.stdout, run.stderr[-2000:])
        assert says in run.stdout + run.stderr, (extra, run.stdout, run.stderr[-2000:])
    assert not (tmp_path / "runs").exists()  # refused before any training


def test_model_names_cli_edits_a_bundles_manifest(tmp_path: Path) -> None:
    bundle = tmp_path / "b"
    shutil.copytree(DEMO_MODEL, bundle)
    before = read_manifest(bundle)
    run = S.kanjian("model", "names", "set", "--bundle", str(bundle), "scratches=划伤")
    assert run.returncode == 0, run.stdout + run.stderr
    after = read_manifest(bundle)
    assert after.display_names == {"zh": {**ZH, "scratches": "划伤"}}
    # the rest of the manifest is as it was
    assert after.model_dump(exclude={"display_names"}) == before.model_dump(
        exclude={"display_names"}
    )
    en = tmp_path / "en.json"
    en.write_text(json.dumps({"en": {"scratches": "Scratch"}}))
    assert (
        S.kanjian("model", "names", "set", "--bundle", str(bundle), "--file", str(en)).returncode
        == 0
    )
    shown = S.kanjian("model", "names", "show", "--bundle", str(bundle), "--json")
    assert json.loads(shown.stdout)["display_names"] == {
        "en": {"scratches": "Scratch"},
        "zh": {**ZH, "scratches": "划伤"},
    }
    bad = S.kanjian("model", "names", "set", "--bundle", str(bundle), "scratchez=划伤")
    assert bad.returncode == 2 and "scratchez" in bad.stderr, bad.stderr
    assert read_manifest(bundle).display_names["zh"]["scratches"] == "划伤"  # unchanged
