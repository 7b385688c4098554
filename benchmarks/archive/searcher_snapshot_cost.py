"""Time and bytes of the searcher's part of each Tune experiment snapshot, against the trials it has seen.

Tune pickles the searcher (`Searcher.save`) with every experiment snapshot, in the driver's loop. The
project's `OptunaTPESearch.save` leaves finished trials out (they live in the study file); the
baseline is Ray's `OptunaSearch.save` on the same searcher in the same run, which pickles every trial it asked.
The searcher is built for spaces/full.py with random sampling (fast to fill), `--running` trials left unfinished.

    python -m benchmarks.archive.searcher_snapshot_cost --trials 64 1024 4096 --running 0
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.record import write_record

ROOT = Path(__file__).resolve().parents[2]


def timed_save(save, path: Path, repeats: int = 3) -> tuple[float, int]:
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        save(str(path))
        best = min(best, time.perf_counter() - t0)
    return best * 1e3, path.stat().st_size


def main(argv=None) -> list[dict]:
    from ray.tune.search.optuna import OptunaSearch

    from search.space_file import load_space
    from search.tuner import make_searcher

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--space", default=str(ROOT / "spaces" / "full.py"))
    p.add_argument("--trials", type=int, nargs="+", default=[64, 1024, 4096], help="finished trials, ascending")
    p.add_argument("--running", type=int, default=0, help="trials left unfinished (in every snapshot)")
    args = p.parse_args(argv)

    space = load_space(Path(args.space)).replace_settings(tpe_startup_trials=100_000, suggestion_pool=0)
    tmp = Path(tempfile.mkdtemp(prefix="snapshot_cost_"))
    searcher = make_searcher(space, study_path=tmp / "optuna_study.log")
    for i in range(args.running):
        searcher.suggest(f"running{i}")
        searcher.on_trial_result(f"running{i}", {space.settings.metric: 0.5, "epoch": 1, "training_iteration": 1})
    rows, done = [], 0
    for n in sorted(args.trials):
        while done < n:
            tid = f"t{done:05d}"
            searcher.suggest(tid)
            searcher.on_trial_result(tid, {space.settings.metric: 0.5, "epoch": 1, "training_iteration": 1})
            searcher.on_trial_complete(tid, {space.settings.metric: 0.6, "epoch": 3, "training_iteration": 3})
            done += 1
        all_ms, all_bytes = timed_save(lambda path: OptunaSearch.save(searcher, path), tmp / "ray.pkl")
        ours_ms, our_bytes = timed_save(searcher.save, tmp / "ours.pkl")
        rows.append({"finished": n, "running": args.running, "ray_save_ms": round(all_ms, 1), "ray_mb": round(all_bytes / 1e6, 2),
                     "save_ms": round(ours_ms, 1), "mb": round(our_bytes / 1e6, 2)})
        print(json.dumps(rows[-1]), flush=True)
    print(f"\n{platform.machine()} {os.cpu_count()} CPUs, Python {platform.python_version()}, {datetime.date.today()}, "
          f"load average {os.getloadavg()[0]:.1f}")
    print("| finished trials | running | Ray's save: ms / MB | this project's: ms / MB |\n|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['finished']:,} | {r['running']} | {r['ray_save_ms']:.0f} / {r['ray_mb']:.1f} | "
              f"{r['save_ms']:.0f} / {r['mb']:.1f} |")
    write_record("searcher_snapshot_cost", rows)
    return rows


if __name__ == "__main__":
    main()
