"""Refit: a real tiny search ends with `--refit kfold:3` (2 candidates x 3 fold models as Ray Tune trials);
the fold models, the out-of-fold selection and the averaged test predictions are checked from the files and
the models themselves. A `bag:2` refit of the same search is interrupted (SIGINT, as Ctrl-C) after its first
models finish and resumed without retraining them. Folds and bags are unit-tested on their own."""
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from ray import tune

from conftest import make_image_folder
from ensemble import strategies
from ensemble.build import build_ensemble
from ensemble.candidates import EnsembleError
from ensemble.refit import REFIT_DIR, REFIT_PREDICTIONS
from search.run import main as search_main
from core.config import ConfigError, TrialConfig
from core.data import index_dataset
from core.subsets import apply_subset, parse_subset, pooled, split

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
SPACE = '''
SETTINGS = {
    "num_samples": 2, "max_epochs": 2, "grace_period": 2, "cpus_per_trial": 1, "max_concurrent": 2,
    "train_size": 32, "eval_size": 32, "max_failures": 0,
    "trial": {"num_workers": 0, "backbone": "resnet10t", "batch_size": 8},
}

def define(trial):
    trial.suggest_float("lr", 1e-3, 3e-2, log=True)

WARM_STARTS = [{"lr": 0.02}, {"lr": 0.005}]
'''
CLASSES = ("a", "b", "c")


@pytest.fixture(scope="module")
def run_dir(ray_session, tmp_path_factory):
    """A finished 2-trial search that ended with its ensemble and a kfold:3 refit."""
    root = tmp_path_factory.mktemp("refit")
    data = make_image_folder(root / "data", classes=CLASSES, per_class=10, val_per_class=3, size=24, test=6, noise=40.0)
    (root / "space.py").write_text(SPACE)
    code = search_main(["--space", str(root / "space.py"), "--data", str(data), "--storage", str(root / "results"),
                        "--name", "toy", "--ensemble-top-k", "2", "--refit", "kfold:3"])
    assert code == 0
    return root / "results" / "toy"


@pytest.fixture(scope="module")
def manifest(run_dir):
    manifest = json.loads((run_dir / "ensemble.json").read_text())
    assert "refit" in manifest, "the search's ensemble stage did not refit (its message is in the output)"
    return manifest


@pytest.fixture(scope="module")
def oof(manifest):
    with np.load(manifest["refit"]["oof_file"]) as stored:
        return {k: stored[k] for k in stored.files}


def data_index(run_dir):
    config = TrialConfig.from_dict(json.loads((run_dir / "best_config.json").read_text()))  # defaults filled in
    return index_dataset(Path(config.data), val_fraction=config.val_fraction, seed=config.seed,
                         min_image_side=config.min_image_side, warn=lambda _: None)


def load_model(checkpoint):
    from trainable.checkpoint import load_model_file

    return load_model_file(Path(checkpoint))


# ---------------------------------------------------------------------------------- kfold

def test_every_candidate_has_three_fold_models_trained_for_its_best_epoch(run_dir, manifest):
    refit = manifest["refit"]
    leaderboard = pd.read_csv(run_dir / "leaderboard.csv", dtype={"trial_id": str}).set_index("trial_id")
    assert (refit["scheme"], refit["folds"]) == ("kfold", 3)
    assert [m["trial_id"] for m in refit["members"]] == manifest["selection"]["candidates"]
    assert len(refit["members"]) == 2
    for member in refit["members"]:
        assert member["epochs"] == leaderboard.loc[member["trial_id"], "best_epoch"]
        assert [m["subset"] for m in member["models"]] == ["kfold:3:0", "kfold:3:1", "kfold:3:2"]
        for model in member["models"]:
            # A Tune trial of the refit experiment, next to the search's, holding the model's last epoch.
            assert Path(model["checkpoint"]).parent.parent == run_dir / "refit-kfold3"
            saved = load_model(model["checkpoint"])
            assert saved["epoch"] == member["epochs"] == saved["config"]["epochs"]
            assert saved["config"]["subset"] == model["subset"] and saved["config"]["lr"] == leaderboard.loc[
                member["trial_id"], "lr"]
        # The member's parameters at inference: all three of its models.
        assert member["param_count"] == 3 * saved["metrics"]["param_count"]


def test_fold_models_train_on_the_other_folds_and_validate_on_their_own(run_dir, manifest):
    index = data_index(run_dir)
    everything = set(pooled(index))
    assert len(everything) == len(index.train) + len(index.val) == manifest["refit"]["pooled_images"] == 39
    held_out = []
    for k in range(3):
        fold = apply_subset(index, f"kfold:3:{k}", manifest["refit"]["subset_seed"])
        assert not set(fold.train) & set(fold.val)
        assert set(fold.train) | set(fold.val) == everything
        held_out += list(fold.val)
    assert sorted(held_out) == sorted(everything)  # the folds partition train+val
    member = manifest["refit"]["members"][0]
    assert [m["val_images"] for m in member["models"]] == [13, 13, 13]


