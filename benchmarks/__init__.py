"""kanjian benchmarks (not installed): run them with ``python -m benchmarks.<name>``."""
