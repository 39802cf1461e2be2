"""A bundle's training weights: put in by ``kanjian train``, taken out by the next one.

``kanjian train`` copies the run's checkpoint into the bundle as ``weights.pt`` and
records its hash in the manifest (``training.weights``) unless ``--no-weights``; a
later ``kanjian train --model <bundle folder>`` (a station's ``data_dir/models/<sha>/``,
say) continues from them. The station itself never reads the file.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from kanjian.inference import bundle as b


class BundleWeightsError(ValueError):
    """A bundle that cannot be trained from; the message says what to pass instead."""


@dataclass(frozen=True)
class BundleStart:
    """Where a training run continues from.

    Attributes:
        bundle: the bundle folder given.
        weights: its ``weights.pt`` (hash checked against the manifest).
        manifest: its manifest (name, version, task, classes).
    """

    bundle: Path
    weights: Path
    manifest: b.BundleManifest

    def provenance(self) -> dict[str, str]:
        """What the new bundle's manifest records about where its training started."""
        m = self.manifest
        return {"bundle": str(self.bundle), "name": m.name, "version": m.version,
                "onnx_sha256": m.onnx_sha256}  # fmt: skip


def copy_weights(weights: Path, bundle_dir: Path) -> b.WeightsRef:
    """Copy a run's checkpoint into ``bundle_dir`` as ``weights.pt``; its manifest entry.

    Raises:
        FileNotFoundError: naming the checkpoint when it is not a file.
    """
    if not weights.is_file():
        raise FileNotFoundError(f"{weights}: no such weights file to put in the bundle")
    target = bundle_dir / b.WEIGHTS_NAME
    shutil.copyfile(weights, target)
    return b.WeightsRef(
        file=b.WEIGHTS_NAME, sha256=b.sha256_file(target), bytes=target.stat().st_size
    )


def weights_from_bundle(bundle: Path, task: str) -> BundleStart:
    """The weights to continue training from, out of a bundle folder.

    Raises:
        BundleWeightsError: an unreadable manifest, another task, no ``weights.pt``,
            or one whose sha256 is not the manifest's.
    """
    try:
        manifest = b.read_manifest(bundle)
    except b.BundleError as e:
        raise BundleWeightsError(f"--model {bundle}: not a readable bundle: {e}") from e
    if manifest.task != task:
        raise BundleWeightsError(
            f"--model {bundle}: a {manifest.task} bundle; this run trains a {task} model "
            f"(--task {manifest.task} to continue it)"
        )
    ref = manifest.training.weights
    path = bundle / (ref.file if ref is not None else b.WEIGHTS_NAME)
    if ref is None and path.is_file():
        raise BundleWeightsError(
            f"--model {bundle}: its {b.WEIGHTS_NAME} is not recorded in the manifest (put "
            f"there by hand?); pass it as --model {path} if you trust it"
        )
    if ref is None or not path.is_file():
        raise BundleWeightsError(
            f"--model {bundle}: this bundle was made without {b.WEIGHTS_NAME} (kanjian train "
            "--no-weights, or a kanjian from before bundles carried their weights); pass the "
            "run's .pt instead (--model RUN/weights/best.pt)"
        )
    sha = b.sha256_file(path)
    if sha != ref.sha256:
        raise BundleWeightsError(
            f"--model {bundle}: {ref.file} has sha256 {sha[:12]}…, the manifest says "
            f"{ref.sha256[:12]}…; the file was altered or replaced"
        )
    return BundleStart(bundle, path, manifest)


def check_classes(start: BundleStart, names: Sequence[str]) -> str | None:
    """Hold the dataset's class list (index = class id) against the bundle's.

    The same classes in another order would start each class from another one's weights
    (a labelling tool that renumbers the classes alphabetically does this): refused.
    A list that differs otherwise (a class added, dropped or renamed) is allowed: the
    note says so.

    Raises:
        BundleWeightsError: the same names in another order, both lists shown.
    """
    have = list(start.manifest.class_names)
    if list(names) == have:
        return None
    if sorted(names) == sorted(have):
        raise BundleWeightsError(
            f"--model {start.bundle}: the dataset has the bundle's classes in another order "
            f"(dataset: {', '.join(names)}; bundle: {', '.join(have)}), so each class would "
            "start from another class's weights; give the dataset the bundle's class ids (a "
            "Label Studio project made from kanjian dataset export's label_studio.xml keeps "
            f"them), or pass --model {start.weights} to start from the weights anyway"
        )
    return (
        f"note: the dataset's classes ({', '.join(names)}) are not the bundle's "
        f"({', '.join(have)}): class ids the two share start from the bundle's weights"
    )
