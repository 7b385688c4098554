"""A budget the search keeps (search/spend.py): the tally and the stopper's decisions on staged trials, then a
real search that the budget stops after its first trial's first rung, and a --resume with a larger budget that
runs the rest."""
import json
import types
from pathlib import Path

import pandas as pd
import pytest

from search.spend import REGISTRY, BudgetStopper, LiveSpend, SpendCallback

ROOT = Path(__file__).resolve().parents[1]


def trial(trial_id, status="RUNNING", seconds=0.0, epoch=0):
    result = {"time_total_s": seconds, "epoch": epoch} if epoch else {}
    return types.SimpleNamespace(trial_id=trial_id, status=status, last_result=result)


def live(budget_hours=None, **kw):
    forecast = {"cost": {"accelerator_hours": 2.0, "epoch_seconds": 360.0, "start_seconds": 0.0, "usd_per_hour": 3.0}}
    return LiveSpend(per_trial=1, accelerator="GPU", rungs=[1, 3], max_epochs=9, forecast=forecast,
                     budget={"hours": budget_hours, "usd_per_hour": 3.0} if budget_hours else None, **kw)


def test_spent_is_wall_time_times_accelerators():
    spend = LiveSpend(per_trial=2, accelerator="GPU", rungs=[1], max_epochs=3)
    spend.update([trial("a", "TERMINATED", 1800, 3), trial("b", seconds=900, epoch=1)])
    assert spend.spent_hours() == pytest.approx(1.5)
    assert spend.status_fields() == {"gpu_h": "1.5"}


def test_status_fields_against_forecast_and_budget():
    spend = live(budget_hours=4.0)
    spend.update([trial("a", "TERMINATED", 3600, 9)])
    assert spend.status_fields() == {"gpu_h": "1/2 forecast/4 budget", "usd": "$3.00/$6.00 forecast/$12.00 budget"}


def test_budget_closes_when_another_first_rung_would_not_fit_and_running_trials_finish_their_rung():
    spend = live(budget_hours=1.0)
    REGISTRY["t"] = spend
    try:
        stopper = BudgetStopper("t")
        # 0.5 h spent by a finished trial; b at epoch 1 (0.1 h/epoch measured) needs 2 epochs to rung 3: 0.2 h;
        # another trial's first rung: 1 epoch at the measured mean. 0.5 + 0.2 + 0.1 <= 1: still open.
        SpendCallback("t").on_step_begin(0, [trial("a", "TERMINATED", 1800, 3), trial("b", seconds=360, epoch=1)])
        assert not spend.closed and not stopper("b", {"epoch": 2}) and not stopper.stop_all()
        # b now at epoch 2 after 0.35 h: 0.5 + 0.35 + 0.175 (to rung 3) + a first rung > 1: closed.
        SpendCallback("t").on_step_begin(1, [trial("a", "TERMINATED", 1800, 3), trial("b", seconds=1260, epoch=2)])
        assert spend.closed and "budget" in spend.status_fields()
        assert not stopper.stop_all()                  # b is still running to its rung
        assert stopper("b", {"epoch": 3})              # at its rung it stops ...
        assert spend.stopped == {"b": 3} and not stopper.stop_all()
        SpendCallback("t").on_trial_complete(2, [], trial("b", "TERMINATED"))
        assert stopper.stop_all()                      # ... and once Tune has completed it, the search ends
        # A trial Tune started after the budget closed stops at its first report.
        SpendCallback("t").on_step_begin(3, [trial("c")])
        assert stopper("c", {"epoch": 1}) or "c" in spend.late
    finally:
        REGISTRY.pop("t")


def test_once_the_budget_is_closed_the_searcher_asks_optuna_for_no_trial(tmp_path):
    from search.space_file import load_space
    from search.tuner import make_searcher

    path = tmp_path / "space.py"
    path.write_text(SPACE)
    searcher = make_searcher(load_space(path), run_name="h")
    spend = live(budget_hours=1.0)
    REGISTRY["h"] = spend
    try:
        assert set(searcher.suggest("a")) >= {"lr"}          # open: a trial is asked and sampled
        spend.closed = True
        assert searcher.suggest("b") is None                  # closed: Tune's "not now", nothing asked
        assert len(searcher.study.trials) == 1
        assert set(searcher.suggest("a")) >= {"lr"}           # a trial already asked is still answered
    finally:
        REGISTRY.pop("h")
    assert make_searcher(load_space(path)).suggest("c") is not None  # no run name, no budget: never held


def test_without_a_budget_nothing_stops():
    spend = live()
    REGISTRY["n"] = spend
    try:
        SpendCallback("n").on_step_begin(0, [trial("a", seconds=10 ** 6, epoch=1)])
        assert not BudgetStopper("n")("a", {"epoch": 1}) and not BudgetStopper("n").stop_all()
    finally:
        REGISTRY.pop("n")


