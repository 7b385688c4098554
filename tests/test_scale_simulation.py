"""The discrete-event scale simulation (benchmarks/tools/scale_simulation.py) in a tiny configuration: no Ray actors."""
from pathlib import Path

import pytest

from benchmarks.tools import scale_simulation
from search.space_file import load_space

ROOT = Path(__file__).resolve().parents[1]


def test_simulated_search_finishes_every_trial_and_asha_stops_some():
    sim = scale_simulation
    space = load_space(ROOT / "spaces" / "full.py").replace_settings(num_samples=30, suggestion_pool=0)
    r = sim.simulate(space, gpus=8, num_trials=30, base_epoch_s=7.0, seed=0, bucket=10)

    assert r["started"] == r["finished"] == 30                        # every trial ran and ended
    assert r["stopped_early"] + r["completed_max_epochs"] == 30
    assert r["stopped_early"] > 0                                    # ASHA stopped some before max_epochs
    assert r["epochs_run"] < r["epochs_if_no_asha"]
    assert 0.0 < r["gpu_utilisation"] <= 1.0
    assert 0.0 < r["gpu_utilisation_until_last_suggest"] <= 1.0
    assert r["gpu_s_waiting_for_driver"] >= 0.0 and r["driver_busy_s"] > 0.0
    # The searcher heard every trial's outcome: ASHA-stopped ones as PRUNED, full-length ones as COMPLETE.
    assert r["searcher_completed"] == 30
    assert r["optuna_states"] == {"PRUNED": r["stopped_early"], "COMPLETE": r["completed_max_epochs"]}
    assert 0.0 < r["best_val_acc"] < 1.0
    assert sum(b["calls"] for b in r["suggest_ms_by_finished"].values()) == 30


def test_trial_model_is_deterministic_and_scales_epoch_time_with_backbone():
    sim = scale_simulation
    small = {"backbone": "resnet50", "lr": 1.5e-4}
    big = {"backbone": "seresnextaa101d_32x8d", "lr": 1.5e-4}
    a = sim.trial_model(small, max_epochs=30, base_epoch_s=7.0, seed=1)
    assert a == sim.trial_model(small, max_epochs=30, base_epoch_s=7.0, seed=1)
    durations, accs = a
    assert len(durations) == len(accs) == 30 and all(0.0 <= x <= 1.0 for x in accs)
    assert accs[-1] > accs[0]                                        # the curve learns
    big_durations, _ = sim.trial_model(big, max_epochs=30, base_epoch_s=7.0, seed=1)
    assert sum(big_durations) > 3 * sum(durations)                   # ~17 vs ~4 GMACs per image


def test_driver_costs_pending_limit_and_checkpoints_are_modelled():
    sim = scale_simulation
    # Every trial sampled at random (seeded): the same configs in every run, whatever the event order.
    # Sampled in the simulation's own process: a suggestion pool's helpers would make the configs depend on timing.
    space = load_space(ROOT / "spaces" / "full.py").replace_settings(num_samples=24, tpe_startup_trials=100,
                                                                      suggestion_pool=0)
    run = lambda **kw: sim.simulate(space, gpus=8, num_trials=24, seed=0, bucket=10, decision_scale=0.0,
                                    start_overhead_s=5.0, **kw)
    free = run()
    one_pending = run(max_pending=1)
    assert one_pending["last_suggest_h"] > free["last_suggest_h"]          # trials start one at a time
    assert one_pending["gpu_utilisation_until_last_suggest"] < free["gpu_utilisation_until_last_suggest"]
    costly = run(result_cost_ms=50.0)
    assert costly["driver_busy_s"] == pytest.approx(0.05 * costly["epochs_run"])  # searcher time scaled to 0
    for background in (False, True):  # a trial's start and end each cost the driver once
        lifecycle = run(start_cost_ms=40.0, end_cost_ms=10.0, report_in_background=background)
        assert lifecycle["finished"] == 24
        assert lifecycle["driver_busy_s"] == pytest.approx(24 * (0.04 + 0.01))
    every = run(checkpoint_s=3.0, checkpoint_every=1)
    every_third = run(checkpoint_s=3.0, checkpoint_every=3)
    assert free["sim_makespan_h"] < every_third["sim_makespan_h"] < every["sim_makespan_h"]


