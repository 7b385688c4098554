"""Every benchmark's record beside its table: one JSON with the figures and how they were made.

    from benchmarks.record import write_record
    write_record("loader_throughput", figures)

writes benchmarks/results/<name>-<date>-<time>.json (or into $BENCHMARK_RECORDS, or `out_dir`) holding the git
commit (and whether the tree had local changes), the command line, the machine (CPU model, cores, memory, GPU
if any, Python and package versions, load average), the date, and `figures` as given. BENCHMARKS.md quotes
figures from these files; benchmarks/results/ is not committed (results are never committed), the figures and
their commands are. Standard library only: the GPU suite writes its record before anything is installed.
"""
from __future__ import annotations

import json
import os
import platform
import shlex
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("torch", "timm", "ray", "optuna", "numpy", "pandas")


def _git(*args) -> str:
    try:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10,
                              check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def machine() -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    try:
        memory_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError, AttributeError):
        memory_gb = None
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return {"cpu": cpu, "cores": os.cpu_count(), "memory_gb": round(memory_gb, 1) if memory_gb else None,
            "gpu": os.environ.get("CUDA_VISIBLE_DEVICES") and _gpu_name(), "python": platform.python_version(),
            "os": platform.platform(), "load_avg": os.getloadavg(), "packages": versions}


def _gpu_name() -> str | None:
    try:
        return subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True,
                              text=True, timeout=20).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def command(argv: list[str] | None = None) -> str:
    """The command line as typed: `python -m benchmarks.tools.x ...` for a module run from the repository root."""
    argv = list(sys.argv if argv is None else argv)
    script = Path(argv[0]).resolve() if argv and argv[0].endswith(".py") else None
    if script is not None and script.is_relative_to(ROOT / "benchmarks"):
        argv[:1] = ["-m", ".".join(script.relative_to(ROOT).with_suffix("").parts)]
    return shlex.join(["python", *argv])


def provenance() -> dict:
    """When, from which commit (and whether the tree had local changes) and with which command."""
    return {"date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "commit": _git("rev-parse", "HEAD"),
            "tree_dirty": bool(_git("status", "--porcelain", "--untracked-files=no")), "command": command()}


def write_record(name: str, figures, out_dir: str | Path | None = None) -> Path:
    """The record of one benchmark run; returns its path."""
    record = {"benchmark": name, **provenance(), "machine": machine(), "figures": figures}
    out = Path(out_dir or os.environ.get("BENCHMARK_RECORDS") or ROOT / "benchmarks" / "results")
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(record, indent=2, default=str))
    print(f"Record: {path}", file=sys.stderr)
    return path
