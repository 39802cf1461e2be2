"""kanjian benchmarks (not installed): ``python -m benchmarks [--quick]`` runs the whole suite
(:mod:`benchmarks.suite`); ``python -m benchmarks.preprocess`` runs one section alone."""
