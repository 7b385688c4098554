"""A real search on CPU: Optuna TPE + ASHA on Ray Tune, asserted from the files it leaves behind."""
import json
import pickle
import re
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import optuna
import pandas as pd
import pytest
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState

from conftest import make_image_folder
from search import preflight
from search.report import main as report_main
from search.run import main as search_main
from search.study import STUDY_FILE

NUM_SAMPLES, MAX_EPOCHS = 8, 4
SPACE = f'''
SETTINGS = {{
    "num_samples": {NUM_SAMPLES}, "max_epochs": {MAX_EPOCHS}, "grace_period": 1, "reduction_factor": 2,
    "cpus_per_trial": 1, "max_concurrent": 2, "train_size": 32, "eval_size": 32, "max_failures": 0,
    "reuse_actors": True,  # Tune's own option: no new worker process per trial (this module tests outcomes)
    "trial": {{"num_workers": 0}},
}}

def define(trial):
    trial.suggest_float("lr", 1e-5, 5e-2, log=True)
    trial.suggest_int("batch_size", 8, 64, step=8)  # 64 > the 60 training images: that trial fails
    if trial.suggest_categorical("head", ["linear", "mlp"]) == "mlp":
        trial.suggest_categorical("head_hidden", [16, 32])

WARM_STARTS = [
    {{"lr": 0.02, "batch_size": 8, "head": "mlp", "head_hidden": 16}},
    {{"lr": 0.01, "batch_size": 64, "head": "linear"}},
]
'''
TRIAL_KEYS = {"backbone": "resnet10t"}


@pytest.fixture(scope="module")
def search_dir(ray_session, tmp_path_factory):
    root = tmp_path_factory.mktemp("search")
    data = make_image_folder(root / "data", classes=("a", "b", "c", "d", "e"), noise=90.0)
    space = root / "space.py"
    space.write_text(SPACE.replace('"trial": {"num_workers": 0}', '"trial": {"num_workers": 0, "backbone": "resnet10t"}'))
    # The plan refuses a space that can sample a batch_size larger than the training set (search/preflight.py);
    # this module needs trials that fail, so that one check is off here and the trials' own check fails them.
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(preflight, "_check_batch_size", lambda *args: None)
        code = search_main(["--space", str(space), "--data", str(data), "--storage", str(root / "results"),
                            "--name", "toy", "--seed", "3"])
    assert code == 0
    return root / "results" / "toy"


@pytest.fixture(scope="module")
def leaderboard(search_dir):
    return pd.read_csv(search_dir / "leaderboard.csv")


@pytest.fixture(scope="module")
def study(search_dir):
    (state,) = search_dir.glob("searcher-state-*.pkl")
    return pickle.loads(state.read_bytes())["_study"]


def test_leaderboard_has_one_row_per_trial_with_outcomes(leaderboard):
    assert len(leaderboard) == NUM_SAMPLES
    assert list(leaderboard["rank"]) == list(range(1, NUM_SAMPLES + 1))
    for col in ("trial_id", "status", "reason", "epochs", "best_val_acc", "best_val_macro_f1", "lr", "batch_size",
                "head", "head_hidden", "param_count", "trial_hours", "accelerator_hours"):
        assert col in leaderboard.columns, col
    status = leaderboard["status"]
    assert set(status) <= {"completed", "stopped_early", "failed"}  # every trial ended: none interrupted
    completed = leaderboard[status == "completed"]
    stopped = leaderboard[status == "stopped_early"]
    failed = leaderboard[status == "failed"]
    assert len(completed) >= 1 and (completed["epochs"] == MAX_EPOCHS).all()
    assert len(stopped) >= 1, "ASHA stopped no trial early"
    for _, row in stopped.iterrows():
        assert row["reason"] == f"stopped by ASHA at epoch {row['epochs']}" and row["epochs"] < MAX_EPOCHS
    # batch_size 64 > 60 images: a UserError in the trial, reported once (not retried), before any epoch.
    assert len(failed) >= 1 and (failed["batch_size"] == 64).all() and (failed["epochs"] == 0).all()
    assert failed["reason"].str.match("UserError: batch_size is 64, but .* has only 60 training images").all()
    assert set(failed["rank"]) == set(range(NUM_SAMPLES - len(failed) + 1, NUM_SAMPLES + 1))  # errors rank last
    ok = leaderboard[status != "failed"]
    assert ok["best_val_acc"].is_monotonic_decreasing
    assert (ok["param_count"] > 1e6).all() and (ok["accelerator_hours"] == 0).all()  # CPU-only: no GPU hours