def test_out_of_fold_predictions_cover_every_pooled_image_exactly_once(manifest, oof):
    assert (oof["counts"] == 1).all() and oof["covered"].all()
    assert oof["oof_probs"].shape == (2, 39, len(CLASSES))
    assert np.allclose(oof["oof_probs"].sum(axis=-1), 1.0)
    for member, probs in zip(manifest["refit"]["members"], oof["oof_probs"]):
        # Each member's OOF score is its three held-out folds pooled.
        assert member["oof_acc"] == pytest.approx(strategies.accuracy(probs.argmax(axis=1), oof["labels"]))
        held_out_correct = sum(m["val_acc"] * m["val_images"] for m in member["models"])
        assert held_out_correct == pytest.approx(member["oof_acc"] * 39)


def test_the_refit_ensemble_is_chosen_on_the_oof_predictions(manifest, oof):
    refit = manifest["refit"]
    assert set(refit["strategies"]) == set(strategies.STRATEGIES)
    assert refit["selection"]["on"] == "out-of-fold predictions"
    assert refit["selection"]["cv_folds"] == 5
    expected = strategies.select_ensemble(np.log(np.clip(oof["oof_probs"], 1e-12, None)), oof["labels"],
                                          [m["param_count"] for m in refit["members"]],
                                          budget=manifest["budget_m"] * 1e6)
    assert refit["strategy"] == expected.strategy
    assert [m["weight"] for m in refit["members"]] == pytest.approx(list(expected.weights))
    assert sum(m["weight"] for m in refit["members"]) == pytest.approx(1.0)


def test_test_predictions_average_the_fold_models_softmax(run_dir, manifest, oof):
    """Recomputed here from the fold models themselves: each member's test probabilities are the mean of its
    three models' softmax, and prediction_refit.csv is the selected combination of those."""
    import torch

    from ensemble.candidates import Inference
    from worker.scoring import Member
    from core.storage import Location

    refit = manifest["refit"]
    test_files = list(oof["test_files"])
    assert len(test_files) == refit["test_images"] == 6
    for member, stored in zip(refit["members"], oof["test_probs"]):
        softmaxes = []
        for model in member["models"]:
            logits = Member.load(Location(model["checkpoint"])).logits(test_files, Inference())
            softmaxes.append(torch.softmax(torch.from_numpy(logits).double(), dim=1).numpy())
        assert np.allclose(stored, np.mean(softmaxes, axis=0), atol=1e-5)
    scores = strategies.combine(refit["strategy"], np.log(np.clip(oof["test_probs"], 1e-12, None)),
                                np.array([m["weight"] for m in refit["members"]]))
    predictions = pd.read_csv(run_dir / REFIT_PREDICTIONS, dtype=str)
    assert list(predictions["image_name"]) == [Path(f).stem for f in test_files]
    assert list(predictions["pred_label"]) == [CLASSES[i] for i in scores.argmax(axis=1)]
    assert refit["predictions"] == str(run_dir / REFIT_PREDICTIONS)
    assert (run_dir / "prediction.csv").is_file()  # the plain ensemble's predictions stay


# ---------------------------------------------------------------------------- interrupted

class InterruptAfter(tune.Callback):
    """Sends this process SIGINT (Ctrl-C) once `n` trials have completed; unpickled (as Tune restores a
    Tuner's callbacks on resume) it is disarmed."""

    def __init__(self, n):
        self.n, self.completed = n, 0

    def __getstate__(self):
        return {"n": None, "completed": 0}

    def on_trial_complete(self, iteration, trials, trial, **info):
        self.completed += 1
        if self.completed == self.n:
            os.kill(os.getpid(), signal.SIGINT)


def trial_records(experiment: Path) -> dict:
    """trial folder -> (result rows, the checkpoint files' modification times)."""
    return {d.name: (len((d / "result.json").read_text().splitlines()),
                     {str(f.relative_to(d)): f.stat().st_mtime_ns for f in d.glob("checkpoint_*/*")})
            for d in sorted(experiment.iterdir()) if (d / "result.json").is_file()}