SPACE = '''
SETTINGS = {"num_samples": 4, "max_epochs": 2, "grace_period": 1, "reduction_factor": 2, "cpus_per_trial": 1,
            "max_concurrent": 1, "train_size": 32, "eval_size": 32,
            "trial": {"num_workers": 0, "backbone": "resnet10t", "batch_size": 8, "pretrained": False}}

def define(trial):
    trial.suggest_float("lr", 1e-3, 5e-2, log=True)
'''


@pytest.mark.slow
def test_a_budget_stops_a_search_and_a_larger_one_resumes_it(tmp_path, toy_data, ray_session, capsys):
    from search.run import main

    space = tmp_path / "space.py"
    space.write_text(SPACE)
    common = ["--storage", str(tmp_path / "results"), "--name", "b", "--ensemble-top-k", "0"]
    # --epoch-seconds 1000: until a trial has measured its own epochs, the budget takes each at 1000 s. 0.4 h
    # covers one trial's first rung (0.28 h) but not a second's next to it: the first trial runs epoch 1 (a rung)
    # and stops there, however fast this machine is.
    code = main(["--space", str(space), "--data", str(toy_data), *common, "--epoch-seconds", "1000",
                 "--budget-gpu-hours", "0.4"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "The budget is spent: 3 trial(s) not run" in captured.err and "--budget-gpu-hours HOURS" in captured.err
    out = tmp_path / "results" / "b"
    table = pd.read_csv(out / "leaderboard.csv")
    assert len(table) == 1 and table["epochs"].tolist() == [1]
    assert table["reason"].tolist() == ["stopped by the budget at epoch 1"]
    assert "Spent" in captured.out and "CPU-hours (no GPU)" in captured.out and "budget 0.4" in captured.out
    assert table["cpu_hours"].iloc[0] > 0
    assert json.loads((out / "plan.json").read_text())["budget"]["hours"] == 0.4

    code = main([*common, "--resume", "--budget-gpu-hours", "100"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    table = pd.read_csv(out / "leaderboard.csv")
    assert len(table) == 4 and set(table["status"]) <= {"completed", "stopped_early"}
    assert json.loads((out / "plan.json").read_text())["budget"]["hours"] == 100
    from search.study import load_study

    assert len(load_study(out).trials) == 4


@pytest.mark.slow
def test_no_trial_starts_after_the_budget_closes(tmp_path, toy_data, ray_session, capsys):
    """Two trials at a time. At 1000 s an epoch until measured, 0.5 h covers the first trial's first rung (0.28 h)
    but not a second's next to it, so the budget closes as soon as a trial runs; the two trials Tune created
    before that run to their rung and stop. Before the searcher was held, each stopped trial's free slot got a
    new trial, which ran an epoch after the budget had closed."""
    from search.run import main

    space = tmp_path / "space.py"
    space.write_text(SPACE.replace('"max_concurrent": 1', '"max_concurrent": 2'))
    code = main(["--space", str(space), "--data", str(toy_data), "--storage", str(tmp_path / "results"),
                 "--name", "h2", "--ensemble-top-k", "0", "--epoch-seconds", "1000", "--budget-gpu-hours", "0.5"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    table = pd.read_csv(tmp_path / "results" / "h2" / "leaderboard.csv")
    assert 1 <= len(table) <= 2 and table["epochs"].tolist() == [1] * len(table), table
    assert f"The budget is spent: {4 - len(table)} trial(s) not run" in captured.err
    from search.study import load_study

    assert len(load_study(tmp_path / "results" / "h2").trials) == len(table)  # nothing asked that did not run


def test_the_budget_a_plan_keeps():
    from search.spend import BudgetError, plan_budget

    args = types.SimpleNamespace(budget_gpu_hours=None, budget_usd=None)
    forecast = {"cost": {"usd_per_hour": 2.0}}
    assert plan_budget(args, None, forecast) is None
    assert plan_budget(args, {"budget": {"hours": 3}}, forecast) == {"hours": 3}   # --resume keeps the saved one
    args.budget_usd, args.budget_gpu_hours = 10.0, 8.0
    assert plan_budget(args, {"budget": {"hours": 3}}, forecast)["hours"] == 5.0  # the tighter: $10 at $2/h
    args.budget_gpu_hours = -1.0
    with pytest.raises(BudgetError, match="--budget-gpu-hours is -1, but a budget must be > 0"):
        plan_budget(args, None, forecast)
    args.budget_gpu_hours = None
    with pytest.raises(BudgetError, match="needs a price"):
        plan_budget(args, None, {})