def test_run_files_make_it_reproducible(search_dir, leaderboard):
    best = json.loads((search_dir / "best_config.json").read_text())
    top = leaderboard.iloc[0]
    assert best["lr"] == pytest.approx(top["lr"]) and best["backbone"] == "resnet10t" and best["epochs"] == MAX_EPOCHS
    assert (search_dir / "space.py").read_text() == (search_dir.parents[1] / "space.py").read_text()
    provenance = json.loads((search_dir / "provenance.json").read_text())
    assert len(provenance["git_commit"]) == 40 or provenance["git_commit"] == "unknown"
    assert {"torch", "timm", "ray", "optuna"} <= set(provenance["packages"])
    assert "| rank |" in (search_dir / "leaderboard.md").read_text().replace("|   rank |", "| rank |")


def test_warm_starts_run_first_with_exactly_their_values(study, search_dir):
    trials = sorted(study.trials, key=lambda t: t.number)
    assert trials[0].params == {"lr": 0.02, "batch_size": 8, "head": "mlp", "head_hidden": 16}
    assert trials[1].params == {"lr": 0.01, "batch_size": 64, "head": "linear"}
    configs = [json.loads(p.read_text()) for p in search_dir.glob("*/params.json")]
    first = [c for c in configs if c["lr"] == 0.02 and c.get("head_hidden") == 16]
    assert len(first) == 1 and first[0]["head"] == "mlp" and first[0]["batch_size"] == 8


def test_optuna_is_told_how_each_trial_ended(study, leaderboard):
    by_params = {}
    for t in study.trials:
        by_params[(round(t.params["lr"], 12), t.params["batch_size"])] = t
    for _, row in leaderboard.iterrows():
        t = by_params[(round(row["lr"], 12), row["batch_size"])]
        if row["status"] == "completed":
            assert t.state == TrialState.COMPLETE and t.value == pytest.approx(t.intermediate_values[MAX_EPOCHS])
        elif row["status"] == "stopped_early":
            assert t.state == TrialState.PRUNED  # Ray alone would say COMPLETE
            assert sorted(t.intermediate_values) == list(range(1, row["epochs"] + 1))
        else:
            assert t.state == TrialState.FAIL and t.user_attrs["fatal_error"] == row["reason"]
            assert t.intermediate_values == {}  # the error report is no epoch


