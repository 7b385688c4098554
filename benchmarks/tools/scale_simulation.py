"""Scale, by simulation: the project's TPE searcher and ASHA scheduler driving hundreds of GPUs in simulated time.

No Ray actors and no training. The searcher is `search.tuner.make_searcher(space)` (OptunaTPESearch,
TPE) and the scheduler `search.tuner.make_scheduler(space)` (ASHA), built from a space file
(default spaces/full.py, the mission's space) and called exactly as Ray Tune's controller calls them:
`set_search_properties`, `suggest` / `on_trial_add`, then per reported epoch `scheduler.on_trial_result`
and, unless it says STOP, `searcher.on_trial_result`; on STOP `scheduler.on_trial_complete` and
`searcher.on_trial_complete` with the last result.

A heap of events in simulated seconds stands in for the cluster: "GPU free" (start the next trial) and
"epoch end" (a trial reports). The driver is one serial server, as Tune's controller is: every call into
the searcher or scheduler is timed on this CPU (its thread CPU time), and that advances the driver's clock, so
a GPU whose trial reported waits until the driver has decided, and a freed GPU waits for `suggest()`.

Trials (`trial_model`), shared with benchmarks/tools/scale_real_ray.py:
  - epoch time: resnet50 at 224 px = `--epoch-s` (default 7 s: 21,024 HW1 images at ~3,000 img/s on an
    H100 with AMP; an assumption, not measured here, as no GPU was lent), scaled per backbone by
    approximate GMACs at 224 px (timm model cards), the eval share (20%) by (eval_size/224)^2, and
    jittered by the 1.3% spread of the uncontended epoch times in BENCHMARKS.md section 3;
  - learning curve: val_acc(e) = C * (1 - exp(-k e/E)) / (1 - exp(-k)), with C the config's ceiling and k
    drawn from the rates fitted to the 13 real curves recorded on tiny100 (RECORDED_CURVES below), plus
    binomial noise of a `--val-images` validation set (the recorded curves' residuals match binomial
    noise of their 1,000-image val set);
  - ceiling C: a SYNTHETIC response surface over the full space's dimensions (`ceiling`), peaked near
    the seed reports' recipes (~0.95) with a better region around them; it makes the search non-trivial,
    it is not a claim about which hyperparameters are good.

    python -m benchmarks.tools.scale_simulation --gpus 256 1024 --trials-per-gpu 4
    python -m benchmarks.tools.scale_simulation --quick

A run of the standard profile leaves the scale flags off; any of --suggestion-pool, --tpe-history-window > 0,
--report-epochs decisions, --report-in-background, --checkpoint-after-decision runs driver_profile "large"
(benchmarks/tools/profile_comparison.py runs both side by side).
"""
from __future__ import annotations

import argparse
import hashlib
import heapq
import json
import math
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.record import write_record

REPO = Path(__file__).resolve().parents[2]

# Real per-epoch val_acc curves, recorded 2026-11-22 on this machine (BENCHMARKS.md sections 1 and 3):
# results/bench/search/random-seed{0,1,2}/<trial>/result.json (resnet10t from scratch, 32 px, 30% of
# tiny100 train, 4 epochs, every random-search trial that ran all 4) and
# results/bench/tiny100-resnet18-64/metrics.jsonl (resnet18 from scratch, 64 px, 5 epochs).
RECORDED_CURVES = {
    "random-seed0/367bd7fa": (0.019, 0.021, 0.059, 0.064),
    "random-seed0/93c7370c": (0.042, 0.039, 0.060, 0.064),
    "random-seed0/bdeab6d1": (0.037, 0.049, 0.076, 0.079),
    "random-seed0/fce13cc5": (0.014, 0.024, 0.033, 0.031),
    "random-seed1/3ce48966": (0.022, 0.026, 0.074, 0.079),
    "random-seed1/567d5fcb": (0.038, 0.052, 0.058, 0.059),
    "random-seed1/8beb0ef6": (0.025, 0.033, 0.061, 0.058),
    "random-seed1/a1e3f98e": (0.048, 0.081, 0.083, 0.099),
    "random-seed2/30d3fdbb": (0.020, 0.010, 0.041, 0.055),
    "random-seed2/70890ea3": (0.034, 0.029, 0.084, 0.088),
    "random-seed2/cee5e7e4": (0.039, 0.068, 0.085, 0.095),
    "random-seed2/d64af827": (0.023, 0.044, 0.046, 0.043),
    "tiny100-resnet18-64": (0.049, 0.102, 0.160, 0.188, 0.190),
}
EPOCH_TIME_CV = 0.013  # std/mean of the uncontended epoch_seconds in results/bench/search/random-seed2

# Approximate GMACs per image at 224 px (timm model cards); epoch time scales with them.
BACKBONE_GMACS = {
    "resnet50": 4.1, "resnet101": 7.8, "resnet152d": 11.8, "resnext50_32x4d": 4.3, "resnext101_32x8d": 16.5,
    "resnext101_64x4d": 15.5, "seresnext50_32x4d": 4.3, "seresnext101_32x8d": 16.5,
    "seresnextaa101d_32x8d": 17.3, "resnest50d": 5.4, "resnest101e": 10.2, "seresnet152d": 11.8,
}
# Synthetic: a backbone's ceiling with a good recipe (bigger is a little better, as in the seed reports).
BACKBONE_BASE = {
    "resnet50": 0.925, "resnet101": 0.935, "resnet152d": 0.940, "resnext50_32x4d": 0.930,
    "resnext101_32x8d": 0.945, "resnext101_64x4d": 0.948, "seresnext50_32x4d": 0.935,
    "seresnext101_32x8d": 0.948, "seresnextaa101d_32x8d": 0.952, "resnest50d": 0.938, "resnest101e": 0.946,
    "seresnet152d": 0.944,
}


