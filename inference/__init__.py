"""kanjian.inference."""
