"""Model task heads behind a registry: the built-in ones, unknown tasks named, a new task
added from a test alone (a real exported model runs through it end to end), and every
head's drawing touching only its own marks."""

from __future__ import annotations

import json
import shutil
import sqlite3
from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from types import MappingProxyType
from typing import Any, ClassVar

import cv2
import numpy as np
import pytest
from numpy.typing import NDArray

from kanjian.appliance_api.http.annotate import annotate_inspection
from kanjian.camera.frame import Frame
from kanjian.inference import bundle as b
from kanjian.inference.golden import check_bundle
from kanjian.inference.golden_set import GoldenImage, GoldenSet
from kanjian.inference.heads import (
    Keep,
    UnknownTaskError,
    head_for,
    known_tasks,
    register_head,
    task_columns,
    unregister_head,
)
from kanjian.inference.heads.classify import ClassifyHead
from kanjian.inference.heads.drawing import bgr_copy, fit
from kanjian.inference.model import OnnxModel, load_model
from kanjian.inference.session import ModelLoadError
from kanjian.inference.types import Detections, Inspection, Verdict
from kanjian.inference.verdict import VerdictResult, VerdictRules, reason_text
from kanjian.station.inspector import Inspector
from kanjian.station.store import DB_NAME, ResultStore

BUILT_IN = ("anomaly", "classify", "detect", "segment")
#: a task no head is registered for
UNKNOWN = "keypoints"
TOY = "good_or_not"
TOY_MARK = (slice(12, 20), slice(12, 20))  # rows, cols of the toy's square
MAGENTA = (255, 0, 255)


def test_the_registry_holds_the_built_in_tasks() -> None:
    assert known_tasks() == BUILT_IN
    for task in BUILT_IN:
        assert head_for(task).task == task
    with pytest.raises(
        UnknownTaskError, match=r"'keypoints'.*known tasks: anomaly, classify, detect, segment"
    ):
        head_for(UNKNOWN)
    with pytest.raises(ValueError, match="already registered"):
        register_head(ClassifyHead())


def _with_task(src: Path, dst: Path, task: str) -> Path:
    """A copy of ONNX file ``src`` whose Ultralytics metadata names ``task``."""
    import onnx  # a test dependency (Ultralytics' export needs it); the runtime does not

    model = onnx.load(str(src))
    props = {p.key: p for p in model.metadata_props}
    props["task"].value = task
    onnx.save(model, str(dst))
    return dst


def test_an_unknown_task_in_onnx_metadata_names_the_known_ones(
    classify_model: Any, tmp_path: Path
) -> None:
    onnx_path = _with_task(classify_model.onnx, tmp_path / "m.onnx", UNKNOWN)
    with pytest.raises(ModelLoadError) as e:
        load_model(onnx_path, ("cpu",))
    assert str(onnx_path) in str(e.value)
    assert "'keypoints' is not supported; known tasks: anomaly, classify, detect, segment" in str(
        e.value
    )


def test_an_unknown_task_in_a_manifest_names_the_known_ones(tmp_path: Path) -> None:
    raw = {
        "name": "m",
        "version": "1",
        "task": UNKNOWN,
        "class_names": ["ok", "bad"],
        "imgsz": [128, 128],
        "onnx_sha256": "0" * 64,
    }
    (tmp_path / b.MANIFEST_NAME).write_text(json.dumps(raw))
    with pytest.raises(b.BundleError, match="known tasks: anomaly, classify, detect, segment"):
        b.read_manifest(tmp_path)
    assert b.BundleManifest.model_validate({**raw, "task": "segment"}).task == "segment"


# -- a new task, added by this test alone ---------------------------------------------