def test_experiment_snapshots_cost_the_driver_by_period_and_are_forced_by_checkpoints():
    sim = scale_simulation
    space = load_space(ROOT / "spaces" / "full.py").replace_settings(num_samples=24, tpe_startup_trials=100,
                                                                      suggestion_pool=0, keep_checkpoints=2)
    run = lambda **kw: sim.simulate(space, gpus=8, num_trials=24, seed=0, bucket=10, decision_scale=0.0, **kw)
    free = run()
    assert free["snapshots"] == 0 and free["driver_busy_s"] == 0.0
    # Per trial in the experiment only: each snapshot costs 0.5 s per started trial, so it is
    # 0.5 x (trials started so far) and the period stretches to 19x the last one's time. One checkpoint
    # per trial (its last epoch): none is forced.
    periodic = run(snapshot_ms_per_trial=500.0, checkpoint_every=30)
    assert periodic["snapshots"] > 0 and periodic["snapshots_forced"] == 0
    assert periodic["driver_busy_s"] == pytest.approx(periodic["snapshot_s"])
    assert periodic["snapshot_max_s"] == pytest.approx(0.5 * 24)
    assert periodic["gpu_s_waiting_for_driver"] > 0.0
    assert periodic["sim_makespan_h"] * 3600 / 19 > periodic["snapshots"] - 1   # the auto period bounds them
    # A checkpoint every epoch: a trial reports keep_checkpoints (2) checkpoints in 1-2 s of 0.5 s epochs,
    # which forces a snapshot before the 10 s period has passed.
    forced = run(snapshot_ms_per_changed=1.0, checkpoint_every=1, base_epoch_s=0.5)
    assert forced["snapshots_forced"] > 0
    assert forced["driver_busy_s"] == pytest.approx(forced["snapshot_s"])


def persistence_only(**options) -> dict:
    """24 trials of the full space on 8 GPUs, TPE's start-up only, the driver free: 1 s to persist a checkpoint
    every 3rd epoch is the only cost."""
    space = load_space(ROOT / "spaces" / "full.py").replace_settings(num_samples=24, tpe_startup_trials=100,
                                                                      suggestion_pool=0)
    return scale_simulation.simulate(space, gpus=8, num_trials=24, seed=0, bucket=10, decision_scale=0.0,
                                      checkpoint_s=1.0, checkpoint_every=3, **options)


def test_checkpoint_after_decision_persists_no_checkpoint_for_trials_stopped_at_a_rung():
    run = lambda **kw: persistence_only(report_epochs="decisions", **kw)
    before, after = run(), run(checkpoint_after_decision=True)
    assert before["finished"] == after["finished"] == 24
    # Before: every trial persists at each 3rd epoch it reaches. After: not at the rung it is stopped at
    # (3, 9 or 27; every trial stopped early is), so at least one fewer per trial stopped early.
    assert after["checkpoints_persisted"] <= before["checkpoints_persisted"] - after["stopped_early"]


def test_reports_in_the_background_keep_gpus_training_while_checkpoints_persist():
    """Only checkpoint persistence costs (the driver free): a trial that reports in the background trains on
    while its checkpoint persists; with checkpoint_after_decision too, nothing waits at all. A stopped trial's
    begun epoch is waste, not busy time, and every trial still finishes."""
    sync, background = persistence_only(report_epochs="every"), persistence_only(report_epochs="every",
                                                                                 report_in_background=True)
    both = persistence_only(report_epochs="decisions", report_in_background=True, checkpoint_after_decision=True)
    for r in (sync, background, both):
        assert r["finished"] == 24 and r["stopped_early"] + r["completed_max_epochs"] == 24
    assert sync["speculative_gpu_s"] == 0.0
    assert background["gpu_utilisation_until_last_suggest"] > sync["gpu_utilisation_until_last_suggest"]
    assert background["speculative_gpu_s"] > 0.0  # trials stopped at a rung had begun their next epoch
    assert both["gpu_utilisation_until_last_suggest"] == pytest.approx(1.0, abs=1e-3)
    assert both["speculative_gpu_s"] == 0.0       # on a rung the trial waits for the answer: nothing begun
