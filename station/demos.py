"""The embedded demo stations: what ``kanjian serve`` / ``run`` judge with no config.

Each demo is a folder of images the camera loops over and a model bundle, both shipped
in the package (``station/demo/``), and a data folder of its own (relative to the
working directory) so that two demos never share a store: their rows, tokens and
rules set through the API stay apart. Standard library only: the CLI imports this to
list the demos in its help without loading the station.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

DEMO_DIR = Path(__file__).resolve().parent / "demo"
#: the default demo's images and bundle (NEU-DET), where they always were
DEMO_IMAGES = DEMO_DIR / "images"
DEMO_MODEL = DEMO_DIR / "model"
#: the anomaly demo's folder: ``images/`` and ``model/`` (see its README.md)
MAGNETIC_TILE_DIR = DEMO_DIR / "magnetic-tile"


@dataclass(frozen=True)
class Demo:
    """One embedded demo station.

    Attributes:
        name: what ``--demo`` takes.
        images: folder of image files the camera replays in name order, looping.
        model: model bundle folder (``model.onnx``, ``manifest.json``, ``golden/``).
        data_dir: the store's folder (database and saved images), relative to the
            working directory.
        summary: one line for people (the CLI's help).
    """

    name: str
    images: Path
    model: Path
    data_dir: Path
    summary: str


DEFAULT_DEMO = "neu-det"

DEMOS: MappingProxyType[str, Demo] = MappingProxyType(
    {
        d.name: d
        for d in (
            Demo(
                "neu-det",
                DEMO_IMAGES,
                DEMO_MODEL,
                Path("kanjian-data"),
                "NEU-DET steel surfaces, a six-class YOLO11n detector",
            ),
            Demo(
                "magnetic-tile",
                MAGNETIC_TILE_DIR / "images",
                MAGNETIC_TILE_DIR / "model",
                Path("kanjian-data-magnetic-tile"),
                "magnetic tiles, good and defective in turn, an anomaly model learnt from "
                "good tiles only",
            ),
        )
    }
)


class UnknownDemoError(ValueError):
    """A demo name that is not one of :data:`DEMOS`; the message lists the known ones."""


def known_demos_line() -> str:
    """``neu-det (the default), magnetic-tile``: the names ``--demo`` takes."""
    return ", ".join(f"{n} (the default)" if n == DEFAULT_DEMO else n for n in DEMOS)


def get_demo(name: str) -> Demo:
    """The demo called ``name``.

    Raises:
        UnknownDemoError: no such demo; the message names the known ones.
    """
    try:
        return DEMOS[name]
    except KeyError:
        raise UnknownDemoError(
            f"unknown demo {name!r}; the embedded demos are: {known_demos_line()}"
        ) from None