class GoodOrNotHead(ClassifyHead):
    """A toy task on a classify model's outputs: PASS when the pass classes' probabilities
    add up to at least one half, else FAIL; keeps the top probability in a column of its
    own and marks the picture with a small magenta square."""

    task = TOY
    store_columns: ClassVar[Mapping[str, str]] = MappingProxyType(
        {"probs_json": "TEXT", "toy_top_prob": "REAL"}
    )

    def judge(
        self,
        detections: Detections,
        probs: NDArray[np.float32] | None,
        names: tuple[str, ...],
        rules: VerdictRules,
    ) -> VerdictResult:
        assert probs is not None
        good = float(sum(p for p, n in zip(probs, names, strict=True) if n in rules.pass_classes))
        top = names[int(np.argmax(probs))]
        if good >= 0.5:
            params: dict[str, Any] = {"class": "good", "confidence": round(good, 2)}
            return VerdictResult(
                Verdict.PASS, reason_text("class_pass", params), "class_pass", params
            )
        params = {"class": top, "confidence": round(1 - good, 2)}
        return VerdictResult(Verdict.FAIL, reason_text("class_fail", params), "class_fail", params)

    def store_fields(self, insp: Inspection) -> dict[str, Any]:
        top = None if insp.probs is None else float(np.max(insp.probs))
        return {**super().store_fields(insp), "toy_top_prob": top}

    def draw(
        self,
        image: NDArray[np.uint8],
        insp: Inspection,
        keep: Keep | None = None,
        max_side: int | None = None,
        names: Mapping[str, str] | None = None,
    ) -> NDArray[np.uint8]:
        img = fit(bgr_copy(image), max_side)[0]
        img[TOY_MARK] = MAGENTA
        return img


@pytest.fixture
def toy_head() -> Iterator[GoodOrNotHead]:
    head = register_head(GoodOrNotHead())
    assert isinstance(head, GoodOrNotHead)
    try:
        yield head
    finally:
        unregister_head(TOY)


def _frames(images: Sequence[Path]) -> list[Frame]:
    now = datetime.now(timezone.utc)
    return [
        Frame(cv2.imread(str(p), cv2.IMREAD_COLOR), i, "t", now, uri=str(p))
        for i, p in enumerate(images)
    ]


def test_a_task_registered_in_a_test_runs_a_real_model_end_to_end(
    classify_model: Any, toy_head: GoodOrNotHead, tmp_path: Path
) -> None:
    assert known_tasks() == tuple(sorted((*BUILT_IN, TOY))) and "toy_top_prob" in task_columns()
    plain = OnnxModel(classify_model.onnx, ("cpu",))
    toy = load_model(_with_task(classify_model.onnx, tmp_path / "toy.onnx", TOY), ("cpu",))
    assert toy.info.task == TOY and toy.head is toy_head
    names = toy.info.class_names
    frames = _frames(classify_model.val_images[:6])
    # the same ONNX graph and input: the toy sees exactly classify's probabilities
    for f in frames:
        want = plain.predict(f.image).probs
        got = toy.predict(f.image).probs
        assert want is not None and got is not None and np.array_equal(got, want)
    # judged by the toy's rule: the pass classes' probabilities decide
    probs = [p for f in frames if (p := plain.predict(f.image).probs) is not None]
    tops = [int(np.argmax(p)) for p in probs]
    # frame 0's likeliest classes, until they add up to one half, are the "good" ones
    order = np.argsort(-probs[0], kind="stable")
    n_good = int(np.searchsorted(np.cumsum(probs[0][order]), 0.5)) + 1
    good_classes = [names[i] for i in order[:n_good]]
    ins = Inspector(toy, VerdictRules(pass_classes=good_classes))
    insps = [ins.inspect(f) for f in frames]
    for insp, p in zip(insps, probs, strict=True):
        good = float(sum(p[names.index(n)] for n in good_classes))
        assert insp.task == TOY
        assert insp.verdict is (Verdict.PASS if good >= 0.5 else Verdict.FAIL), insp.reason
    assert insps[0].verdict is Verdict.PASS
    # stored with the toy's own column, which the store added when it opened
    store = ResultStore(tmp_path / "data")
    for insp in insps:
        store.put(insp)
    assert store.flush()
    store.close()
    db = sqlite3.connect(tmp_path / "data" / DB_NAME)
    rows = db.execute("SELECT id, probs_json, toy_top_prob FROM inspections ORDER BY seq")
    for (iid, probs_json, top), insp in zip(rows.fetchall(), insps, strict=True):
        assert iid == str(insp.inspection_id) and insp.probs is not None
        assert json.loads(probs_json) == [float(p) for p in insp.probs]
        assert top == pytest.approx(float(np.max(insp.probs)))
    db.close()
    # drawn by the toy: its square, the verdict's border, nothing else
    out = annotate_inspection(insps[0])
    assert out is not None
    assert (out[TOY_MARK] == MAGENTA).all()
    # the golden check compares the toy's answers the way its head says (classify's)
    bundle = tmp_path / "bundle"
    (bundle / b.GOLDEN_DIR).mkdir(parents=True)
    shutil.copy(tmp_path / "toy.onnx", bundle / b.MODEL_NAME)
    shutil.copy(frames[0].uri, bundle / b.GOLDEN_DIR / "g0.jpg")
    b.write_manifest(
        bundle,
        b.BundleManifest(
            name="toy",
            version="1",
            task=TOY,
            class_names=list(names),
            imgsz=toy.info.imgsz,
            onnx_sha256=b.sha256_file(bundle / b.MODEL_NAME),
        ),
    )

    def golden(top_class: int) -> None:
        expected = GoldenSet(
            conf=0.25,
            iou=0.7,
            images=[GoldenImage(file="g0.jpg", top_class=top_class, probs=probs[0].tolist())],
        )
        (bundle / b.GOLDEN_DIR / b.GOLDEN_EXPECTED).write_text(expected.model_dump_json())

    golden(tops[0])
    report = check_bundle(bundle)
    assert report.ok and report.images == 1, report.problems
    golden((tops[0] + 1) % len(names))
    report = check_bundle(bundle)
    assert not report.ok and report.problems == [
        f"g0.jpg: top class {tops[0]} != expected {(tops[0] + 1) % len(names)}"
    ]


