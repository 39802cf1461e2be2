"""What the station keeps in its database beyond inspections, and its one owner.

:class:`~kanjian.station.state.service.StationState` (built by ``build_station``
for ``kanjian run`` and ``kanjian serve`` alike) holds the model registry
(:mod:`.models`: bundles, activation, rollback, the isolated golden check), the
verdict rules set at run time (:mod:`.rules`), and the one audit writer
(:mod:`.audit`). The HTTP API, platform deploys and PLC recipes all go through
it; bundle archives are unpacked by the one byte-counting unpacker
(:mod:`.archive`). This package imports nothing of ``kanjian.appliance_api``.
"""
