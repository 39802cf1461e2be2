"""kanjian.appliance_api.cli: every ``kanjian`` command's wiring, one module a command group.

The work each command does stays in its domain package (station, platform, training);
these modules parse arguments, call it and print.
"""

from kanjian.appliance_api.cli.main import main

__all__ = ["main"]
