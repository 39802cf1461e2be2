"""kanjian.station."""
