"""Which TPE settings for a conditional space? Best val_acc at an equal number of trials, simulated.

The project's real searcher and ASHA (search.tuner.make_searcher / make_scheduler, so the space
settings tpe_multivariate, tpe_group, tpe_constant_liar, tpe_startup_trials are what is compared) drive
benchmarks/tools/scale_simulation.py's trial model: no training, the synthetic response surface over
spaces/full.py's dimensions (its conditional branches included), binomial val noise. Cheap enough
for many seeds; it ranks the settings on that surface, it does not prove them on real data.

    python -m benchmarks.experiments.sampler_settings --seeds $(seq 0 19) --trials 64 --gpus 8 [--no-warm-starts]
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import statistics
import sys
import time
from pathlib import Path

from benchmarks.record import write_record
from benchmarks.tools.scale_simulation import simulate
from search.space_file import load_space

REPO = Path(__file__).resolve().parents[2]

VARIANTS = {  # name: space settings
    "independent": {"tpe_multivariate": False, "tpe_group": False},
    "multivariate": {"tpe_multivariate": True, "tpe_group": False},  # Optuna 5's TPESampler default
    "multivariate+group": {"tpe_multivariate": True, "tpe_group": True},
    "multivariate+group, no liar": {"tpe_multivariate": True, "tpe_group": True, "tpe_constant_liar": False},
    "multivariate+group, 5 startup": {"tpe_multivariate": True, "tpe_group": True, "tpe_startup_trials": 5},
}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--space", default=str(REPO / "spaces" / "full.py"))
    p.add_argument("--seeds", type=int, nargs="+", default=list(range(8)))
    p.add_argument("--trials", type=int, default=64)
    p.add_argument("--gpus", type=int, default=8, help="trials at a time (what constant liar is for)")
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    p.add_argument("--no-warm-starts", action="store_true", help="TPE alone, without the recipes evaluated first")
    p.add_argument("--out", type=Path, default=Path("/tmp/sampler_settings.jsonl"))
    args = p.parse_args()
    base = load_space(args.space)
    if args.no_warm_starts:
        base = dataclasses.replace(base, warm_starts=())
    rows = []
    for seed in args.seeds:
        for name in args.variants:
            space = base.replace_settings(seed=seed, **VARIANTS[name])
            r = simulate(space, gpus=args.gpus, num_trials=args.trials, seed=seed)
            row = {"variant": name, "seed": seed, "best_val_acc": r["best_val_acc"], "epochs_run": r["epochs_run"],
                   "hours_to_0.95": r["hours_to_target"]["0.95"], "trials": args.trials, "gpus": args.gpus,
                   "suggest_ms_mean": r["suggest_ms_mean"], "date": time.strftime("%Y-%m-%d"),
                   "machine": platform.machine()}
            rows.append(row)
            with open(args.out, "a") as f:
                f.write(json.dumps(row) + "\n")
            print(json.dumps(row), flush=True)
    write_record("sampler_settings", rows)
    print("\n| TPE settings | best val_acc (mean ± std) | reached 0.95 | suggest ms |")
    print("|---|---:|---:|---:|")
    for name in args.variants:
        mine = [r for r in rows if r["variant"] == name]
        acc = [r["best_val_acc"] for r in mine]
        reached = sum(r["hours_to_0.95"] is not None for r in mine)
        print(f"| {name} | {statistics.mean(acc):.4f} ± {statistics.stdev(acc) if len(acc) > 1 else 0:.4f} | "
              f"{reached}/{len(mine)} | {statistics.mean(r['suggest_ms_mean'] for r in mine):.0f} |")


if __name__ == "__main__":
    main()