def fit_rates(curves=RECORDED_CURVES) -> list[float]:
    """Least-squares rate k of C * (1 - exp(-k p)) / (1 - exp(-k)) for each recorded curve (p = epoch / epochs)."""
    grid = np.exp(np.linspace(math.log(0.05), math.log(50.0), 400))
    rates = []
    for values in curves.values():
        y = np.asarray(values, dtype=float)
        p = np.arange(1, len(y) + 1) / len(y)
        best = None
        for k in grid:
            g = (1 - np.exp(-k * p)) / (1 - np.exp(-k))
            c = (g @ y) / (g @ g)
            sse = float(((y - c * g) ** 2).sum())
            if best is None or sse < best[0]:
                best = (sse, float(k))
        rates.append(best[1])
    return rates


RATES = fit_rates()


def ceiling(p: dict) -> float:
    """SYNTHETIC final val_acc of a config of spaces/full.py (missing keys take the space's neutral values)."""
    bb = p.get("backbone", "resnet50")
    c = BACKBONE_BASE.get(bb, 0.93) - 0.012
    frozen = p.get("frozen_stages", 0)
    best_lr = 1.5e-4 * (1.6 if frozen else 1.0) * (0.7 if BACKBONE_GMACS.get(bb, 4) > 12 else 1.0)
    c -= 0.06 * math.log10(p.get("lr", 1e-4) / best_lr) ** 2
    c -= 0.006 * math.log10(p.get("head_lr_mult", 1.0) / 10.0) ** 2
    c -= 0.008 * (math.log10(p.get("weight_decay", 1e-2)) + 3.0) ** 2
    c += 0.002 * (p.get("warmup_epochs", 0) >= 1) - 0.001 * max(0, p.get("warmup_epochs", 0) - 3)
    c += 0.003 * (p.get("scheduler", "cosine") == "cosine")
    c += {"none": 0.0, "trivialaugment": 0.012, "randaugment": 0.010, "autoaugment": 0.008}[p.get("augment", "none")]
    re = p.get("random_erasing", 0.0)
    c += 0.02 * re - 0.05 * max(0.0, re - 0.3)
    c += {0.0: 0.0, 0.2: 0.002, 0.5: -0.001}.get(p.get("vflip", 0.0), 0.0)
    mix = p.get("mixup_prob", 0.0)
    if mix > 0:
        c += {0.5: 0.006, 1.0: 0.003}.get(mix, 0.0) - 0.008 * max(0.0, p.get("mixup_alpha", 0.2) - 1.0)
        c += 0.002 * (p.get("cutmix_alpha", 0.0) > 0)
    d = p.get("drop_rate", 0.0)
    c += 0.012 * d - 0.04 * max(0.0, d - 0.35)
    c += 0.02 * p.get("drop_path_rate", 0.0)
    c += {0: 0.0, 1: -0.002, 2: -0.012}.get(frozen, 0.0)
    c += 0.002 * (p.get("head", "linear") == "mlp")
    ls = p.get("label_smoothing", 0.0)
    c += 0.04 * ls - 0.12 * max(0.0, ls - 0.12)
    c += {"none": 0.0, "inverse": -0.002, "sqrt_inverse": 0.004, "effective_number": 0.003}[p.get("class_weighting", "none")]
    c += {0.0: 0.0, 1.0: 0.001, 2.0: -0.004}.get(p.get("focal_gamma", 0.0), 0.0)
    c += {224: 0.0, 288: 0.005, 320: 0.007}.get(p.get("eval_size", 224), 0.0)
    return float(min(0.985, max(0.05, c)))


def epoch_seconds_for(p: dict, base_s: float) -> float:
    """Mean epoch time: resnet50 at 224 px is base_s; train part by GMACs, eval part (20%) also by eval_size^2."""
    gmacs = BACKBONE_GMACS.get(p.get("backbone", "resnet50"), 4.1) / BACKBONE_GMACS["resnet50"]
    eval_scale = (p.get("eval_size", 224) / 224) ** 2
    return base_s * gmacs * (0.8 + 0.2 * eval_scale)


# The driver's decisions are CPU work: timed as this thread's CPU time, so other load on the machine does
# not inflate them (wall time did, by up to 2x, while other jobs shared the 2 cores).
cpu_clock = time.thread_time


def as_profile(space, profile: str):
    """The space under driver_profile `profile`: "large" turns on every setting that profile fills in
    (search/space_file.py: LARGE_SETTINGS, LARGE_TRIAL) over the space's own; "standard" turns them off."""
    from search.space_file import LARGE_SETTINGS, LARGE_TRIAL, STANDARD_VALUES

    trial = space.settings.trial
    if profile == "large":
        return space.replace_settings(driver_profile="large", **LARGE_SETTINGS, trial={**trial, **LARGE_TRIAL})
    if profile != "standard":
        raise ValueError(f"driver_profile {profile!r}: 'standard' or 'large'")
    return space.replace_settings(driver_profile="standard",
                                  **{k: v for k, v in STANDARD_VALUES.items() if k not in LARGE_TRIAL},
                                  trial={k: v for k, v in trial.items() if k not in LARGE_TRIAL})