# -- drawing: each head marks only its own things ---------------------------------------

H, W = 360, 480
BOX = (260.0, 200.0, 340.0, 300.0)  # x1, y1, x2, y2 in source pixels


def _synthetic(task: str) -> tuple[NDArray[np.uint8], Inspection]:
    """A textured frame and an inspection with one box, its mask and probabilities."""
    rng = np.random.default_rng(7)
    image = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
    masks = np.zeros((1, H, W), bool)
    masks[0, 220:280, 280:320] = True
    dets = Detections(
        xyxy=np.array([BOX], np.float32),
        confidence=np.array([0.9], np.float32),
        class_id=np.array([1], np.int32),
        masks=masks,
    )
    frame = Frame(image.copy(), 0, "t", datetime.now(timezone.utc))
    insp = Inspection(
        frame,
        Verdict.FAIL,
        detections=dets,
        class_names=("ok", "scratch"),
        probs=np.array([0.1, 0.9], np.float32),
        task=task,
    )
    return image, insp


def _allowed(task: str) -> NDArray[np.bool_]:
    """``(H, W)`` bool: where ``task``'s head may draw on :func:`_synthetic`'s frame."""
    allowed = np.zeros((H, W), bool)
    x1, y1, x2, y2 = (round(v) for v in BOX)
    # the outline (and the mask, or the anomaly's heat map, inside it), the label above
    if task in ("detect", "segment", "anomaly"):
        allowed[y1 - 40 : y2 + 4, x1 - 4 : x2 + 4] = True
        allowed[y1 - 40 : y1 + 4, x1 - 4 : x1 + 160] = True
    elif task == TOY:
        allowed[TOY_MARK] = True
    elif task != "classify":  # a new head: say here where it draws
        raise AssertionError(f"no drawing expectation for task {task!r}")
    return allowed


@pytest.mark.parametrize("task", [*known_tasks(), TOY])
def test_each_heads_drawing_leaves_pixels_away_from_its_marks_untouched(
    task: str, request: pytest.FixtureRequest
) -> None:
    if task == TOY:
        request.getfixturevalue("toy_head")
    image, insp = _synthetic(task)
    before = image.copy()
    out = head_for(task).draw(image, insp)
    assert np.array_equal(image, before), "draw must not change the frame it is given"
    assert out.shape == (H, W, 3) and out.dtype == np.uint8
    changed = (out != image).any(axis=2)
    allowed = _allowed(task)
    assert not (changed & ~allowed).any(), f"{task} drew outside its marks"
    assert changed.any() == bool(allowed.any()), f"{task} drew nothing it should"
    if task in ("segment", "anomaly"):  # the mask is tinted inside the box, off the outline
        assert changed[230:270, 290:310].all()
    if task == "detect":
        assert not changed[230:270, 290:310].any()
    # shrunk: the same picture at the asked size
    small = head_for(task).draw(image, insp, max_side=240)
    assert small.shape == (180, 240, 3)