def test_tensorboard_event_files_hold_curves_and_hparams(search_dir, leaderboard):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    for _, row in leaderboard.iterrows():
        acc = EventAccumulator(str(search_dir / row["trial_id"]))
        acc.Reload()
        tags = acc.Tags()
        if row["status"] != "failed":
            steps = [e.step for e in acc.Scalars("val_acc")]
            assert steps == list(range(1, row["epochs"] + 1))
            assert max(e.value for e in acc.Scalars("val_acc")) == pytest.approx(row["best_val_acc"])
        assert "_hparams_/session_start_info" in tags["tensors"] + tags.get("scalars", []) or \
            any("session_start" in t for t in acc.summary_metadata)


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _post(url, body):
    request = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def test_tensorboard_hparams_tab_shows_every_trial(search_dir, leaderboard):
    """Start TensorBoard on the finished run and read what its HParams tab would show."""
    port = _free_port()
    tb = subprocess.Popen([sys.executable, "-m", "tensorboard.main", "--logdir", str(search_dir), "--port", str(port),
                           "--host", "127.0.0.1"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}/data/plugin/hparams"
    try:
        deadline = time.time() + 60
        while True:
            try:
                experiment = _post(f"{base}/experiment", {"experimentName": ""})
                groups = _post(f"{base}/session_groups", {
                    "experimentName": "", "startIndex": 0, "sliceSize": 100, "colParams": [],
                    "allowedStatuses": ["STATUS_UNKNOWN", "STATUS_SUCCESS", "STATUS_FAILURE", "STATUS_RUNNING"]})
                if groups.get("totalSize", 0) >= NUM_SAMPLES:
                    break
            except OSError:
                pass
            assert time.time() < deadline, "TensorBoard did not list every trial within 60 s"
            time.sleep(1)
    finally:
        tb.terminate()
        tb.wait(10)
    assert {"lr", "batch_size", "head", "head_hidden"} <= {h["name"] for h in experiment["hparamInfos"]}
    metrics = [m["name"]["tag"] for m in experiment["metricInfos"]]
    assert metrics[0] == "best_val_acc" and not any(m.startswith("ray/") or m == "done" for m in metrics)
    assert "status" in {h["name"] for h in experiment["hparamInfos"]}
    sessions = {g["name"]: g for g in groups["sessionGroups"]}
    assert set(sessions) == set(leaderboard["trial_id"])
    for _, row in leaderboard.iterrows():
        group = sessions[row["trial_id"]]
        assert group["hparams"]["lr"] == pytest.approx(row["lr"])
        assert ("head_hidden" in group["hparams"]) == (row["head"] == "mlp")
        status = group["sessions"][0]["status"]
        assert group["hparams"]["status"] == row["status"]  # completed, stopped_early or failed, as the leaderboard
        if row["status"] == "failed":
            assert status == "STATUS_FAILURE"
        else:
            assert status == "STATUS_SUCCESS"
            values = {m["name"]["tag"]: m["value"] for m in group["metricValues"]}
            assert values["best_val_acc"] == pytest.approx(row["best_val_acc"], abs=1e-6)
            assert values["val_acc"] == pytest.approx(_last_val_acc(search_dir / row["trial_id"]), abs=1e-6)


def _last_val_acc(trial_dir: Path) -> float:
    return json.loads((trial_dir / "result.json").read_text().splitlines()[-1])["val_acc"]


def test_existing_name_is_refused_and_nothing_overwritten(search_dir, capsys):
    before = (search_dir / "leaderboard.csv").read_bytes()
    code = search_main(["--space", str(search_dir / "space.py"), "--data", "builtin:digits",
                        "--storage", str(search_dir.parent), "--name", "toy"])
    assert code == 2
    err = capsys.readouterr().err
    assert "A search named 'toy' already exists" in err and "nothing was overwritten" in err
    assert "python search/run.py --name toy --resume" in err
    assert (search_dir / "leaderboard.csv").read_bytes() == before


def test_search_ends_with_an_ensemble_and_test_predictions(search_dir, leaderboard):
    manifest = json.loads((search_dir / "ensemble.json").read_text())
    finished = set(leaderboard.loc[leaderboard["status"] == "completed", "trial_id"])
    assert manifest["members"] and {m["trial_id"] for m in manifest["members"]} <= finished
    assert manifest["param_total"] <= 100e6
    predictions = pd.read_csv(search_dir / "prediction.csv", dtype=str)
    assert list(predictions.columns) == ["image_name", "pred_label"]
    assert sorted(predictions["image_name"]) == [f"t{i:03d}" for i in range(6)]
    assert set(predictions["pred_label"]) <= {"a", "b", "c", "d", "e"}


def test_study_file_holds_the_search_with_the_leaderboards_outcomes(search_dir, leaderboard):
    """results/<name>/optuna_study.log is the live study (optuna-dashboard reads it): one trial per
    leaderboard row, each in the state the leaderboard gives it, pruned trials with their curves."""
    storage = JournalStorage(JournalFileBackend(str(search_dir / STUDY_FILE)))
    study = optuna.load_study(study_name="toy", storage=storage)
    assert study.user_attrs["metric"] == "val_acc"
    by_tune_id = {t.user_attrs["ray_trial_id"]: t for t in study.trials}
    assert set(by_tune_id) == set(leaderboard["trial_id"])
    expected = {"completed": TrialState.COMPLETE, "stopped_early": TrialState.PRUNED, "failed": TrialState.FAIL}
    for row in leaderboard.itertuples():
        trial = by_tune_id[row.trial_id]
        assert trial.state == expected[row.status], row
        assert trial.params["lr"] == pytest.approx(row.lr) and trial.params["batch_size"] == row.batch_size
        if trial.state != TrialState.FAIL:
            assert sorted(trial.intermediate_values) == list(range(1, row.epochs + 1))
            assert max(trial.intermediate_values.values()) == pytest.approx(row.best_val_acc)


def test_report_shows_what_mattered_for_a_conditional_space(search_dir, leaderboard, study):
    report = search_dir / "report"
    for name in ("importance", "importance_fanova", "parallel_coordinate", "learning_curves",
                 "intermediate_values", "best_vs_epochs"):
        png = (report / f"{name}.png").read_bytes()
        assert png.startswith(b"\x89PNG") and len(png) > 5000, name
    page = (report / "report.html").read_text()
    assert page.count('src="data:image/png;base64,') >= 6  # embedded: the page opens offline
    assert "http://" not in page and "https://" not in page
    table = pd.read_csv(report / "importance.csv")
    ped = table[table["evaluator"] == "PED-ANOVA"]
    assert set(ped["parameter"]) == {"lr", "batch_size", "head", "head_hidden"}  # the conditional one too
    assert ped["importance"].sum() == pytest.approx(1.0)
    fanova = table[table["evaluator"] == "fANOVA"]
    # fANOVA over all trials takes the parameters every trial at the report's epoch has: lr, batch_size, head, and
    # head_hidden too when every one of them took the MLP head (which trials those are depends on sampling).
    rung = int(re.search(r"Importance at epoch (\d+)", page).group(1))
    at_rung = [t for t in study.trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)
               and rung in t.intermediate_values]
    everywhere = set.intersection(*(set(t.params) for t in at_rung))
    assert {"lr", "batch_size", "head"} <= everywhere
    assert set(fanova.loc[fanova["branch"] == "all", "parameter"]) == everywhere
    if (fanova["branch"] == "head_hidden").any():  # fANOVA on the MLP branch's own trials
        branch = fanova[fanova["branch"] == "head_hidden"]
        assert "head_hidden" in set(branch["parameter"]) and "head" not in set(branch["parameter"])
        assert branch["trials"].iloc[0] < fanova.loc[fanova["branch"] == "all", "trials"].iloc[0]
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(report / "tensorboard"))
    acc.Reload()
    tags = set(acc.Tags()["images"])
    assert {"report/importance", "report/learning_curves", "report/best_vs_epochs"} <= tags


