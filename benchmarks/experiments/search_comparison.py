"""TPE + ASHA against random search without early stopping, at an equal budget of training epochs.

Each search runs until its trials have trained `--budget` epochs in total (a Tune stopper ends it).
For each search: the best val_acc any trial reached, and the total epochs spent when it was first
reached. Variants:
    random        Optuna RandomSampler, every trial runs max_epochs (FIFO, no early stopping)
    tpe_asha      TPE + ASHA, ASHA-stopped trials told to Optuna as PRUNED (this project's searcher)
    tpe_asha_ray  TPE + ASHA, Ray's default: ASHA-stopped trials told as COMPLETE with their last value

    python -m benchmarks.experiments.search_comparison --seeds 0 1 2 --budget 36
"""
from __future__ import annotations

import argparse
import json
import platform
import random
import shutil
import statistics
import time
from pathlib import Path

import optuna
import ray
from ray import tune
from ray.tune.schedulers import FIFOScheduler

from benchmarks.record import write_record
from search.space_file import load_space
from search.tuner import make_scheduler, make_searcher, trainable_with_resources
from core.data import resolve_data_root

VARIANTS = ("random", "tpe_asha", "tpe_asha_ray")


class EpochBudget(tune.Stopper):
    """Stop the whole search once its trials have reported `budget` epochs in total.

    Counts distinct (trial, epoch) pairs: Tune calls a stopper again with a trial's last result when the
    trainable returns, and counting calls made every trial that ran to the end cost one epoch more than
    it trained (random search under-spent its budget, e.g. 20 of 24 epochs in BENCHMARKS.md section 3).
    """

    def __init__(self, budget: int):
        self.budget, self.seen = budget, set()

    @property
    def spent(self) -> int:
        return len(self.seen)

    def __call__(self, trial_id, result):
        self.seen.add((trial_id, result["training_iteration"]))
        return False

    def stop_all(self):
        return self.spent >= self.budget


def run_search(space, variant: str, seed: int, budget: int, storage: Path, data: str) -> dict:
    started = time.time()
    results = fit_search(space, variant, seed, budget, storage, data)
    return {"variant": variant, "seed": seed, **best_and_epochs_to_best(results), "wall_s": time.time() - started}


def fit_search(space, variant: str, seed: int, budget: int | None, storage: Path, data: str, num_samples=None):
    """One search of `variant` until its trials have trained `budget` epochs (None: until num_samples ran)."""
    space = space.replace_settings(seed=seed)
    if variant == "random":
        searcher = make_searcher(space, sampler=optuna.samplers.RandomSampler(seed=seed))
        scheduler = FIFOScheduler()
    elif variant == "recipes":  # the warm starts alone, each trained to max_epochs
        searcher, scheduler = make_searcher(space), FIFOScheduler()
    else:
        searcher = make_searcher(space, truthful=variant.startswith("tpe_asha"))
        scheduler = make_scheduler(space)
    s = space.settings
    name = f"{variant}-seed{seed}"
    tuner = tune.Tuner(
        trainable_with_resources(space),
        param_space=space.trial_config({}, data),
        tune_config=tune.TuneConfig(metric=s.metric, mode=s.mode, search_alg=searcher, scheduler=scheduler,
                                    num_samples=num_samples or s.num_samples, max_concurrent_trials=s.max_concurrent,
                                    trial_dirname_creator=lambda t: t.trial_id),
        run_config=tune.RunConfig(name=name, storage_path=str(storage), stop=EpochBudget(budget) if budget else None,
                                  verbose=0, checkpoint_config=tune.CheckpointConfig(num_to_keep=1)),
    )
    return tuner.fit()


def best_and_epochs_to_best(results) -> dict:
    """Order every reported epoch of every trial by time; find the best value and when it first appeared."""
    reports = []
    for result in results:
        frame = result.metrics_dataframe
        if frame is not None and "val_acc" in frame:
            reports += list(zip(frame["timestamp"], frame["val_acc"]))
    reports.sort()
    best = max(v for _, v in reports)
    first = next(i for i, (_, v) in enumerate(reports, start=1) if v == best)
    return {"best_val_acc": best, "epochs_to_best": first, "epochs_spent": len(reports), "trials": len(results)}


def stratified_subset(source: Path, fraction: float, seed: int, target_root: Path) -> Path:
    """Symlink a seeded `fraction` of each train class (imbalance kept), all of val and test, to cut epoch time."""
    target = target_root / f"{source.name}-train{int(fraction * 100)}pct-seed{seed}"
    if target.exists():
        return target
    rng = random.Random(seed)
    staging = target.with_name(target.name + ".tmp")
    shutil.rmtree(staging, ignore_errors=True)
    for class_dir in sorted((source / "train").iterdir()):
        files = sorted(class_dir.iterdir())
        keep = rng.sample(files, max(1, round(len(files) * fraction)))
        (staging / "train" / class_dir.name).mkdir(parents=True)
        for f in keep:
            (staging / "train" / class_dir.name / f.name).symlink_to(f.resolve())
    for name in ("val", "test", "test_labels.csv"):
        if (source / name).exists():
            (staging / name).symlink_to((source / name).resolve())
    staging.rename(target)
    return target


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--space", default=str(Path(__file__).with_name("space_tiny100.py")))
    p.add_argument("--data", default=None)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--budget", type=int, default=36, help="training epochs per search, all trials together")
    p.add_argument("--train-fraction", type=float, default=1.0,
                   help="use a seeded stratified fraction of train (val whole) to fit the CPU time")
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    p.add_argument("--storage", default="results/bench/search")
    p.add_argument("--out", default="results/bench/search_comparison.jsonl")
    args = p.parse_args()
    space = load_space(args.space)
    data = resolve_data_root(args.data or space.settings.data)
    if args.train_fraction < 1.0:
        data = stratified_subset(data, args.train_fraction, 0, Path(args.storage).resolve().parent)
    data = str(data)
    storage = Path(args.storage).resolve()
    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR")
    rows = []
    for seed in args.seeds:
        for variant in args.variants:
            row = run_search(space, variant, seed, args.budget, storage, data)
            row.update(budget=args.budget, data=data, date=time.strftime("%Y-%m-%d"), machine=f"{platform.machine()} 2 CPUs")
            rows.append(row)
            with open(args.out, "a") as f:
                f.write(json.dumps(row) + "\n")
            print(json.dumps(row), flush=True)
    write_record("search_comparison", rows)
    for variant in args.variants:
        mine = [r for r in rows if r["variant"] == variant]
        acc = [r["best_val_acc"] for r in mine]
        ep = [r["epochs_to_best"] for r in mine]
        sd = lambda xs: statistics.stdev(xs) if len(xs) > 1 else 0.0
        print(f"| {variant} | {statistics.mean(acc):.4f} ± {sd(acc):.4f} | {statistics.mean(ep):.1f} ± {sd(ep):.1f} |")


if __name__ == "__main__":
    main()
