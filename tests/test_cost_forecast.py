"""The forecast's arithmetic (core/forecast.py) against hand-computed rungs and against Tune's own ASHA, and the
plan's forecast inputs (search/forecast.py): --epoch-seconds, prices, the table."""
import random
import types
from pathlib import Path

import pytest

from core import forecast as fc
from search import forecast as plan_forecast

ROOT = Path(__file__).resolve().parents[1]


def test_rungs_are_tunes():
    assert fc.asha_rungs(1, 6, 3) == [1, 3]
    assert fc.asha_rungs(3, 30, 3) == [3, 9, 27]
    assert fc.asha_rungs(1, 27, 3) == [1, 3, 9]      # 27 is max_epochs: a trial there ends anyway
    assert fc.asha_rungs(2, 12, 2) == [2, 4, 8]
    assert fc.asha_rungs(5, 5, 3) == []


def test_pass_probabilities_by_hand():
    # The first arrival has no cutoff; the second passes when above the first (1/2); the third is compared with
    # the 2/3 percentile of two values, v0 + 2/3 (v1 - v0): above both (1/3) or between them, above the point
    # 2/3 of the way (1/3 * 1/3).
    assert fc.pass_probability(0, 0, 3) == 1.0
    assert fc.pass_probability(1, 0, 3) == pytest.approx(0.5)
    assert fc.pass_probability(2, 0, 3) == pytest.approx(1 / 3 + 1 / 9)
    assert fc.pass_probability(10_000, 0, 3) == pytest.approx(1 / 3, abs=1e-3)  # in the limit, 1/rf
    # A warm start above every sampled trial: the first sampled arrival is below the cutoff (the warm value).
    assert fc.pass_probability(0, 1, 3) == 0.0


def test_three_trials_by_hand():
    e = fc.expected_epochs(3, 1, 6, 3)
    at3 = 1 + 0.5 + 4 / 9                                   # expected passes of rung 1
    assert e.reaching[:2] == pytest.approx([3, at3])
    # Rung 3: n trials arrive with n = 1, 2, 3 with probabilities from the three independent passes above.
    p1, p2 = 0.5, 4 / 9
    dist = {1: (1 - p1) * (1 - p2), 2: p1 * (1 - p2) + (1 - p1) * p2, 3: p1 * p2}
    passes = {1: 1.0, 2: 1.5, 3: 1.5 + 4 / 9}
    at6 = sum(dist[n] * passes[n] for n in dist)
    assert e.reaching[2] == pytest.approx(at6)
    assert e.trial_epochs == pytest.approx(1 * (3 - at3) + 3 * (at3 - at6) + 6 * at6)
    assert e.full_epochs == 18


def test_warm_best_runs_warm_starts_to_the_end():
    e = fc.expected_epochs(4, 1, 6, 3, warm_starts=1, warm_best=True)
    assert e.warm_epochs == 6 and e.reaching[0] == 4
    plain = fc.expected_epochs(4, 1, 6, 3, warm_starts=1)
    assert plain.warm == 0 and plain.reaching[0] == 4


@pytest.mark.parametrize("n, grace, max_t, rf", [(12, 1, 6, 3), (20, 1, 9, 2), (64, 3, 30, 3)])
def test_expected_epochs_match_tunes_asha_one_trial_at_a_time(n, grace, max_t, rf):
    """Tune's ASHAScheduler itself, fed trials one at a time with i.i.d. metrics (drawn afresh at every report:
    the model's exchangeable trials), runs on average the epochs the forecast expects."""
    from ray.tune.schedulers import ASHAScheduler, TrialScheduler

    rng, runs, total = random.Random(0), 400, 0
    for _ in range(runs):
        asha = ASHAScheduler(time_attr="epoch", metric="m", mode="max", max_t=max_t, grace_period=grace,
                             reduction_factor=rf)
        for k in range(n):
            trial = types.SimpleNamespace(trial_id=str(k))
            asha.on_trial_add(None, trial)
            for epoch in range(1, max_t + 1):
                total += 1
                if asha.on_trial_result(None, trial, {"epoch": epoch, "m": rng.random()}) == TrialScheduler.STOP:
                    break
    simulated = total / runs
    assert fc.expected_epochs(n, grace, max_t, rf).trial_epochs == pytest.approx(simulated, rel=0.04)


def test_rank_stable_trials_run_more_than_the_forecast():
    """Where the model errs, measured on Tune's ASHA: a trial's metric the same at every rung (a trial good early
    stays good) promotes more, since later arrivals at a rung passed a higher cutoff at the one before. On
    spaces/quick.py's settings: ~35.6 epochs against the forecast's 31.4 (docs/cost.md)."""
    from ray.tune.schedulers import ASHAScheduler, TrialScheduler

    rng, runs, total = random.Random(0), 400, 0
    for _ in range(runs):
        asha = ASHAScheduler(time_attr="epoch", metric="m", mode="max", max_t=6, grace_period=1, reduction_factor=3)
        for k in range(12):
            trial, quality = types.SimpleNamespace(trial_id=str(k)), rng.random()
            asha.on_trial_add(None, trial)
            for epoch in range(1, 7):
                total += 1
                if asha.on_trial_result(None, trial, {"epoch": epoch, "m": quality}) == TrialScheduler.STOP:
                    break
    forecast = fc.expected_epochs(12, 1, 6, 3).trial_epochs
    assert forecast < total / runs < forecast * 1.2


