"""Reusable measurement tools: they measure the code as it is now (benchmarks/README.md)."""
