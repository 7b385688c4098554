"""Experiments: questions answered by running the search on data; rerun them at a larger scale (benchmarks/README.md)."""
