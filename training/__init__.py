"""kanjian.training."""