def trial_seed(trial_id: str, seed: int) -> int:
    return int.from_bytes(hashlib.blake2b(f"{seed}:{trial_id}".encode(), digest_size=8).digest(), "little")


def trial_model(params: dict, *, max_epochs: int, base_epoch_s: float, seed: int, val_images: int = 2100):
    """One simulated trial: (epoch durations, val_acc per epoch), deterministic in `seed`."""
    rng = np.random.default_rng(seed)
    c = min(0.99, ceiling(params) + rng.normal(0.0, 0.004))  # trial-to-trial (seed) spread of the ceiling
    k = float(rng.choice(RATES))
    e = np.arange(1, max_epochs + 1)
    mean = c * (1 - np.exp(-k * e / max_epochs)) / (1 - np.exp(-k))
    acc = np.clip(mean + rng.normal(0.0, 1.0, max_epochs) * np.sqrt(mean * (1 - mean) / val_images), 0.0, 1.0)
    mean_s = epoch_seconds_for(params, base_epoch_s)
    durations = np.maximum(0.05 * mean_s, mean_s * (1 + EPOCH_TIME_CV * rng.normal(0.0, 1.0, max_epochs)))
    return durations.tolist(), acc.tolist()


class SimTrial:
    """All ASHA reads from a trial: its id (it keys its bookkeeping on trial.trial_id)."""

    __slots__ = ("trial_id", "config", "durations", "accs", "epochs", "start",
                 # report_in_background: when the epoch training now began, the epoch whose report Tune has not
                 # answered, when a later reported epoch ended (waiting for that answer), and the busy intervals
                 # trained since the report was handed over (dropped if ASHA stops the trial)
                 "next_start", "in_flight", "blocked_at", "stopped", "since_hand_over",
                 "awaiting")  # with checkpoint_after_decision: waiting for ASHA's answer on a rung epoch

    def __init__(self, trial_id, config, durations, accs):
        self.trial_id, self.config, self.durations, self.accs = trial_id, config, durations, accs
        self.epochs, self.start = 0, 0.0
        self.next_start, self.in_flight, self.blocked_at, self.stopped, self.since_hand_over = 0.0, None, None, False, []
        self.awaiting = False


