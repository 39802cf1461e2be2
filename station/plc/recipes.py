"""Recipes: the PLC chooses the model by writing a number (product changeover).

``plc.recipes`` maps RECIPE values to model bundles. Every bundle is loaded
and its ONNX Runtime session warmed up at start, so a changeover costs no
load time on the line; a RECIPE write then swaps the inspector's model before
the next trigger (each inspection records the model that judged it). A value
that is not configured is refused (Modbus exception, OPC UA Bad status) and
the model stays as it was. Each change goes through the station's model
registry like any other activation: the model is registered, its activation
pushed on the history (so it outlives a restart) and audited (``model.recipe``,
actor ``plc``).
"""

from __future__ import annotations

import logging
import sqlite3
from typing import TYPE_CHECKING

import numpy as np

from kanjian.inference.model import OnnxModel, load_model
from kanjian.station.state.audit import Actor

if TYPE_CHECKING:
    from kanjian.station.pipeline import Station

log = logging.getLogger(__name__)


class RecipeError(ValueError):
    """A RECIPE value with no model configured for it."""


class RecipeBook:
    """The models of ``plc.recipes``, loaded; :meth:`select` makes one judge.

    Raises (at construction) the loader's ModelLoadError / BundleError naming
    the bundle when one cannot be loaded: a recipe that would fail on the line
    must fail at start.
    """

    def __init__(self, station: Station) -> None:
        self.station = station
        mc = station.config.model
        self.models: dict[int, OnnxModel] = {}
        for number, path in sorted(station.config.plc.recipes.items()):
            model = load_model(path, mc.providers, mc.intra_op_threads, mc.allow_fallback)
            h, w = model.info.imgsz
            model.run(np.zeros((1, 3, h, w), np.float32))  # warm ONNX Runtime up now
            self.models[number] = model
            log.info("recipe %d: %s v%s (%s…)", number, model.info.name, model.info.version,
                     model.info.sha256[:12])  # fmt: skip

    def initial(self) -> int:
        """The recipe whose model already judges (the register's start value), else 0."""
        running = self.station.inspector.model.info.sha256
        return next((n for n, m in self.models.items() if m.info.sha256 == running), 0)

    def select(self, number: int) -> None:
        """Make recipe ``number``'s model judge from the next frame on.

        Raises:
            RecipeError: no model is configured for ``number``.
        """
        model = self.models.get(number)
        if model is None:
            raise RecipeError(
                f"recipe {number} is not configured (plc.recipes has "
                f"{', '.join(map(str, sorted(self.models))) or 'none'})"
            )
        try:  # the registry serialises changes and checks what judges under its lock
            prev = self.station.state.models.use_loaded(
                model, Actor("plc"), "model.recipe", {"recipe": number}
            )
        except sqlite3.Error as e:  # a change is never without its row: refuse it
            raise RecipeError(f"recipe {number}: the change cannot be recorded: {e}") from e
        if prev is not None:
            m = model.info
            log.info("recipe %d: %s v%s now judges (was %s v%s)", number, m.name, m.version,
                     prev.name, prev.version)  # fmt: skip
