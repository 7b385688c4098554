"""Time and bytes of Tune's experiment snapshot (the trial part), against the trials a search holds.

Every snapshot (at least every 10 s, "auto" stretches the period to 19x the last snapshot's time, and a
forced one whenever a trial has reported `keep_checkpoints` checkpoints since the last) runs
`TuneController.save_to_dir` in the driver's loop: each trial whose state changed since the last snapshot is
serialised again (`Trial.get_json_state`: the trial, its run metadata with Tune's running statistics of every
numeric metric, its checkpoint manager), then the JSON of *every* trial is written to one file, which a forced
snapshot also waits to upload. This benchmark builds Tune `Trial` objects the way a search of spaces/full.py
does (sampled configs, the metrics a trial reports, Tune's auto-filled result fields, `keep_checkpoints`
checkpoints each) and times that code path: N trials in the experiment, `--changed` of them (the running
ones) serialised again. The trials are built here, not run; their per-trial sizes are printed so they can be
compared with a real run's `experiment_state-*.json`.

    python -m benchmarks.archive.experiment_state_cost --trials 64 1024 4096 --changed 1024
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import random
import shutil
import socket
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.record import write_record

ROOT = Path(__file__).resolve().parents[2]


def trial_metrics(epoch: int, rng: random.Random) -> dict:
    """What trainable/trial.py reports each epoch (keys as in a trial's metrics.jsonl)."""
    return {"epoch": epoch, "train_loss": rng.uniform(0.2, 3), "val_loss": rng.uniform(0.2, 3),
            "val_acc": rng.uniform(0.5, 0.97), "val_macro_f1": rng.uniform(0.5, 0.97), "lr": rng.uniform(1e-5, 1e-3),
            "head_lr": rng.uniform(1e-5, 1e-2), "epoch_seconds": rng.uniform(7, 30),
            "train_images_per_s": rng.uniform(500, 3000), "param_count": 23_712_932, "device": "cuda",
            "peak_gpu_mem_gb": rng.uniform(5, 60), "node_id": os.urandom(28).hex()}


def tune_result(trial, metrics: dict, epoch: int, t0: float, checkpoint_dir: str | None) -> dict:
    """The fields Tune's function trainable adds to each reported result."""
    now = t0 + 20.0 * epoch
    return {**metrics, "timestamp": int(now), "checkpoint_dir_name": checkpoint_dir, "should_checkpoint": bool(checkpoint_dir),
            "done": False, "training_iteration": epoch, "trial_id": trial.trial_id,
            "date": datetime.datetime.fromtimestamp(now).strftime("%Y-%m-%d_%H-%M-%S"), "time_this_iter_s": 20.0,
            "time_total_s": 20.0 * epoch, "pid": 12345, "hostname": socket.gethostname(), "node_ip": "10.0.12.34",
            "config": trial.config, "time_since_restore": 20.0 * epoch, "iterations_since_restore": epoch}


def build_trials(space, n: int, storage, trainable_name: str, epochs: int, keep: int, seed: int) -> list:
    from compat.ray_internals import experiment_state_types

    TrainingResult, _ = experiment_state_types()
    from ray.tune import Checkpoint, CheckpointConfig
    from ray.tune.experiment import Trial
    from ray.tune.search.variant_generator import format_vars

    from search.tuner import make_searcher, trial_dirname

    rng = random.Random(seed)
    searcher = make_searcher(space.replace_settings(tpe_startup_trials=100_000, suggestion_pool=0))
    s = space.settings
    trials = []
    for i in range(n):
        params = searcher.suggest(f"t{i:05d}")
        searcher.on_trial_complete(f"t{i:05d}", {s.metric: 0.5, "epoch": 1, "training_iteration": 1})
        trial = Trial(trainable_name, config=space.trial_config(params, "/data/train"), storage=storage, evaluated_params=params,
                      experiment_tag=f"{i}_{format_vars(params)}",
                      checkpoint_config=CheckpointConfig(num_to_keep=keep, checkpoint_score_attribute=s.metric,
                                                         checkpoint_score_order=s.mode),
                      trial_dirname_creator=trial_dirname, max_failures=s.max_failures)
        # What Trial.init_local_path sets (it needs a Ray session only to find its staging dir).
        trial.relative_logdir = trial.storage.trial_dir_name = trial_dirname(trial)
        t0 = time.time()
        for epoch in range(1, epochs + 1):
            with_checkpoint = epoch > epochs - keep
            ckpt = f"checkpoint_{epoch:06d}" if with_checkpoint else None
            result = tune_result(trial, trial_metrics(epoch, rng), epoch, t0, ckpt)
            trial.update_last_result(result)
            if with_checkpoint:
                path = f"{storage.experiment_fs_path}/{trial.storage.trial_dir_name}/{ckpt}"
                trial.on_checkpoint(TrainingResult(checkpoint=Checkpoint(path), metrics=result))
        trial.set_status(Trial.TERMINATED)
        trials.append(trial)
    return trials


def snapshot(trials: list, changed: int, cache: dict, path: Path) -> tuple[float, float, int]:
    """TuneController.save_to_dir's trial part: re-serialise the changed trials, write every trial's JSON."""
    from ray.tune.utils.serialization import TuneFunctionEncoder

    for trial in trials[-changed:]:
        trial.invalidate_json_state()
        trial.run_metadata.invalidate_cache()
    t0 = time.perf_counter()
    for trial in trials[-changed:]:
        cache[trial.trial_id] = trial.get_json_state()
    t1 = time.perf_counter()
    with open(path, "w") as f:
        json.dump({"trial_data": list(cache.values()), "runner_data": {}, "stats": {}}, f, cls=TuneFunctionEncoder)
    t2 = time.perf_counter()
    return (t1 - t0) * 1e3, (t2 - t1) * 1e3, path.stat().st_size


def main(argv=None) -> list[dict]:
    from compat.ray_internals import experiment_state_types

    _, StorageContext = experiment_state_types()
    from ray.tune.registry import register_trainable

    from search.space_file import load_space
    from search.tuner import trainable_with_resources

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--space", default=str(ROOT / "spaces" / "full.py"))
    p.add_argument("--trials", type=int, nargs="+", default=[64, 1024, 4096], help="trials in the experiment, ascending")
    p.add_argument("--changed", type=int, default=1024, help="trials serialised again per snapshot (at most all)")
    p.add_argument("--epochs", type=int, default=9, help="results reported per trial")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)

    space = load_space(Path(args.space))
    tmp = Path(tempfile.mkdtemp(prefix="experiment_state_cost_"))
    try:
        register_trainable("tune_trial", trainable_with_resources(space))
        storage = StorageContext(storage_path=str(tmp / "storage"), experiment_dir_name="bench")
        trials, cache, rows = [], {}, []
        for n in sorted(args.trials):
            trials += build_trials(space, n - len(trials), storage, "tune_trial", args.epochs,
                                   space.settings.keep_checkpoints, args.seed + len(trials))
            for trial in trials:
                cache.setdefault(trial.trial_id, trial.get_json_state())
            changed = min(args.changed, n)
            runs = [snapshot(trials, changed, cache, tmp / "experiment_state.json") for _ in range(args.repeats)]
            serialise_ms, write_ms, size = min(runs, key=lambda r: r[0] + r[1])
            state, metadata = cache[trials[0].trial_id]
            rows.append({"trials": n, "changed": changed, "serialise_ms": round(serialise_ms, 1),
                         "write_ms": round(write_ms, 1), "snapshot_ms": round(serialise_ms + write_ms, 1),
                         "mb": round(size / 1e6, 1), "trial_kb": round(len(state) / 1e3, 1),
                         "run_metadata_kb": round(len(metadata) / 1e3, 1),
                         "ms_per_changed_trial": round(serialise_ms / changed, 2)})
            print(json.dumps(rows[-1]), flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"\n{platform.machine()} {os.cpu_count()} CPUs, Python {platform.python_version()}, {datetime.date.today()}, "
          f"load average {os.getloadavg()[0]:.1f}; fastest of {args.repeats}")
    print("| trials | serialised again | ms per trial serialised | serialise ms | write ms | snapshot ms | MB | KB per trial "
          "(state + run metadata) |\n|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['trials']:,} | {r['changed']:,} | {r['ms_per_changed_trial']:.2f} | {r['serialise_ms']:.0f} | "
              f"{r['write_ms']:.0f} | {r['snapshot_ms']:.0f} | {r['mb']:.1f} | {r['trial_kb']} + {r['run_metadata_kb']} |")
    write_record("experiment_state_cost", rows)
    return rows


if __name__ == "__main__":
    main()