def test_cost_hours_wall_and_dollars():
    e = fc.expected_epochs(12, 1, 6, 3)
    cost = fc.cost_forecast(e, epoch_seconds=10.0, start_seconds=5.0, source="given", per_trial=2, accelerator="GPU",
                            concurrency=4, usd_per_hour=1.5, price_source="test")
    trial_hours = (e.trial_epochs * 10 + 12 * 5) / 3600
    assert cost.trial_hours == pytest.approx(trial_hours, abs=1e-5)
    assert cost.accelerator_hours == pytest.approx(2 * trial_hours, abs=1e-5)
    assert cost.wall_hours == pytest.approx(trial_hours / 4, abs=1e-5)
    assert cost.usd == pytest.approx(3 * trial_hours, abs=1e-4)
    assert "GPU-hours" in cost.table() and "$1.5/GPU-hour" in cost.table()


def test_epoch_seconds_flag():
    assert plan_forecast.parse_epoch_seconds("12.5") == 12.5
    assert plan_forecast.parse_epoch_seconds("resnet50=40,resnet18=15") == {"resnet50": 40.0, "resnet18": 15.0}
    with pytest.raises(plan_forecast.ForecastError, match="--epoch-seconds 'fast'"):
        plan_forecast.parse_epoch_seconds("fast")
    with pytest.raises(plan_forecast.ForecastError, match="positive"):
        plan_forecast.parse_epoch_seconds("-3")


def test_price_from_the_cluster_file():
    price, source = plan_forecast.gpu_price(None, ROOT / "cluster.yaml")
    assert price == pytest.approx(5.672 / 4)   # the dearest GPU its workers have: g5.12xlarge's
    assert "g5.12xlarge" in source and fc.PRICE_TABLE_DATE in source
    assert plan_forecast.gpu_price(2.0, ROOT / "cluster.yaml") == (2.0, "--gpu-hour-usd")


def test_unknown_instance_type_is_one_message(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("available_node_types:\n  w:\n    resources: {GPU: 1}\n    node_config: {InstanceType: x9.huge}\n")
    with pytest.raises(plan_forecast.ForecastError, match="x9.huge .*--gpu-hour-usd"):
        plan_forecast.gpu_price(None, path)


def test_forecast_of_a_space_with_given_seconds():
    from search.space_file import load_space

    space = load_space(ROOT / "spaces" / "quick.py")
    record = plan_forecast.forecast(space, "builtin:digits", concurrency=2,
                                    epoch_seconds={"resnet10t": 2.0, "resnet14t": 3.0, "resnet18": 4.0},
                                    gpu_hour_usd=0.1)
    cost = record["cost"]
    s = space.settings  # the demo space's own ASHA settings, whatever they are today
    expected = fc.expected_epochs(s.num_samples, s.grace_period, s.max_epochs, s.reduction_factor)
    assert record["epochs"]["trial_epochs"] == pytest.approx(expected.trial_epochs, abs=0.01)
    assert 2.0 <= cost["epoch_seconds"] <= 4.0 and cost["accelerator"] == "CPU"
    assert cost["usd"] == pytest.approx(cost["accelerator_hours"] * 0.1)
    assert "Forecast" in plan_forecast.table(record)
    with pytest.raises(plan_forecast.ForecastError, match="no seconds for resnet14t"):
        plan_forecast.forecast(space, "builtin:digits", concurrency=2, epoch_seconds={"resnet10t": 2.0})


def test_without_seconds_the_forecast_is_in_epochs():
    from search.space_file import load_space

    space = load_space(ROOT / "spaces" / "quick.py")
    record = plan_forecast.forecast(space, "builtin:digits", concurrency=2, device_here=False)
    assert "cost" not in record and "--epoch-seconds" in plan_forecast.table(record)


@pytest.mark.slow  # a torch child process (the plan's, or the calibration's)
def test_calibration_times_the_trial_code(monkeypatch):
    """One config, through the child process the plan starts: seconds per epoch and to start, on this CPU."""
    from search.child_checks import time_epochs

    config = {"data": "builtin:digits", "backbone": "resnet10t", "epochs": 2, "train_size": 32, "eval_size": 32,
              "batch_size": 32, "num_workers": 0, "pretrained": False}
    answer = time_epochs({"configs": [config, {**config, "backbone": "nope"}], "batches": 2, "threads": 1})
    first, second = answer["timings"]
    assert first["epoch_s"] > 0 and first["start_s"] > 0 and first["device"] == "cpu"
    assert "error" in second and answer["import_s"] > 0


@pytest.mark.slow  # a torch child process (the plan's, or the calibration's)
def test_dry_run_prints_the_forecast_and_saves_nothing(tmp_path, capsys):
    from search.run import main

    code = main(["--space", str(ROOT / "spaces" / "quick.py"), "--storage", str(tmp_path), "--name", "f",
                 "--dry-run", "--epoch-seconds", "3", "--gpu-hour-usd", "0.2", "--budget-usd", "1"])
    out = capsys.readouterr().out
    assert code == 0 and "Forecast" in out and "CPU-hours" in out and "budget     5 accelerator-hours" in out
    assert not (tmp_path / "f").exists()


@pytest.mark.slow  # a torch child process (the plan's, or the calibration's)
def test_budget_in_dollars_needs_a_price(tmp_path, capsys):
    from search.run import main

    code = main(["--space", str(ROOT / "spaces" / "quick.py"), "--storage", str(tmp_path), "--dry-run",
                 "--epoch-seconds", "3", "--budget-usd", "1"])
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if not line.startswith("Plan check:")]  # the plan's progress lines
    assert code == 2 and len(errors) == 1 and "--budget-usd 1 needs a price" in errors[0]