def test_refit_results_survive_every_later_ensemble_command_that_does_not_replace_them(run_dir, manifest, capsys):
    from ensemble.__main__ import main as ensemble_main

    kept = (run_dir / REFIT_PREDICTIONS).read_bytes()
    search_files = {name: (run_dir / name).read_bytes() for name in ("ensemble.json", "prediction.csv")}
    # a refit the data cannot take (13 train+val images per class): refused before anything is written
    assert ensemble_main([str(run_dir), "--refit", "kfold:50"]) == 2
    err = capsys.readouterr().err
    assert err.count("error:") == 1 and "--refit kfold:50 needs at least 50 train+val images in every class" in err
    assert {name: (run_dir / name).read_bytes() for name in search_files} == search_files
    # a rerun with --tta: beside the search's ensemble, which stays as it was
    assert ensemble_main([str(run_dir), "--tta"]) == 0
    assert f"written to {run_dir / 'ensembles' / 'tta'}" in capsys.readouterr().out
    assert {name: (run_dir / name).read_bytes() for name in search_files} == search_files
    assert "refit" not in json.loads((run_dir / "ensembles" / "tta" / "ensemble.json").read_text())
    # the search's own options again: the plain ensemble is rebuilt, the refit's section and predictions kept
    assert ensemble_main([str(run_dir)]) == 0
    assert "Kept the earlier refit (kfold)" in capsys.readouterr().out
    assert json.loads((run_dir / "ensemble.json").read_text())["refit"] == manifest["refit"]
    assert (run_dir / REFIT_PREDICTIONS).read_bytes() == kept


def test_an_interrupted_bagging_refit_resumes_without_retraining_finished_models(run_dir, manifest, capsys):
    options = dict(top_k=2, refit="bag:2", use_ray=True, say=print)
    kfold_predictions = (run_dir / REFIT_PREDICTIONS).read_bytes()
    with pytest.raises(EnsembleError, match=r"finished 2 of 4 models.*Run the same command again") as stopped:
        build_ensemble(run_dir, refit_tune={"callbacks": [InterruptAfter(2)], "max_concurrent": 1}, **options)
    assert f"`python -m ensemble {run_dir} --top-k 2 --refit bag:2`" in str(stopped.value)
    # The plain ensemble's predictions are written before the refit starts; the refit's only when it ends: until
    # then the earlier (kfold:3) refit's stay, in prediction_refit.csv and ensemble.json.
    assert (run_dir / "prediction.csv").is_file()
    assert (run_dir / REFIT_PREDICTIONS).read_bytes() == kfold_predictions
    assert json.loads((run_dir / "ensemble.json").read_text())["refit"]["scheme"] == "kfold"
    experiment = run_dir / "refit-bag2"
    before = trial_records(experiment)
    finished = {name for name, (rows, _) in before.items() if rows == manifest_epochs(manifest, name)}
    assert len(finished) == 2

    resumed = build_ensemble(run_dir, **options)
    assert "Resuming the refit" in capsys.readouterr().out
    after = trial_records(experiment)
    assert len(after) == 4
    for name in finished:
        assert after[name] == before[name]  # not one epoch or checkpoint written again
    refit = resumed["refit"]
    assert (refit["scheme"], refit["bags"]) == ("bag", 2)
    assert refit["selection"]["on"] == "out-of-bag predictions"
    assert all(len(m["models"]) == 2 for m in refit["members"])
    with np.load(refit["oof_file"]) as stored:
        counts, covered = stored["counts"], stored["covered"]
    assert refit["oof_images"] == int(covered.sum()) == int((counts > 0).all(axis=0).sum()) > 0
    assert (counts <= 2).all()

    again = build_ensemble(run_dir, **options)  # a finished refit is reused: nothing trains
    assert trial_records(experiment) == after
    assert again["refit"]["members"] == refit["members"]


def manifest_epochs(manifest, trial_folder: str) -> int:
    source = trial_folder.rsplit("-", 1)[0]
    return next(m["epochs"] for m in manifest["refit"]["members"] if m["trial_id"] == source)


def test_a_refit_planned_differently_is_refused(run_dir, ray_session):
    with pytest.raises(EnsembleError, match="was started with other models"):
        build_ensemble(run_dir, top_k=1, refit="kfold:3", use_ray=True, say=lambda _: None)


# ------------------------------------------------------------------------------- mistakes

