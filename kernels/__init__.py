"""kanjian.kernels."""
