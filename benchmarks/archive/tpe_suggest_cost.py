"""CPU time of one TPE suggestion against the history it models: full TPE vs a bounded history window.

A study over spaces/full.py is filled with N finished trials (values from the scale simulation's trial
model; ASHA-like stops: most PRUNED after 3 epochs, some after 9, a few COMPLETE at 30), then the project's
sampler (`search.sampler.make_tpe_sampler` under driver_profile "large", the space's TPE settings) suggests `--repeats` configs for each
history window, against Optuna's own TPESampler with the same settings (the baseline, what the search used
before). Times are this thread's CPU time, so other load on the machine does not inflate them.

    python -m benchmarks.archive.tpe_suggest_cost --trials 1000 2000 4000 --windows 0 500
"""
from __future__ import annotations

import argparse
import json
import platform
import random
import statistics
import sys
import time
from pathlib import Path

from benchmarks.record import write_record

REPO = Path(__file__).resolve().parents[2]


def filled_study(space, n: int, seed: int = 0, running: int = 0):
    import optuna
    from optuna.trial import TrialState
    from benchmarks.tools.scale_simulation import trial_model

    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=seed))
    rng = random.Random(seed)
    for i in range(n):
        t = study.ask()
        space.define(t)
        _, accs = trial_model(t.params, max_epochs=30, base_epoch_s=7.0, seed=i)
        stop = rng.choice([3] * 9 + [9] * 3 + [30])  # ASHA with reduction factor 3
        for e in range(stop):
            t.report(accs[e], e + 1)
        study.tell(t, accs[-1] if stop == 30 else None, state=TrialState.COMPLETE if stop == 30 else TrialState.PRUNED)
    for _ in range(running):  # trials in flight: constant_liar counts them as bad
        space.define(study.ask())
    return study


def suggest_ms(study, space, repeats: int) -> list[float]:
    from optuna.trial import TrialState

    times = []
    for _ in range(repeats + 1):
        t0 = time.thread_time()
        trial = study.ask()
        space.define(trial)
        times.append((time.thread_time() - t0) * 1e3)
        study.tell(trial, state=TrialState.FAIL)  # FAIL: the history TPE models does not grow
    return times[1:]  # the first call builds the window


def main(argv=None):
    import warnings

    import optuna

    from benchmarks.tools.scale_simulation import as_profile
    from search.sampler import make_tpe_sampler
    from search.space_file import load_space

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--space", default=str(REPO / "spaces" / "full.py"))
    p.add_argument("--trials", type=int, nargs="+", default=[1000, 2000, 4000])
    p.add_argument("--windows", type=int, nargs="+", default=[0, 500])
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--running", type=int, nargs="+", default=[0], help="trials in flight (one table per value)")
    args = p.parse_args(argv)
    space = load_space(args.space)
    rows = []
    s = space.settings
    for n, running in [(n, r) for r in args.running for n in args.trials]:
        study = filled_study(space, n, running=running)
        for w in ["optuna"] + args.windows:
            if w == "optuna":
                study.sampler = optuna.samplers.TPESampler(
                    seed=s.seed, n_startup_trials=s.tpe_startup_trials, multivariate=s.tpe_multivariate,
                    group=s.tpe_group, constant_liar=s.tpe_constant_liar)
            else:
                study.sampler = make_tpe_sampler(as_profile(space, "large").replace_settings(tpe_history_window=w))
            ms = suggest_ms(study, space, args.repeats)
            rows.append({"finished_trials": n, "running_trials": running, "window": w, "median_ms": round(statistics.median(ms), 1),
                         "max_ms": round(max(ms), 1)})
            print(json.dumps(rows[-1]), flush=True)
    print(f"\n{time.strftime('%Y-%m-%d')}, {platform.machine()}, Python {platform.python_version()}, "
          f"optuna {optuna.__version__}; thread CPU ms per suggestion, median of {args.repeats}")
    print("| finished trials | running | Optuna TPESampler | " + " | ".join(f"window {w}" for w in args.windows)
          + " | Optuna / last window |")
    print("|---:|---:|" + "---:|" * (len(args.windows) + 2))
    for n, running in [(n, r) for r in args.running for n in args.trials]:
        ms = [r["median_ms"] for r in rows if r["finished_trials"] == n and r["running_trials"] == running]
        print(f"| {n} | {running} | " + " | ".join(f"{m:.1f}" for m in ms) + f" | {ms[0] / ms[-1]:.1f}x |")
    write_record("tpe_suggest_cost", rows)
    return rows


if __name__ == "__main__":
    main()