def test_report_is_rewritten_on_demand_and_refuses_a_run_without_study(search_dir, tmp_path, capsys):
    (search_dir / "report" / "report.html").unlink()
    assert report_main([str(search_dir)]) == 0
    assert (search_dir / "report" / "report.html").exists()
    assert report_main([str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert f"No Optuna study at {tmp_path / STUDY_FILE}" in err and "Traceback" not in err


def test_deterministic_errors_are_not_retried_but_crashes_are(ray_session, tmp_path):
    """A ConfigError fails the trial on its first attempt (reported as fatal_error); a crash that may not
    happen again is still retried by Tune."""
    from ray import tune

    from worker.tune_sink import TuneSink
    from worker.tune_trial import run_without_retrying_user_errors
    from core.config import ConfigError

    def trial(config):
        def train(cfg, reporter):
            attempts = tmp_path / f"attempts-{cfg['kind']}"
            attempts.write_text(attempts.read_text() + "x" if attempts.exists() else "x")
            if cfg["kind"] == "config":
                raise ConfigError("lr is -1.0, but must be > 0.")
            if len(attempts.read_text()) == 1:
                raise RuntimeError("node lost")  # the first attempt only
            tune.report({"val_acc": 0.5})
        run_without_retrying_user_errors(train, config, TuneSink())

    tuner = tune.Tuner(trial, param_space={"kind": tune.grid_search(["config", "crash"])},
                       tune_config=tune.TuneConfig(metric="val_acc", mode="max"),
                       run_config=tune.RunConfig(name="retries", storage_path=str(tmp_path / "runs"), verbose=0,
                                                 failure_config=tune.FailureConfig(max_failures=2)))
    results = {r.config["kind"]: r for r in tuner.fit()}
    assert (tmp_path / "attempts-config").read_text() == "x"    # exactly one attempt
    assert (tmp_path / "attempts-crash").read_text() == "xx"    # retried once, then fine
    config, crash = results["config"], results["crash"]
    assert config.error is None and config.metrics["fatal_error"] == "ConfigError: lr is -1.0, but must be > 0."
    assert crash.error is None and crash.metrics["val_acc"] == 0.5 and "fatal_error" not in crash.metrics


def test_search_where_every_trial_fails_exits_1_with_the_reasons(ray_session, tmp_path, capsys):
    """The data vanishes after the plan checked it: every trial hits the same DataError, once each (no retry,
    though max_failures is 2), the leaderboard says so, Optuna is told FAIL, and the search exits 1."""
    import shutil

    from search.plan import Plan
    from search.run import build_parser

    data = make_image_folder(tmp_path / "data")
    space = tmp_path / "space.py"
    space.write_text('SETTINGS = {"num_samples": 2, "max_epochs": 2, "cpus_per_trial": 1, "max_concurrent": 1, '
                     '"max_failures": 2, "train_size": 32, "eval_size": 32, '
                     '"trial": {"num_workers": 0, "backbone": "resnet10t", "batch_size": 8}}\n'
                     'def define(trial):\n    trial.suggest_float("lr", 1e-3, 1e-2, log=True)\n')
    plan = Plan.from_args(build_parser().parse_args(["--space", str(space), "--data", str(data), "--name", "gone",
                                                     "--storage", str(tmp_path / "results")]))
    shutil.move(data, tmp_path / "moved")
    capsys.readouterr()
    assert plan.execute() == 1
    err = capsys.readouterr().err
    assert f"error: All 2 trial(s) failed: 2 x DataError: Dataset folder {data} does not exist." in err
    assert err.count("DataError") == 1 and "Traceback" not in err

    run = tmp_path / "results" / "gone"
    table = pd.read_csv(run / "leaderboard.csv")
    assert list(table["status"]) == ["failed", "failed"] and (table["epochs"] == 0).all()
    assert table["reason"].str.startswith(f"DataError: Dataset folder {data} does not exist.").all()
    assert not (run / "ensemble.json").exists() and not (run / "best_config.json").exists()
    for trial_id in table["trial_id"]:
        results = (run / trial_id / "result.json").read_text().splitlines()
        assert len(results) == 1 and json.loads(results[0])["fatal_error"].startswith("DataError")  # one attempt
        assert not (run / trial_id / "error.txt").exists()  # Tune saw no crash, so it retried nothing
    study = optuna.load_study(study_name="gone", storage=JournalStorage(JournalFileBackend(str(run / STUDY_FILE))))
    assert [t.state for t in study.trials] == [TrialState.FAIL, TrialState.FAIL]
    assert all(t.user_attrs["fatal_error"].startswith("DataError") for t in study.trials)


def _result(metrics: dict, error: BaseException | None = None):
    """What build_leaderboard reads from a Tune Result: metrics, error, path."""
    from types import SimpleNamespace

    return SimpleNamespace(metrics=metrics, error=error, path="/runs/x/tune_trial_abc_00000", metrics_dataframe=None)


@pytest.mark.parametrize("metrics, error, tune_status, expected", [
    ({"training_iteration": 4, "done": True}, None, "TERMINATED", ("completed", "")),
    ({"training_iteration": 2, "done": True}, None, "TERMINATED", ("stopped_early", "stopped by ASHA at epoch 2")),
    # Ctrl-C: Tune stops a running trial as TERMINATED, but its last result is no 'done' one.
    ({"training_iteration": 2}, None, "TERMINATED",
     ("interrupted", "the search stopped after epoch 2; --resume continues it")),
    ({"training_iteration": 0}, None, "RUNNING", ("interrupted", "the search stopped after epoch 0; --resume continues it")),
    ({}, None, "PENDING", ("not_started", "")),
    ({"training_iteration": 1, "done": True, "fatal_error": "ConfigError: lr is -1"}, None, "TERMINATED",
     ("failed", "ConfigError: lr is -1")),
    ({"training_iteration": 3}, RuntimeError("CUDA out of memory"), "ERROR",
     ("failed", "RuntimeError: CUDA out of memory")),
], ids=["completed", "asha", "ctrl-c-mid-trial", "ctrl-c-before-an-epoch", "pending", "fatal", "crash"])
def test_how_a_trial_ended_is_a_typed_status_with_a_reason(metrics, error, tune_status, expected):
    from search.leaderboard import trial_outcome

    epochs = int(metrics.get("training_iteration", 0))
    status, reason = trial_outcome(_result(metrics, error), epochs, MAX_EPOCHS, tune_status)
    assert (status.value, reason.splitlines()[0] if reason else "") == expected


def test_a_run_in_an_older_results_format_is_refused_with_one_message(tmp_path, capsys):
    """One format version per run (core/run_format.py) instead of shims for every older layout."""
    import json

    from ensemble.__main__ import main as ensemble_main

    run = tmp_path / "results" / "old"
    run.mkdir(parents=True)
    (run / "plan.json").write_text(json.dumps({"version": 1, "settings": {}}))  # what format 1 wrote
    (run / "leaderboard.csv").write_text("rank,trial_id,ended,epochs\n1,a,completed,4\n")
    before = sorted(p.name for p in run.iterdir())
    assert ensemble_main([str(run)]) == 2
    err = capsys.readouterr().err
    assert "written by an older version of resnet-search (results format 1; this version reads format 2)" in err
    # nothing written but the run lock's empty file (core/run_lock.py keeps it)
    assert "Traceback" not in err and sorted(p.name for p in run.iterdir() if p.name != ".run.lock") == before
    code = search_main(["--name", "old", "--resume", "--storage", str(tmp_path / "results")])
    assert code == 2 and "results format 1" in capsys.readouterr().err


def test_an_interrupted_search_summary_claims_no_savings(tmp_path):
    from search.outputs import summary

    table = pd.DataFrame({"trial_id": ["a", "b"], "status": ["completed", "interrupted"], "epochs": [4, 2],
                          "best_epoch": [3, 2], "best_val_acc": [0.9, 0.5]})
    text = summary(table, metric="val_acc", max_epochs=4, out_dir=tmp_path, storage_dir=str(tmp_path))
    assert "Best trial so far a" in text and "1 interrupted or not started" in text
    assert "6 of the 8 epochs that running every trial to max_epochs would cost have run." in text
    assert "saved" not in text and "ASHA ran" not in text
    table["status"] = ["completed", "stopped_early"]
    text = summary(table, metric="val_acc", max_epochs=4, out_dir=tmp_path, storage_dir=str(tmp_path))
    assert "Best trial a" in text and "ASHA ran 6 of the 8 epochs" in text and "25% saved" in text


def test_asha_and_the_leaderboard_count_the_trials_own_epochs():
    """After a damaged-checkpoint fallback the trial retrains an epoch Tune already counted, so Tune's
    training_iteration runs ahead of the trial's epoch (tests/test_checkpoint_policy.py): ASHA's rungs and
    the leaderboard must follow the epoch."""
    from types import SimpleNamespace

    from search.leaderboard import _row
    from search.space_file import SearchSettings, Space
    from search.tuner import make_scheduler

    space = Space(path=Path("space.py"), define=lambda trial: None, warm_starts=(),
                  settings=SearchSettings(max_epochs=4, grace_period=2, reduction_factor=2))
    asha = make_scheduler(space)
    asha.set_search_properties("val_acc", "max")
    trial = SimpleNamespace(trial_id="t", config={})
    asha.on_trial_add(None, trial)
    # Epoch 1 retrained after a fallback: iteration 2, epoch 1. The rung at epoch 2 has not been reached.
    asha.on_trial_result(None, trial, {"epoch": 1, "training_iteration": 2, "val_acc": 0.1})
    assert all(trial.trial_id not in recorded for _, recorded in asha._brackets[0]._rungs)
    asha.on_trial_result(None, trial, {"epoch": 2, "training_iteration": 3, "val_acc": 0.2})
    assert any(trial.trial_id in recorded for _, recorded in asha._brackets[0]._rungs)

    history = pd.DataFrame({"epoch": [1, 2, 1, 2], "training_iteration": [1, 2, 3, 4],
                            "val_acc": [0.1, 0.2, 0.15, 0.3]})
    result = SimpleNamespace(metrics={"epoch": 2, "training_iteration": 4, "done": True, "val_acc": 0.3},
                             error=None, path="/runs/x/t", metrics_dataframe=history, checkpoint=None, config={},
                             best_checkpoints=[])
    row = _row(result, space.settings, {}, {"t": "TERMINATED"})
    assert row["epochs"] == 2 and row["best_epoch"] == 2
    assert (row["status"], row["reason"]) == ("stopped_early", "stopped by ASHA at epoch 2")
