"""`make demo`'s command, measured: wall time, lines printed, the run folder's size, the machine's load, and the
summary's TPE / ASHA / ensemble lines. Writes its record (benchmarks/record.py).

    python -m benchmarks.tools.demo_run [--space spaces/quick.py] [--storage /tmp/demo-results] [-- EXTRA FLAGS]

Run it on the commit to measure and, for a baseline, on the one before (git worktree), on the same machine in the
same hour: the 2-core VM is shared, so its load is part of every figure.
"""
from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.record import write_record

ROOT = Path(__file__).resolve().parents[2]


def folder_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--space", default="spaces/quick.py")
    parser.add_argument("--storage", default="/tmp/demo-results")
    parser.add_argument("extra", nargs="*", help="more search/run.py flags (after --)")
    args = parser.parse_args(argv)
    name = time.strftime("demo-%Y%m%d-%H%M%S")
    command = [sys.executable, "search/run.py", "--space", args.space, "--storage", args.storage, "--name", name,
               *args.extra]
    load_before = os.getloadavg()
    started = time.perf_counter()
    proc = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    out = proc.stdout + proc.stderr
    summary = out[out.rfind("Best trial"):] if "Best trial" in out else ""
    figures = {
        "exit_code": proc.returncode, "wall_s": round(seconds, 1), "lines": len(out.splitlines()),
        "run_folder_mb": round(folder_bytes(Path(args.storage) / name) / 1e6, 1),
        "load_before": load_before, "load_after": os.getloadavg(),
        "summary": {key: (re.search(rf"^{key}: .*$", summary, re.M) or [None])[0] for key in ("Trials", "TPE", "Ensemble")},
    }
    path = write_record("demo_run", figures)
    print(figures, f"\nrecord: {path}")
    return proc.returncode


if __name__ == "__main__":
    sys.exit(main())
