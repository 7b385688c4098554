"""Finished one-offs, kept so their figures can be reproduced (benchmarks/README.md says what each measured, when)."""
