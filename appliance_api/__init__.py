"""kanjian.appliance_api."""
