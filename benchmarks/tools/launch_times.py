"""Wall time and size of the install from requirements.lock, and of `ray up` → smoke search → `ray down` on loopback.

    python -m benchmarks.tools.launch_times --install --loopback reuse      # what BENCHMARKS.md section 11 quotes
    python -m benchmarks.tools.launch_times --loopback full                 # the node installs from the lock itself

--install runs tools/install_venv.sh (make's install) into a fresh temporary venv and measures its wall time and
`du -s`; --loopback runs tools/loopback_ray_up.sh (needs root, openssh-server, rsync) with the node reusing --venv
(CI's split form) or installing from the lock (full) and takes its up / search / total seconds from its last
lines. The machine's load is in the record (benchmarks/record.py): on the shared 2-core VM, state it beside the figure.
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.record import write_record

ROOT = Path(__file__).resolve().parents[2]


def du_bytes(path: Path) -> int:
    return int(subprocess.run(["du", "-sb", str(path)], capture_output=True, text=True, check=True).stdout.split()[0])


def time_install(keep: Path | None) -> dict:
    venv = keep or Path(tempfile.mkdtemp(prefix="launch-times-venv-"))
    start = time.monotonic()
    proc = subprocess.run(["bash", "tools/install_venv.sh", str(venv)], cwd=ROOT, capture_output=True, text=True)
    wall = time.monotonic() - start
    notes = [line for line in proc.stdout.splitlines() + proc.stderr.splitlines()
             if line.startswith(("Installing", "No GPU here"))]
    figures = {"install_s": round(wall, 1), "install_rc": proc.returncode, "venv_bytes": du_bytes(venv), "notes": notes}
    if keep is None:
        shutil.rmtree(venv, ignore_errors=True)
    return figures


def time_loopback(mode: str, venv: Path) -> dict:
    args = ["bash", "tools/loopback_ray_up.sh", "--venv", str(venv)] + (["--full-install"] if mode == "full" else [])
    start = time.monotonic()
    proc = subprocess.run(args, cwd=ROOT, capture_output=True, text=True)
    wall = time.monotonic() - start
    out = proc.stdout + proc.stderr
    parts = re.search(r"total (\d+)s \(up (\d+)s, search (\d+)s\)", out)
    figures = {"mode": mode, "rc": proc.returncode, "wall_s": round(wall, 1), "passed": "loopback: passed" in out}
    if parts:
        figures.update(total_s=int(parts[1]), ray_up_s=int(parts[2]), search_s=int(parts[3]))
    else:
        figures["tail"] = out[-2000:]
    return figures


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.tools.launch_times", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--install", action="store_true", help="time a fresh install from the lock")
    p.add_argument("--loopback", choices=["reuse", "full"], help="time tools/loopback_ray_up.sh in this form")
    p.add_argument("--venv", type=Path, default=ROOT / ".venv", help="the venv the loopback's ray up (and reuse) runs")
    args = p.parse_args(argv)
    if not (args.install or args.loopback):
        p.error("nothing to time: give --install and/or --loopback reuse|full")
    figures = {"load_before": os.getloadavg()}
    if args.install:
        figures["install"] = time_install(None)
        print(f"install from requirements.lock: {figures['install']['install_s']} s, "
              f"{figures['install']['venv_bytes'] / 2**30:.1f} GiB")
    if args.loopback:
        figures["loopback"] = time_loopback(args.loopback, args.venv.resolve())
        print(f"loopback ({args.loopback}): {figures['loopback']}")
    figures["load_after"] = os.getloadavg()
    print(f"record: {write_record('launch_times', figures)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