@pytest.mark.parametrize("value, message", [
    ("kfold:1", "the number of folds is 1, but must be in [2, 100]"),
    ("kfold", "is not of the form kfold:K or bag:N"),
    ("bags:5", "is not of the form kfold:K or bag:N"),
    ("bag:x", "takes whole numbers"),
    ("kfold:3:1", "is not of the form kfold:K or bag:N"),
])
def test_bad_refit_values_end_in_one_clear_message(tmp_path, value, message):
    proc = subprocess.run([sys.executable, "-m", "ensemble", str(tmp_path), "--refit", value], cwd=ROOT,
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 2
    (line,) = proc.stderr.strip().splitlines()  # one line, no traceback
    assert line.startswith(f"error: --refit {value!r}") and message in line


def test_the_search_refuses_a_bad_refit_before_it_starts(tmp_path, capsys):
    (tmp_path / "space.py").write_text(SPACE)
    code = search_main(["--space", str(tmp_path / "space.py"), "--storage", str(tmp_path / "results"),
                        "--refit", "bag:0", "--dry-run"])
    assert code == 2
    assert "error: --refit 'bag:0': the number of bags is 0, but must be in [1, 100]." in capsys.readouterr().err
    assert not (tmp_path / "results").exists()


# ------------------------------------------------------------------------- folds and bags

def samples(n_per_class=(7, 5, 9)):
    return [(f"/d/train/{c}/{i}.png", c) for c, n in enumerate(n_per_class) for i in range(n)]


def test_kfold_partitions_the_pool_stratified_and_seeded():
    pool = samples()
    vals = [split(pool, parse_subset(f"kfold:3:{k}"), seed=4)[1] for k in range(3)]
    assert sorted(sum(vals, [])) == sorted(pool)
    for k, val in enumerate(vals):
        train = split(pool, parse_subset(f"kfold:3:{k}"), seed=4)[0]
        assert sorted(train + val) == sorted(pool)
        counts = np.bincount([label for _, label in val], minlength=3)
        assert np.abs(counts - np.array([7, 5, 9]) / 3).max() < 1  # every class spread over the folds
    assert vals == [split(pool, parse_subset(f"kfold:3:{k}"), seed=4)[1] for k in range(3)]
    assert vals != [split(pool, parse_subset(f"kfold:3:{k}"), seed=5)[1] for k in range(3)]


def test_a_bag_draws_each_class_with_replacement_and_validates_out_of_bag():
    pool = samples()
    train, val = split(pool, parse_subset("bag:4:2"), seed=0)
    assert len(train) == len(pool)
    assert np.bincount([label for _, label in train]).tolist() == [7, 5, 9]
    assert len(set(train)) < len(train)  # drawn with replacement
    assert set(val) == set(pool) - set(train) and val
    assert split(pool, parse_subset("bag:4:2"), seed=0) == (train, val)
    assert split(pool, parse_subset("bag:4:3"), seed=0) != (train, val)


@pytest.mark.parametrize("value, message", [
    ("kfold:3:3", "fold 3 does not exist; they are numbered 0..2"),
    ("bag:0:0", "the number of bags is 0"),
    ("kfold:5", "is not of the form kfold:K:k or bag:N:b"),
])
def test_the_subset_key_is_validated(value, message):
    with pytest.raises(ConfigError, match=f"Trial config key 'subset': .*{message}"):
        TrialConfig.from_dict({"subset": value})


def test_the_trial_trains_on_its_fold(tmp_path):
    data = make_image_folder(tmp_path / "data", per_class=6, val_per_class=2)
    index = index_dataset(data, warn=lambda _: None)
    fold = apply_subset(index, "kfold:4:1", 0)
    assert len(fold.train) + len(fold.val) == 24 and fold.classes == index.classes
    assert fold.class_counts() == [sum(1 for _, label in fold.train if label == c) for c in range(3)]
    assert apply_subset(index, "", 0) is index


def test_a_refit_model_with_a_config_error_is_failed_not_unfinished_and_says_it_is_not_retried():
    """A refit trial reports a config or data error once (fatal_error, as search trials do); the refit names
    it as failed and says re-running will not retry it."""
    from types import SimpleNamespace

    from ensemble.refit_trials import _finished_checkpoints

    jobs = [{"name": "t-fold0", "config": {"epochs": 2}}, {"name": "t-fold1", "config": {"epochs": 2}}]
    done = SimpleNamespace(config={"job": jobs[0]}, error=None, metrics={"epoch": 2, "training_iteration": 2},
                           checkpoint=SimpleNamespace(path="/exp/t-fold0/checkpoint_000001"))
    fatal = SimpleNamespace(config={"job": jobs[1]}, error=None, checkpoint=None,
                            metrics={"fatal_error": "DataError: gone", "training_iteration": 1})
    assert _finished_checkpoints([done], jobs[:1], "/exp", "") == {"t-fold0": "/exp/t-fold0/checkpoint_000001"}
    with pytest.raises(EnsembleError) as err:
        _finished_checkpoints([done, fatal], jobs, "/exp", "")
    assert "failed: t-fold1 (DataError: gone)" in str(err.value) and "are not retried" in str(err.value)
    with pytest.raises(EnsembleError, match=r"unfinished: t-fold1 \(not started\)"):
        _finished_checkpoints([done], jobs, "/exp", "")
