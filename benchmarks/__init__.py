"""Benchmarks: the figures in BENCHMARKS.md. Run from the repository root as `python -m benchmarks.<folder>.<name>`
(benchmarks/README.md says which folder holds what). Standard library only here: the GPU suite imports this
package before it installs the project."""