def simulate(space, *, gpus: int, num_trials: int, base_epoch_s: float = 7.0, seed: int = 0,
             targets=(0.94, 0.95, 0.955), val_images: int = 2100, start_overhead_s: float = 0.0,
             report_overhead_s: float = 0.0, decision_scale: float = 1.0, bucket: int = 100,
             progress_every: float = 0.0, result_cost_ms: float = 0.0, start_cost_ms: float = 0.0,
             end_cost_ms: float = 0.0,
             max_pending: int = 0, checkpoint_s: float = 0.0, checkpoint_every: int = 1,
             report_epochs: str = "every", pace: bool = False, checkpoint_cost_ms: float = 0.0,
             snapshot_ms_per_changed: float = 0.0, snapshot_ms_per_trial: float = 0.0,
             checkpoint_after_decision: bool = False, report_in_background: bool = False) -> dict:
    """Run one simulated search; returns its figures (BENCHMARKS.md, section Scale, explains each).

    The real driver's costs beyond the searcher and scheduler: `result_cost_ms` of the driver's loop per reported
    result (Tune's result processing and loggers), `checkpoint_cost_ms` more for
    a result with a checkpoint (bookkeeping, experiment snapshots), `start_cost_ms` when a trial starts (creating it,
    starting its actor, its loggers' set-up; the searcher's suggest() is timed live) and `end_cost_ms` when it ends
    (stopping it: callbacks, loggers, its actor; benchmarks/tools/driver_phases.py measures each phase in a real search's
    driver); `max_pending` trials at most between their suggestion and their first
    epoch (Tune's pending-trial limit; 0 = no limit), each taking `start_overhead_s` to start; and
    `checkpoint_s` during which a trial is blocked persisting a checkpoint, on every `checkpoint_every`-th
    epoch (and its last). `report_epochs="decisions"` models a trial that reports to Tune only on the
    epochs the driver needs (ASHA's rungs, its checkpoint epochs, its last: core/report_policy.py);
    its other epochs never reach the driver, so they neither cost it nor wait for it. `pace` runs the simulation
    in real time until the last trial has started (needed with a suggestion pool, search/suggestion_pool.py).
    Tune's experiment snapshots (benchmarks/archive/experiment_state_cost.py measures one) cost the driver
    `snapshot_ms_per_changed` per trial started, reported or stopped since the last snapshot plus
    `snapshot_ms_per_trial` per trial in the experiment; they run as Tune runs them: at the end of a loop step once
    the period has passed (10 s, "auto" stretches it to 19x the last snapshot's time), and forced when a trial has
    reported `keep_checkpoints` checkpoints since the last one. `checkpoint_after_decision` (core/report_policy.py):
    on a rung epoch with a checkpoint due the trial reports its metrics first and persists the checkpoint only if
    ASHA lets it go on, then reports again (one more result through the driver).
    `report_in_background` (trial key `report_in_background`, worker/tune_trial.py): a trial hands each report to
    a thread of its own and trains its next epoch while the checkpoint persists and the driver decides; one report
    in flight at a time (a trial that finishes its next reported epoch first waits). A trial stopped by ASHA loses the
    epoch it had begun: not counted as busy (the same GPU time the synchronous trial spends waiting). With both,
    a rung epoch's metrics go first and the trial waits for the answer; the checkpoint of a trial that goes on
    persists in the background.
    """
    from search.space_file import asha_rungs
    from search.tuner import make_scheduler, make_searcher

    s = space.settings
    # The search keeps its study in a journal file (search/study.py); the suggestion pool needs one.
    study_dir = tempfile.mkdtemp(prefix="scale_sim_study_") if s.suggestion_pool else None
    searcher = make_searcher(space, study_path=Path(study_dir) / "optuna_study.log" if study_dir else None)
    searcher.set_search_properties(s.metric, s.mode, space.trial_config({}))  # as Tune does (a no-op here)
    scheduler = make_scheduler(space)
    scheduler.set_search_properties(s.metric, s.mode)
    max_epochs = s.max_epochs
    rungs = set(asha_rungs(s))  # where ASHA decides: grace_period * reduction_factor^k below max_epochs
    has_checkpoint = lambda e: e % checkpoint_every == 0 or e == max_epochs  # noqa: E731  (epochs count from 1)
    reported = (lambda e: True) if report_epochs == "every" else (
        lambda e: e in rungs or has_checkpoint(e))
    results_reported = 0
    checkpoints_persisted = 0
    speculative_s = 0.0  # report_in_background: GPU-s of epochs begun by trials ASHA then stopped

    events: list = []  # (time, seq, kind, trial)
    seq = 0

    def push(t, kind, trial=None):
        nonlocal seq
        heapq.heappush(events, (t, seq, kind, trial))
        seq += 1

    for _ in range(gpus):
        push(0.0, "free")
    starting = 0          # suggested, not yet training (at most max_pending)
    waiting_gpus = []     # free GPUs held back by the pending limit
    driver_free = 0.0
    started = finished = stopped_early = completed = 0
    busy = []            # (start, end) of every trained epoch
    wait_driver = 0.0    # GPU-seconds spent waiting for the driver to decide or suggest
    decision_total = 0.0
    suggest_ms: list[tuple[int, float]] = []   # (finished trials at call time, ms)
    complete_ms: list[tuple[int, float]] = []
    result_ms: list[float] = []
    time_to_target = {float(x): None for x in targets}
    best = (0.0, None)
    last_suggest_t = 0.0
    snapshots_on = bool(snapshot_ms_per_changed or snapshot_ms_per_trial)
    changed: set = set()             # trials whose state changed since the last snapshot
    checkpoints_since: dict = {}     # trial -> checkpoints reported since the last snapshot
    snapshot = {"last": 0.0, "period": 10.0, "force": False, "count": 0, "forced": 0, "s": 0.0, "max_s": 0.0}

    def snapshot_if_due() -> None:
        """TuneController.checkpoint() at the end of a loop step: holds the driver for the snapshot's time."""
        nonlocal driver_free, decision_total
        if not snapshots_on or (not snapshot["force"] and driver_free - snapshot["last"] < snapshot["period"]):
            return
        cost = (snapshot_ms_per_changed * len(changed) + snapshot_ms_per_trial * started) / 1e3
        snapshot["count"] += 1
        snapshot["forced"] += snapshot["force"]
        snapshot["s"] += cost
        snapshot["max_s"] = max(snapshot["max_s"], cost)
        snapshot["period"] = max(10.0, 19 * cost)
        driver_free += cost
        decision_total += cost
        snapshot["last"], snapshot["force"] = driver_free, False
        changed.clear()
        checkpoints_since.clear()

    def checkpoint_reported(trial_id: str) -> None:
        """Tune forces a snapshot once a trial has reported keep_checkpoints checkpoints since the last one."""
        checkpoints_since[trial_id] = checkpoints_since.get(trial_id, 0) + 1
        snapshot["force"] |= checkpoints_since[trial_id] >= s.keep_checkpoints

    def hand_over(trial: SimTrial, t: float) -> None:
        """report_in_background: the trial hands epoch trial.epochs's report to its thread and trains on."""
        nonlocal checkpoints_persisted
        e = trial.epochs
        trial.in_flight = e
        trial.since_hand_over = []
        with_checkpoint = has_checkpoint(e)
        if checkpoint_after_decision and with_checkpoint and e in rungs and e < max_epochs:
            trial.awaiting = True  # metrics only; the trial waits for ASHA before it writes the checkpoint
            trial.next_start = t
            push(t, "result", trial)
            return
        if e < max_epochs:
            trial.next_start = t
            push(t + trial.durations[e], "epoch_end", trial)
        if checkpoint_s and with_checkpoint:
            push(t + checkpoint_s, "result", trial)  # Tune sees the result once the checkpoint is persisted
            checkpoints_persisted += 1
        else:
            push(t, "result", trial)

    def answered(trial: SimTrial, t: float) -> None:
        """report_in_background: Tune answered the report in flight at t; a report waiting for that goes now."""
        nonlocal wait_driver
        trial.in_flight = None
        if trial.blocked_at is not None:
            wait_driver += t - trial.blocked_at
            trial.blocked_at = None
            hand_over(trial, t)

    wall0 = time.perf_counter()
    next_progress = progress_every

    while events:
        t, _, kind, trial = heapq.heappop(events)
        begin = max(t, driver_free)
        if pace and started < num_trials:
            # In real time while trials start, so that the suggestion pool's helper process has the wall time
            # it would have in a real search (its TPE runs on its own core, not on the simulated driver's).
            lag = begin - (time.perf_counter() - wall0)
            if lag > 0:
                time.sleep(lag)
        if kind == "started":
            starting -= 1
            if waiting_gpus:
                waiting_gpus.pop()
                push(t, "free")
            continue
        if kind == "free":
            if started >= num_trials:
                continue
            if max_pending and starting >= max_pending:
                waiting_gpus.append(t)
                continue
            trial_id = f"sim_{started:05d}"
            t0 = cpu_clock()
            config = searcher.suggest(trial_id)
            t1 = cpu_clock()
            durations, accs = trial_model(config, max_epochs=max_epochs, base_epoch_s=base_epoch_s,
                                          seed=trial_seed(trial_id, seed), val_images=val_images)
            trial = SimTrial(trial_id, config, durations, accs)
            t2 = cpu_clock()
            scheduler.on_trial_add(None, trial)
            t3 = cpu_clock()
            spent = ((t1 - t0) + (t3 - t2)) * decision_scale + start_cost_ms / 1e3
            suggest_ms.append((finished, (t1 - t0) * 1e3))
            started += 1
            driver_free = begin + spent
            decision_total += spent
            wait_driver += driver_free - t
            last_suggest_t = driver_free
            trial.start = driver_free + start_overhead_s
            changed.add(trial_id)
            snapshot_if_due()
            starting += 1
            push(trial.start, "started")
            push(trial.start + trial.durations[0], "epoch_end", trial)
            trial.next_start = trial.start
            if not report_in_background:  # in the background model an epoch is counted when it ends
                busy.append((trial.start, trial.start + trial.durations[0]))
        elif report_in_background:
            if trial.stopped:
                continue  # the epoch a stopped trial had begun: cut short when ASHA stopped it
            if kind == "epoch_end":
                trial.epochs += 1
                e = trial.epochs
                busy.append((trial.next_start, t))
                trial.since_hand_over.append(len(busy) - 1)
                value = trial.accs[e - 1]
                if value > best[0]:
                    best = (value, trial.trial_id)
                for x, when in time_to_target.items():
                    if when is None and value >= x:
                        time_to_target[x] = t
                if not reported(e):
                    trial.next_start = t
                    push(t + trial.durations[e], "epoch_end", trial)
                elif trial.in_flight is not None:
                    trial.blocked_at = t  # one report in flight: this one waits for Tune to answer it
                else:
                    hand_over(trial, t)
                continue
            # kind "result": the driver handles the report the trial handed over
            e = trial.in_flight
            with_checkpoint = has_checkpoint(e) and not trial.awaiting
            results_reported += 1
            changed.add(trial.trial_id)
            if with_checkpoint:
                checkpoint_reported(trial.trial_id)
            fixed_s = (result_cost_ms + (checkpoint_cost_ms if with_checkpoint else 0.0)) / 1e3
            if kind == "checkpoint":  # the second report of a decided epoch: no decision, one more result
                driver_free = begin + fixed_s
                decision_total += fixed_s
                answered(trial, driver_free)
                snapshot_if_due()
                continue
            result = {s.metric: trial.accs[e - 1], "epoch": e, "training_iteration": e, "trial_id": trial.trial_id,
                      "done": False}
            t0 = cpu_clock()
            decision = scheduler.on_trial_result(None, trial, result)
            if decision == "STOP":
                scheduler.on_trial_complete(None, trial, result)
                searcher.on_trial_complete(trial.trial_id, result)
            else:
                searcher.on_trial_result(trial.trial_id, result)
            spent = (cpu_clock() - t0) * decision_scale + fixed_s + (end_cost_ms / 1e3 if decision == "STOP" else 0.0)
            driver_free = begin + spent
            decision_total += spent
            if decision == "STOP":
                trial.stopped = True
                finished += 1
                if e < max_epochs:
                    stopped_early += 1
                    # What it trained after handing this report over is thrown away: not busy, but waste
                    # (none for a trial that waited for this answer).
                    begun = driver_free if trial.awaiting else trial.next_start
                    for i in trial.since_hand_over:
                        begun = min(begun, busy[i][0])
                        busy[i] = (busy[i][0], busy[i][0])
                    speculative_s += driver_free - begun
                else:
                    completed += 1
                wait_driver += driver_free - t
                push(driver_free, "free")
            elif trial.awaiting:  # goes on: writes the checkpoint, hands it over, trains on
                trial.awaiting = False
                wait_driver += driver_free - t
                trial.next_start = driver_free
                push(driver_free + trial.durations[e], "epoch_end", trial)
                push(driver_free + checkpoint_s, "checkpoint", trial)
                checkpoints_persisted += 1
            else:
                answered(trial, driver_free)
            snapshot_if_due()
        else:
            if kind == "epoch_end":
                trial.epochs += 1
            e = trial.epochs
            value = trial.accs[e - 1]
            with_checkpoint = has_checkpoint(e)
            decide_first = checkpoint_after_decision and with_checkpoint and e in rungs and e < max_epochs
            if kind == "persisted" and decide_first:
                # The second report of a decided epoch: the checkpoint, persisted after ASHA let the trial go on.
                results_reported += 1
                changed.add(trial.trial_id)
                checkpoint_reported(trial.trial_id)
                spent = (result_cost_ms + checkpoint_cost_ms) / 1e3
                driver_free = begin + spent
                wait_driver += driver_free - t
                decision_total += spent
                push(driver_free + trial.durations[e], "epoch_end", trial)
                busy.append((driver_free, driver_free + trial.durations[e]))
                snapshot_if_due()
                continue
            if kind == "epoch_end":
                if value > best[0]:
                    best = (value, trial.trial_id)
                for x, when in time_to_target.items():
                    if when is None and value >= x:
                        time_to_target[x] = t
                if checkpoint_s and with_checkpoint and not decide_first:
                    # The trial persists its checkpoint before report() returns: its own time, not the driver's,
                    # so it is an event of its own (other trials' results are handled meanwhile).
                    push(t + checkpoint_s, "persisted", trial)
                    checkpoints_persisted += 1
                    continue
            result = {s.metric: value, "epoch": e, "training_iteration": e, "trial_id": trial.trial_id, "done": False}
            if not reported(e):  # the trial keeps this epoch's metrics to itself and trains on
                push(t + trial.durations[e], "epoch_end", trial)
                busy.append((t, t + trial.durations[e]))
                continue
            results_reported += 1
            changed.add(trial.trial_id)
            carries_checkpoint = with_checkpoint and not decide_first
            if carries_checkpoint:
                checkpoint_reported(trial.trial_id)
            fixed_s = (result_cost_ms + (checkpoint_cost_ms if carries_checkpoint else 0.0)) / 1e3
            t0 = cpu_clock()
            decision = scheduler.on_trial_result(None, trial, result)
            if decision == "STOP":
                t1 = cpu_clock()
                scheduler.on_trial_complete(None, trial, result)
                searcher.on_trial_complete(trial.trial_id, result)
                t2 = cpu_clock()
                spent = (t2 - t0) * decision_scale + fixed_s + end_cost_ms / 1e3
                complete_ms.append((finished, (t2 - t1) * 1e3))
                finished += 1
                if e < max_epochs:
                    stopped_early += 1
                else:
                    completed += 1
                driver_free = begin + spent
                wait_driver += driver_free - t
                push(driver_free, "free")
            else:
                searcher.on_trial_result(trial.trial_id, result)
                t1 = cpu_clock()
                spent = (t1 - t0) * decision_scale + fixed_s
                result_ms.append((t1 - t0) * 1e3)
                driver_free = begin + spent
                wait_driver += driver_free - t
                if decide_first:  # goes on: persists the checkpoint, then reports it
                    push(driver_free + checkpoint_s, "persisted", trial)
                    checkpoints_persisted += 1
                else:
                    nxt = driver_free + report_overhead_s
                    push(nxt + trial.durations[e], "epoch_end", trial)
                    busy.append((nxt, nxt + trial.durations[e]))
            decision_total += spent
            snapshot_if_due()
        if progress_every and time.perf_counter() - wall0 > next_progress:
            next_progress += progress_every
            print(f"  [{gpus} GPUs] {time.perf_counter() - wall0:.0f}s wall: {started} started, {finished} "
                  f"finished, sim t={t / 3600:.2f} h", file=sys.stderr, flush=True)

    makespan = max(end for _, end in busy)
    busy_s = sum(end - start for start, end in busy)
    steady_busy = sum(max(0.0, min(end, last_suggest_t) - start) for start, end in busy)
    pool = searcher._pool  # the benchmark's own view of the project's searcher
    searcher.close_pool()
    study = searcher.study
    states = {}
    for ot_trial in study.get_trials(deepcopy=False):
        states[ot_trial.state.name] = states.get(ot_trial.state.name, 0) + 1
    if study_dir:
        shutil.rmtree(study_dir, ignore_errors=True)

    def per_bucket(rows):
        out = {}
        for n_done, ms in rows:
            out.setdefault(n_done // bucket * bucket, []).append(ms)
        return {f"{b}-{b + bucket - 1}": {"mean_ms": statistics.mean(v), "calls": len(v)} for b, v in sorted(out.items())}

    epochs_run = sum(1 for start, end in busy if end > start)  # a stopped trial's thrown-away epochs are zero-length
    return {
        "gpus": gpus, "trials": num_trials, "started": started, "finished": finished,
        "stopped_early": stopped_early, "completed_max_epochs": completed, "epochs_run": epochs_run,
        "epochs_if_no_asha": num_trials * max_epochs, "max_epochs": max_epochs,
        "sim_makespan_h": makespan / 3600, "gpu_utilisation": busy_s / (gpus * makespan),
        "gpu_utilisation_until_last_suggest": steady_busy / (gpus * last_suggest_t) if last_suggest_t else None,
        "last_suggest_h": last_suggest_t / 3600,
        "gpu_s_waiting_for_driver": wait_driver, "gpu_s_busy": busy_s,
        "driver_busy_s": decision_total, "driver_busy_fraction": decision_total / makespan,
        "hours_to_target": {str(x): None if w is None else w / 3600 for x, w in time_to_target.items()},
        "best_val_acc": best[0], "best_trial": best[1],
        "suggest_ms_by_finished": per_bucket(suggest_ms),
        "on_trial_complete_ms_by_finished": per_bucket(complete_ms),
        "on_trial_result_ms_mean": statistics.mean(result_ms) if result_ms else None,
        "suggest_ms_mean": statistics.mean(ms for _, ms in suggest_ms),
        "optuna_states": states, "searcher_completed": searcher.trials_finished,
        "asha_stopped": stopped_early, "wall_s": time.perf_counter() - wall0,
        "base_epoch_s": base_epoch_s, "seed": seed, "start_overhead_s": start_overhead_s,
        "report_overhead_s": report_overhead_s, "decision_scale": decision_scale,
        "result_cost_ms": result_cost_ms, "start_cost_ms": start_cost_ms, "end_cost_ms": end_cost_ms, "max_pending": max_pending,
        "checkpoint_s": checkpoint_s, "checkpoint_every": checkpoint_every, "checkpoint_cost_ms": checkpoint_cost_ms,
        "report_epochs": report_epochs, "results_reported": results_reported, "paced": pace,
        "tpe_history_window": s.tpe_history_window, "suggestion_pool": s.suggestion_pool,
        "suggestion_pool_workers": s.suggestion_pool_workers if s.suggestion_pool else 0,
        "snapshot_ms_per_changed": snapshot_ms_per_changed, "snapshot_ms_per_trial": snapshot_ms_per_trial,
        "checkpoint_after_decision": checkpoint_after_decision, "report_in_background": report_in_background,
        "speculative_gpu_s": speculative_s, "checkpoints_persisted": checkpoints_persisted, "snapshots": snapshot["count"], "snapshots_forced": snapshot["forced"], "snapshot_s": snapshot["s"],
        "snapshot_max_s": snapshot["max_s"],
        "pool_adopted": pool.adopted if pool else 0, "pool_sampled_by_driver": pool.sampled_by_driver if pool else 0,
    }


def print_tables(rows: list[dict]) -> None:
    targets = list(rows[0]["hours_to_target"]) if rows else []
    print("\n| GPUs | TPE window | trials | stopped early / ran max | epochs run (vs no ASHA) | sim makespan h | GPU util | "
          "util until last suggest | GPU-s waiting for driver | driver busy | best val_acc | h to "
          + " / ".join(targets) + " | wall s |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        ttt = " / ".join("-" if v is None else f"{v:.2f}" for v in r["hours_to_target"].values())
        print(f"| {r['gpus']} | {r['tpe_history_window']} | {r['trials']} | {r['stopped_early']} / {r['completed_max_epochs']} | "
              f"{r['epochs_run']} ({r['epochs_run'] / r['epochs_if_no_asha']:.0%}) | {r['sim_makespan_h']:.2f} | "
              f"{r['gpu_utilisation']:.3f} | {r['gpu_utilisation_until_last_suggest']:.3f} | "
              f"{r['gpu_s_waiting_for_driver']:.0f} ({r['gpu_s_waiting_for_driver'] / r['gpu_s_busy']:.2%} of busy) | "
              f"{r['driver_busy_fraction']:.1%} | {r['best_val_acc']:.4f} | {ttt} | {r['wall_s']:.0f} |")
    for r in rows:
        if r["snapshots"]:
            print(f"\n{r['gpus']} GPUs: {r['snapshots']} experiment snapshots ({r['snapshots_forced']} forced), "
                  f"{r['snapshot_s']:.0f} s of the driver in all, the longest {r['snapshot_max_s']:.2f} s")
    for r in rows:
        print(f"\nsuggest() ms by finished trials, {r['gpus']} GPUs, TPE window {r['tpe_history_window']}:")
        print("| finished trials | suggest calls | mean suggest ms | mean on_trial_complete ms |")
        print("|---|---:|---:|---:|")
        comp = r["on_trial_complete_ms_by_finished"]
        for b, v in r["suggest_ms_by_finished"].items():
            c = comp.get(b, {}).get("mean_ms")
            print(f"| {b} | {v['calls']} | {v['mean_ms']:.1f} | {'' if c is None else f'{c:.2f}'} |")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--space", default=str(REPO / "spaces" / "full.py"))
    p.add_argument("--gpus", type=int, nargs="+", default=[256, 1024], help="concurrent GPUs, one run each")
    p.add_argument("--trials-per-gpu", type=float, default=4.0, help="trial budget = this x GPUs")
    p.add_argument("--max-trials", type=int, default=0, help="cap the trial budget (0 = no cap)")
    p.add_argument("--epoch-s", type=float, default=7.0, help="resnet50 224 px epoch on one GPU, seconds")
    p.add_argument("--targets", type=float, nargs="+", default=[0.94, 0.95, 0.955],
                   help="val_acc levels whose first report is timed (simulated hours)")
    p.add_argument("--val-images", type=int, default=2100, help="validation set size (binomial noise)")
    p.add_argument("--start-overhead-s", type=float, default=0.0, help="per trial, before its first epoch")
    p.add_argument("--report-overhead-s", type=float, default=0.0, help="per report, e.g. checkpoint upload")
    p.add_argument("--decision-scale", type=float, default=1.0, help="multiply measured driver time (0 = free)")
    p.add_argument("--result-cost-ms", type=float, default=0.0, help="driver time per result beyond searcher+scheduler")
    p.add_argument("--start-cost-ms", type=float, default=0.0, help="driver time per trial start, beyond suggest()")
    p.add_argument("--end-cost-ms", type=float, default=0.0, help="driver time per trial end")
    p.add_argument("--checkpoint-cost-ms", type=float, default=0.0, help="driver time per checkpoint, beyond --result-cost-ms")
    p.add_argument("--snapshot-ms-per-changed", type=float, default=0.0,
                   help="Tune's experiment snapshot: driver ms per trial changed since the last one")
    p.add_argument("--snapshot-ms-per-trial", type=float, default=0.0,
                   help="Tune's experiment snapshot: driver ms per trial in the experiment (writing the file)")
    p.add_argument("--checkpoint-after-decision", action="store_true",
                   help="a rung epoch's checkpoint is persisted only if ASHA lets the trial go on (then reported again)")
    p.add_argument("--report-in-background", action="store_true",
                   help="trials train their next epoch while a report's checkpoint persists and the driver decides")
    p.add_argument("--max-pending", type=int, default=0, help="trials between suggestion and first epoch (0 = no limit)")
    p.add_argument("--checkpoint-s", type=float, default=0.0, help="trial blocked persisting a checkpoint, per checkpoint")
    p.add_argument("--checkpoint-every", type=int, default=1, help="epochs between checkpoints (and the last)")
    p.add_argument("--report-epochs", choices=["every", "decisions"], default="every",
                   help="every epoch reaches the driver, or only ASHA's rungs + checkpoint epochs + the last")
    p.add_argument("--suggestion-pool", type=int, default=0,
                   help="TPE suggestions prepared ahead by a helper process (0 = off, the driver samples each; "
                        "the space's own setting is not used). With a pool the simulation runs in real time "
                        "until the last trial has started (minutes at 1,024 GPUs)")
    p.add_argument("--suggestion-pool-workers", type=int, default=1, help="helper processes filling the pool")
    p.add_argument("--tpe-history-window", type=int, nargs="+", default=None,
                   help="TPE history windows to compare, one run each (default: the space's; 0 = all trials)")
    p.add_argument("--bucket", type=int, default=0, help="finished-trials bucket for suggest() times (0 = auto)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true", help="16 GPUs, 48 trials: well under a minute")
    p.add_argument("--out", default="", help="append one JSON line per run here")
    args = p.parse_args(argv)
    from search.space_file import load_space

    space = load_space(args.space)
    if args.quick:
        args.gpus, args.trials_per_gpu, args.max_trials = [16], 3.0, 48
    space = space.replace_settings(seed=args.seed)
    large = bool(args.suggestion_pool or args.report_epochs != "every" or args.checkpoint_after_decision
                 or args.report_in_background or any(args.tpe_history_window or [0]))
    # The scale machinery is driver_profile "large"'s; the standard profile is the plain path.
    space = space.replace_settings(driver_profile="large" if large else "standard",
                                   **({"report_epochs": args.report_epochs} if large else {}),
                                   suggestion_pool=args.suggestion_pool,
                                   suggestion_pool_workers=args.suggestion_pool_workers if args.suggestion_pool else 1)
    rows = []
    windows = args.tpe_history_window or [space.settings.tpe_history_window]
    for gpus, window in [(g, w) for g in args.gpus for w in windows]:
        n = int(round(gpus * args.trials_per_gpu))
        if args.max_trials:
            n = min(n, args.max_trials)
        space_n = space.replace_settings(num_samples=n, tpe_history_window=window)
        bucket = args.bucket or (100 if n <= 1500 else 500)
        print(f"simulating {gpus} GPUs, {n} trials, TPE history window {window} ...", file=sys.stderr, flush=True)
        row = simulate(space_n, gpus=gpus, num_trials=n, base_epoch_s=args.epoch_s, seed=args.seed,
                       targets=args.targets, val_images=args.val_images, start_overhead_s=args.start_overhead_s,
                       report_overhead_s=args.report_overhead_s, decision_scale=args.decision_scale,
                       bucket=bucket, progress_every=60.0, result_cost_ms=args.result_cost_ms,
                       start_cost_ms=args.start_cost_ms, end_cost_ms=args.end_cost_ms, max_pending=args.max_pending,
                       checkpoint_s=args.checkpoint_s, checkpoint_every=args.checkpoint_every,
                       report_epochs=args.report_epochs, pace=space_n.settings.suggestion_pool > 0,
                       checkpoint_cost_ms=args.checkpoint_cost_ms, snapshot_ms_per_changed=args.snapshot_ms_per_changed,
                       snapshot_ms_per_trial=args.snapshot_ms_per_trial,
                       checkpoint_after_decision=args.checkpoint_after_decision,
                       report_in_background=args.report_in_background)
        row.update(space=str(args.space), date=time.strftime("%Y-%m-%d"), machine=f"{platform.machine()} "
                   f"{os.cpu_count()} CPUs, Python {platform.python_version()}", load_avg=os.getloadavg())
        rows.append(row)
        print(json.dumps(row), flush=True)
        if args.out:
            with open(args.out, "a") as f:
                f.write(json.dumps(row) + "\n")
    print_tables(rows)
    write_record("scale_simulation", rows)
    return rows


if __name__ == "__main__":
    main()
