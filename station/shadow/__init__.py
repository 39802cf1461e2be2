"""Shadow models: a candidate bundle judges the frames the active model judged, apart.

The shadow never touches a verdict, a PLC answer, the operator's screen or the
line's speed. It is a channel of committed inspections (:mod:`.service`) that hands
at most one frame at a time to a child process (:mod:`.worker`, :mod:`.child`)
running the candidate on one thread at a lower priority; its results are rows of
``shadow_results`` beside the active model's (:mod:`.results`). An engineer loads,
stops and promotes it (:mod:`.keeper`); promotion passes a gate (:mod:`.gate`).

Modules import lazily: :mod:`kanjian.station.config` reads :mod:`.config` alone.
"""
