"""``python -m kanjian.appliance_api.cli``: the same as the ``kanjian`` script."""

from kanjian.appliance_api.cli.main import main

main()
