"""Scale, on real Ray: 32 or 64 concurrent trials on fake accelerators, driven by the project's searcher and scheduler.

Ray starts locally with N fake accelerators as a custom resource (`fake_gpu`) and N logical CPUs; each
trial asks for {"cpu": 1, "fake_gpu": 1}, so exactly N trials run at once. The trials sleep instead of
training: per epoch they sleep the epoch time of benchmarks/tools/scale_simulation.py's trial model times
`--time-scale` (0.07: 0.5 s for resnet50 up to 2.1 s for seresnextaa101d_32x8d), then report the model's
val_acc for that epoch through the real trial's reporter (core/epoch_reporter.py: the space's report_epochs,
checkpoint cadence and checkpoint_after_decision decide what is reported when; a checkpoint is a directory
holding one `--checkpoint-kb` file) and sink (worker/tune_sink.py: report_in_background). Searcher, scheduler,
TuneConfig and RunConfig are the search's own (search/tuner.py), from spaces/full.py (max 30 epochs, grace 3,
reduction factor 3) with its driver_profile, or the one `--driver-profile` names: "large" also caches Ray's
registry lookups (search.tuner.fit), reuses actors and runs the suggestion pool against a study file.

Measured:
  - fake-accelerator utilisation: sum over trials of (last report seen by the driver - function entered)
    / (N x wall time of tuner.fit()); "useful" counts the sleeps only;
  - per-trial overhead: first report reaching the driver - function entered - first sleep; and the gap
    between consecutive reports inside the trial minus the sleep (checkpoint persisted + waiting for the
    driver to ask for the next result);
  - the driver's loop by phase of a trial's life (benchmarks/tools/driver_phases.py: ms per trial start and end, per
    result, per checkpoint) and the driver's CPU split into its loop thread, this benchmark's own memory
    sampler and the rest;
  - the driver's CPU time and peak RSS, and the peak RSS of GCS, raylet and the worker processes
    (sampled every 0.5 s with psutil).

    python -m benchmarks.tools.scale_real_ray --concurrency 32 64 [--driver-profile large]
    python -m benchmarks.tools.scale_real_ray --quick

Run it from the repository root (benchmarks/README.md); Ray's workers import this module by that path.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from benchmarks.record import write_record

REPO = Path(__file__).resolve().parents[2]


def repo_on_pythonpath() -> dict:
    """The environment for Ray's workers and this script's own runs: they import benchmarks.tools.* from the root."""
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])])}


def sleeping_trial(config: dict) -> None:
    """The function trainable: sleep each epoch, report the simulated val_acc with a checkpoint, through the
    reporter the real trial uses (worker/tune_trial.py; report_in_background from the space's trial keys)."""
    from worker.tune_sink import BackgroundTuneSink, TuneSink
    from worker.tune_trial import run_reporting_to_tune

    t_enter = time.time()
    reporter = BackgroundTuneSink() if config.get("report_in_background") else TuneSink()
    run_reporting_to_tune(lambda cfg, rep: sleep_and_report(cfg, rep, t_enter), config, reporter)


def sleep_and_report(config: dict, sink, t_enter: float) -> None:
    """Sleep each epoch ("batches" of at most 50 ms: a stopped trial ends between them) and hand each epoch to the
    real trial's EpochReporter, which reports, checkpoints and waits for decisions as train_trial does."""
    from ray import tune

    from benchmarks.tools.scale_simulation import trial_model, trial_seed
    from core.config import TrialConfig
    from core.epoch_reporter import EpochReporter
    from core.errors import TrialStopped

    meta = config["_scale"]
    params = {k: v for k, v in config.items() if k != "_scale"}
    trial_id = tune.get_context().get_trial_id()
    durations, accs = trial_model(params, max_epochs=meta["max_epochs"], base_epoch_s=meta["epoch_s"],
                                  seed=trial_seed(trial_id, meta["seed"]))
    payload = os.urandom(int(meta["checkpoint_kb"] * 1024))
    reporter = EpochReporter(sink, TrialConfig.from_dict(params), history=[])
    slept_total = 0.0
    for epoch, (d, acc) in enumerate(zip(durations, accs), start=1):
        t_sleep = time.time()
        while time.time() < t_sleep + d * meta["time_scale"]:
            if reporter.stopped():
                raise TrialStopped("stopped")
            time.sleep(min(0.05, max(0.0, t_sleep + d * meta["time_scale"] - time.time())))
        slept_total += time.time() - t_sleep
        metrics = {"epoch": epoch, "val_acc": acc, "t_enter": t_enter, "slept_total": slept_total,
                   "t_sleep": t_sleep, "t_report": time.time()}
        reporter.end_of_epoch(metrics, lambda folder: (folder / "state.bin").write_bytes(payload))


class Timeline:
    """A Tune callback: driver-side clock of each trial's start, results and end."""

    def __new__(cls):
        from ray import tune

        class _Timeline(tune.Callback):
            def __init__(self):
                self.started, self.results, self.ended = {}, {}, {}
                self.most_pending = 0

            def on_step_begin(self, iteration, trials, **info):
                self.most_pending = max(self.most_pending, sum(t.status == "PENDING" for t in trials))

            def on_trial_start(self, iteration, trials, trial, **info):
                self.started[trial.trial_id] = time.time()

            def on_trial_result(self, iteration, trials, trial, result, **info):
                self.results.setdefault(trial.trial_id, []).append((time.time(), dict(result)))

            def on_trial_complete(self, iteration, trials, trial, **info):
                self.ended[trial.trial_id] = time.time()

            def on_trial_error(self, iteration, trials, trial, **info):
                self.ended[trial.trial_id] = time.time()

        return _Timeline()


class MemorySampler(threading.Thread):
    """Peak RSS of the driver, GCS, raylet and Ray's worker processes (every `every` s)."""

    def __init__(self, every: float = 0.5):
        super().__init__(daemon=True)
        import ray  # noqa: F401  (Ray's vendored psutil)
        import psutil

        self.psutil, self.every, self.stop_flag = psutil, every, threading.Event()
        self.me = psutil.Process()
        self.peak = {"driver": 0, "gcs_server": 0, "raylet": 0, "workers_total": 0, "worker_max": 0, "other": 0}
        self.peak_workers = 0
        self.cpu_s = 0.0

    def classify(self, proc) -> str:
        name = proc.name()
        if "gcs_server" in name:
            return "gcs_server"
        if name == "raylet" or "raylet" in name:
            return "raylet"
        if name.startswith("ray::") or "default_worker.py" in " ".join(proc.cmdline()[:3]):
            return "worker"
        return "other"

    def sample(self):
        totals = {"driver": self.me.memory_info().rss, "gcs_server": 0, "raylet": 0, "workers_total": 0,
                  "worker_max": 0, "other": 0}
        workers = 0
        for child in self.me.children(recursive=True):
            try:
                kind, rss = self.classify(child), child.memory_info().rss
            except (self.psutil.NoSuchProcess, self.psutil.AccessDenied, self.psutil.ZombieProcess):
                continue
            if kind == "worker":
                workers += 1
                totals["workers_total"] += rss
                totals["worker_max"] = max(totals["worker_max"], rss)
            else:
                totals[kind] += rss
        for k, v in totals.items():
            self.peak[k] = max(self.peak[k], v)
        self.peak_workers = max(self.peak_workers, workers)

    def run(self):
        cpu0 = time.thread_time()
        while not self.stop_flag.is_set():
            try:
                self.sample()
            except Exception:
                pass
            self.cpu_s = time.thread_time() - cpu0  # the sampler's own CPU, inside the driver's process
            self.stop_flag.wait(self.every)


def pct(values, q):
    values = sorted(values)
    if not values:
        return None
    return values[min(len(values) - 1, int(round(q / 100 * (len(values) - 1))))]


def run_one(space, n: int, trials: int, *, time_scale: float, epoch_s: float, checkpoint_kb: float,
            seed: int, storage: str, reuse_actors: bool = False, mode: str = "after",
            profile: str = "") -> dict:
    """reuse_actors: reuse them even if the space does not (driver_profile "large" does)."""
    import ray
    import psutil
    from ray import tune

    from benchmarks.tools.driver_phases import PhaseClock
    from core.report_policy import CHECKPOINT_OF_REPORTED_EPOCH
    from search.space_file import searched_parameters
    from search.trial_tensorboard import TrialTensorBoard
    from search.tuner import fit, run_config, tune_config

    class TensorBoardOpenedAtStart(TrialTensorBoard):
        def log_trial_start(self, trial):
            super().log_trial_start(trial)
            self._writer(trial)

    space = space.replace_settings(num_samples=trials, seed=seed)
    s = space.settings
    me = psutil.Process()
    os.environ.update(repo_on_pythonpath())  # Ray's workers inherit it: they import this module
    ray.init(num_cpus=n, resources={"fake_gpu": n}, include_dashboard=False, logging_level="ERROR",
             log_to_driver=False, object_store_memory=256 * 1024**2)
    sampler = MemorySampler()
    sampler.start()
    timeline = Timeline()
    param_space = {**space.trial_config({}), "_scale": {"max_epochs": s.max_epochs, "epoch_s": epoch_s,
                                                       "time_scale": time_scale, "seed": seed,
                                                       "checkpoint_kb": checkpoint_kb}}
    # The search's own TuneConfig and RunConfig. "before" is the search as it was: max_concurrent_trials
    # unset (Tune then keeps one trial pending) and Tune's TensorBoard logger, which flushes every result.
    # "tune-start" is "after" with each trial started as Tune does it: the trainable looked up in Ray's registry
    # five times, the trial's TensorBoard file opened at its start instead of at its first result.
    # The study lives in a journal file, as in a search (search/execute.py); the suggestion pool needs one.
    config = tune_config(space, max_concurrent=None if mode == "before" else n,
                         study_path=Path(storage) / "optuna_study.log")
    config.reuse_actors = reuse_actors or s.reuse_actors
    logger = (tune.logger.TBXLoggerCallback() if mode == "before" else
              {"tune-start": TensorBoardOpenedAtStart, "after": TrialTensorBoard}[mode](
                  metric=s.metric, max_epochs=s.max_epochs, parameters=searched_parameters(space)))
    run = run_config(space, f"scale-{n}-{mode}", storage, callbacks=[timeline, logger])
    run.verbose = 0
    tuner = tune.Tuner(tune.with_resources(sleeping_trial, {"cpu": 1, "fake_gpu": 1}), param_space=param_space,
                       tune_config=config, run_config=run)
    profiler = None
    if profile:
        import cProfile
        profiler = cProfile.Profile()
        profiler.enable()
    cpu0, main_cpu0 = me.cpu_times(), time.thread_time()
    t0 = time.time()
    with PhaseClock() as phases:
        results = fit(tuner, space) if mode == "after" else tuner.fit()
    t1 = time.time()
    cpu1, main_cpu = me.cpu_times(), time.thread_time() - main_cpu0
    if profiler is not None:
        profiler.disable()
        profiler.dump_stats(profile)
    sampler.stop_flag.set()
    sampler.join()
    ray.shutdown()

    wall = t1 - t0
    held, useful, first_overhead, gaps, driver_gaps, enter_delay, ends, enters = [], [], [], [], [], [], [], []
    epochs = trained = stopped_early = errors = 0  # results through the driver; epochs the trials trained
    spans = []
    for trial_id, rows in timeline.results.items():
        rows.sort(key=lambda r: r[0])
        res = [r for _, r in rows]
        t_enter = res[0]["t_enter"]
        t_last = rows[-1][0]
        enters.append(t_enter)
        ends.append(t_last)
        held.append(t_last - t_enter)
        useful.append(res[-1]["slept_total"])
        first_overhead.append(rows[0][0] - t_enter - res[0]["slept_total"])
        # Between two epochs' reports, less the sleep in between (a decided epoch's second report, its checkpoint
        # with checkpoint_after_decision, is the same epoch: its wait is in the gap to the next epoch's report).
        epoch_rows = [(t, r) for t, r in rows if not r.get(CHECKPOINT_OF_REPORTED_EPOCH)]
        for (ta, ra), (tb, rb) in zip(epoch_rows, epoch_rows[1:]):
            slept = rb["slept_total"] - ra["slept_total"]
            gaps.append(rb["t_report"] - ra["t_report"] - slept)
            driver_gaps.append(tb - ta - slept)
        if trial_id in timeline.started:
            enter_delay.append(t_enter - timeline.started[trial_id])
        epochs += len(res)
        trained += res[-1]["epoch"]
        spans.append((round(t_enter - t0, 2), round(t_last - t0, 2), res[-1]["epoch"]))
        stopped_early += res[-1]["epoch"] < s.max_epochs
    for r in results:
        errors += r.error is not None
    last_enter = max(enters)
    ordered = sorted(enters)
    start_intervals = [b - a for a, b in zip(ordered, ordered[1:])]
    steady_held = sum(max(0.0, min(e, last_enter) - st) for st, e in zip(enters, ends))
    # Average number of trials inside their function over the run.
    avg_running = sum(held) / wall
    report_gap = gaps  # the blocking report (checkpoint persisted, driver asks for more) + checkpoint dir
    ms = lambda xs: None if not xs else round(1e3 * statistics.median(xs), 1)
    p90 = lambda xs: None if not xs else round(1e3 * pct(xs, 90), 1)
    return {
        "concurrency": n, "mode": mode, "most_pending_trials": timeline.most_pending,
        "driver_imports_torch": "torch" in sys.modules, "trials": trials, "trials_reported": len(timeline.results), "errors": errors,
        "stopped_early": stopped_early, "epochs": epochs, "wall_s": wall,
        "fake_gpu_util_held": sum(held) / (n * wall), "fake_gpu_util_useful": sum(useful) / (n * wall),
        "fake_gpu_util_held_until_last_start": steady_held / (n * (last_enter - t0)),
        "avg_trials_running": avg_running,
        "first_trial_entered_s": min(enters) - t0, "last_trial_entered_s": last_enter - t0,
        "first_report_overhead_ms_median": ms(first_overhead), "first_report_overhead_ms_p90": p90(first_overhead),
        "report_gap_minus_sleep_ms_median": ms(report_gap), "report_gap_minus_sleep_ms_p90": p90(report_gap),
        "driver_result_gap_minus_sleep_ms_median": ms(driver_gaps),
        "driver_result_gap_minus_sleep_ms_p90": p90(driver_gaps),
        "on_trial_start_to_function_ms_median": ms(enter_delay),
        "trial_start_interval_ms_median": ms(start_intervals),
        "trials_started_per_s": (len(enters) - 1) / (last_enter - min(enters)) if len(enters) > 1 else None,
        "driver_cpu_s": (cpu1.user - cpu0.user) + (cpu1.system - cpu0.system),
        "sampler_cpu_s": sampler.cpu_s,  # the benchmark's memory sampler: in driver_cpu_s, not the driver's work
        "driver_main_thread_cpu_s": main_cpu,  # Tune's loop
        "driver_cpu_per_result_ms": 1e3 * ((cpu1.user - cpu0.user) + (cpu1.system - cpu0.system)) / max(1, epochs),
        "epochs_trained": trained, "report_epochs": s.report_epochs, "driver_profile": s.driver_profile,
        "suggestion_pool": s.suggestion_pool, "tpe_history_window": s.tpe_history_window,
        "checkpoint_after_decision": bool(space.trial_config({}).get("checkpoint_after_decision")),
        "resume_state_every": space.trial_config({}).get("resume_state_every"),
        "report_in_background": bool(space.trial_config({}).get("report_in_background")),
        "driver_cpu_per_trained_epoch_ms": 1e3 * ((cpu1.user - cpu0.user) + (cpu1.system - cpu0.system)) / max(1, trained),
        "peak_rss_mb": {k: round(v / 2**20) for k, v in sampler.peak.items()},
        "peak_worker_processes": sampler.peak_workers,
        "reuse_actors": config.reuse_actors, "time_scale": time_scale, "epoch_s": epoch_s, "checkpoint_kb": checkpoint_kb,
        "seed": seed,
        "max_epochs": s.max_epochs, "grace_period": s.grace_period, "reduction_factor": s.reduction_factor,
        "driver_phases": phases.summary(trials=len(timeline.started), results=epochs,
                                        checkpoints=phases.calls["_on_saving_result"]),
        "trial_spans": sorted(spans),  # (function entered, last report at the driver, epochs), s after fit()
    }


def print_tables(rows):
    print("\n| concurrent trials | driver | most trials pending | trials | epochs | wall s | util held | util useful | util held until last start | "
          "first report overhead ms (median / p90) | report gap - sleep ms in trial (median / p90) | "
          "driver result gap - sleep ms (median / p90) | driver CPU s (ms per result) | report_epochs: "
          "epochs trained, driver CPU ms per epoch | trials started per s |")
    print("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|")
    for r in rows:
        print(f"| {r['concurrency']} | {r['mode']} | {r['most_pending_trials']} | {r['trials_reported']} | {r['epochs']} | {r['wall_s']:.0f} | "
              f"{r['fake_gpu_util_held']:.3f} | {r['fake_gpu_util_useful']:.3f} | "
              f"{r['fake_gpu_util_held_until_last_start']:.3f} | {r['first_report_overhead_ms_median']} / "
              f"{r['first_report_overhead_ms_p90']} | {r['report_gap_minus_sleep_ms_median']} / "
              f"{r['report_gap_minus_sleep_ms_p90']} | {r['driver_result_gap_minus_sleep_ms_median']} / "
              f"{r['driver_result_gap_minus_sleep_ms_p90']} | {r['driver_cpu_s']:.1f} ({r['driver_cpu_per_result_ms']:.1f}) | "
              f"{r['report_epochs']}: {r['epochs_trained']}, {r['driver_cpu_per_trained_epoch_ms']:.1f} | "
              f"{r['trials_started_per_s']:.2f} |")
    print("\n| concurrent trials | driver | driver imports torch | driver RSS after imports MB | driver peak RSS MB | GCS MB | raylet MB | workers total MB (processes) | largest worker MB |")
    print("|---:|---|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        m = r["peak_rss_mb"]
        print(f"| {r['concurrency']} | {r['mode']} | {r['driver_imports_torch']} | {r['driver_rss_after_imports_mb']} | {m['driver']} | {m['gcs_server']} | {m['raylet']} | {m['workers_total']} "
              f"({r['peak_worker_processes']}) | {m['worker_max']} |")
    print("\n| concurrent trials | driver | per trial start ms (wall / CPU) | of it, registry lookups | per trial end | per result | per checkpoint "
          "| per event dispatched | suggest per trial | snapshots s | driver CPU s: main thread / memory sampler / rest |")
    print("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for r in rows:
        d = r["driver_phases"]
        pair = lambda k: f"{d[k]['wall_ms']} / {d[k]['cpu_ms']}"  # noqa: E731
        rest = r["driver_cpu_s"] - r["driver_main_thread_cpu_s"] - r["sampler_cpu_s"]
        print(f"| {r['concurrency']} | {r['mode']} | {pair('per_trial_start')} | {pair('registry_per_trial')} | {pair('per_trial_end')} | "
              f"{pair('per_result')} | {pair('per_checkpoint')} | {pair('dispatch_per_event')} | "
              f"{pair('suggest_per_trial')} | {d['snapshot_total_s']} | {r['driver_main_thread_cpu_s']:.2f} / "
              f"{r['sampler_cpu_s']:.2f} / {rest:.2f} |")


def run_in_this_process(args, space, n: int, mode: str) -> dict | None:
    """One run in a fresh interpreter, so the driver's memory is its own."""
    import psutil

    if mode == "before":
        import timm  # noqa: F401  (the driver imported them before it was torch-free)
        import torch  # noqa: F401
    else:
        from core.torch_free import import_tensorboardx_without_torch
        import_tensorboardx_without_torch()  # as search/execute.py does
    rss_after_imports = psutil.Process().memory_info().rss / 2**20
    need_gb = n * 0.25  # Ray worker processes measured at 150-250 MB each
    free_gb = psutil.virtual_memory().available / 2**30
    if free_gb - need_gb < args.min_free_gb:
        print(f"skipping {n}: {free_gb:.1f} GiB available, ~{need_gb:.0f} GiB needed", file=sys.stderr)
        return None
    storage = tempfile.mkdtemp(prefix="scale_real_ray_")
    trials = int(round(n * args.trials_per_slot))
    print(f"running {n} concurrent trials ({mode}), {trials} trials, storage {storage} ...", file=sys.stderr, flush=True)
    try:
        row = run_one(space, n, trials, time_scale=args.time_scale, epoch_s=args.epoch_s,
                      checkpoint_kb=args.checkpoint_kb, seed=args.seed, storage=storage,
                      reuse_actors=args.reuse_actors, mode=mode,
                      profile=f"{args.profile}-{n}-{mode}.prof" if args.profile else "")
    finally:
        if not args.keep:
            shutil.rmtree(storage, ignore_errors=True)
    row.update(space=str(args.space), date=time.strftime("%Y-%m-%d"), load_avg=os.getloadavg(),
               driver_rss_after_imports_mb=round(rss_after_imports),
               machine=f"{platform.machine()} {os.cpu_count()} CPUs, Python {platform.python_version()}")
    print(json.dumps(row), flush=True)
    return row


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--space", default=str(REPO / "spaces" / "full.py"))
    p.add_argument("--concurrency", type=int, nargs="+", default=[32, 64], help="fake accelerators, one run each")
    p.add_argument("--trials-per-slot", type=float, default=2.0, help="trials = this x concurrency")
    p.add_argument("--max-epochs", type=int, default=0, help="override the space's max_epochs (0 = keep)")
    p.add_argument("--epoch-s", type=float, default=7.0, help="resnet50 224 px epoch on one GPU (see scale_simulation)")
    p.add_argument("--time-scale", type=float, default=0.07, help="sleep = simulated epoch seconds x this")
    p.add_argument("--checkpoint-kb", type=float, default=64.0)
    p.add_argument("--checkpoint-every", type=int, default=0,
                   help="a checkpoint every k-th epoch and the last, metrics only otherwise (trial keys resume_state_every "
                        "k, checkpoint_new_bests False); 0 = the space's own cadence (the full space: every 3rd, the same)")
    p.add_argument("--driver-profile", choices=["space", "standard", "large"], default="space",
                   help="run the space under this driver_profile (search/space_file.py; docs/scale.md)")
    p.add_argument("--report-epochs", choices=["space", "every", "decisions"], default="space",
                   help="override the space's report_epochs setting (core/report_policy.py)")
    p.add_argument("--report-in-background", choices=["space", "on", "off"], default="space",
                   help="override the trial key report_in_background (worker/tune_trial.py)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--min-free-gb", type=float, default=4.0, help="skip a run if less memory than this would be left")
    p.add_argument("--quick", action="store_true", help="8 trials on 4 fake GPUs, 6 epochs: under a minute")
    p.add_argument("--reuse-actors", action="store_true",
                   help="Tune's reuse_actors=True even where the space leaves Tune's default (False: one actor per trial; "
                        "driver_profile 'large' reuses them)")
    p.add_argument("--modes", nargs="+", default=["after"], choices=["before", "tune-start", "after"],
                   help="before: the driver as it was (torch and timm imported, one pending trial, a TensorBoard "
                        "flush per result); tune-start: as it is, but trials started as Tune does (the trainable "
                        "looked up in Ray's registry each time, TensorBoard files opened at the start); after: as "
                        "it is. Each run in a fresh interpreter, one after the other")
    p.add_argument("--one", nargs=2, metavar=("N", "MODE"), help=argparse.SUPPRESS)
    p.add_argument("--profile", default="", help="cProfile the driver's tuner.fit() into PREFIX-<n>-<mode>.prof")
    p.add_argument("--keep", action="store_true", help="keep the temporary Tune storage")
    p.add_argument("--out", default="", help="append one JSON line per run here")
    args = p.parse_args(argv)
    import ray  # noqa: F401  (puts Ray's vendored psutil, ray/thirdparty_files, on sys.path)
    import psutil

    from benchmarks.tools.scale_simulation import as_profile
    from search.space_file import load_space

    space = load_space(args.space)
    if args.driver_profile != "space":
        space = as_profile(space, args.driver_profile)
    if args.checkpoint_every:
        space = space.replace_settings(trial={**space.settings.trial, "resume_state_every": args.checkpoint_every,
                                              "checkpoint_new_bests": False})
    if args.quick:
        args.concurrency, args.trials_per_slot, args.max_epochs = [4], 2.0, 6
    if args.max_epochs:
        s = space.settings
        space = space.replace_settings(max_epochs=args.max_epochs, grace_period=min(s.grace_period, args.max_epochs))
    if args.report_epochs != "space":
        space = space.replace_settings(report_epochs=args.report_epochs)
    if args.report_in_background != "space":
        space = space.replace_settings(trial={**space.settings.trial, "report_in_background": args.report_in_background == "on"})
    if args.one:
        return run_in_this_process(args, space, int(args.one[0]), args.one[1])
    rows = []
    for n in args.concurrency:
        for mode in args.modes:
            cmd = [sys.executable, "-m", "benchmarks.tools.scale_real_ray", "--one", str(n), mode,
                   *(argv if argv is not None else sys.argv[1:])]
            proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, cwd=REPO, env=repo_on_pythonpath())
            lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
            if proc.returncode != 0 or not lines:
                print(f"run {n} {mode} failed (exit {proc.returncode})", file=sys.stderr)
                continue
            row = json.loads(lines[-1])
            rows.append(row)
            print(json.dumps({k: v for k, v in row.items() if k != "trial_spans"}), flush=True)
            if args.out:
                with open(args.out, "a") as f:
                    f.write(json.dumps(row) + "\n")
    print_tables(rows)
    if rows:
        write_record("scale_real_ray", rows)
    return rows


if __name__ == "__main__":
    main()
