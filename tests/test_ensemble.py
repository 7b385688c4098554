"""Ensembles: every strategy on hand-made logits with known answers, the parameter budget, and the
whole path (leaderboard → cached logits → ensemble.json → prediction.csv → predict.py) on a fabricated
run of three tiny trials (no Ray search: trained directly with train_trial in a few seconds)."""
import json
import shutil

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics import f1_score

from conftest import make_image_folder
from ensemble import strategies as es
from ensemble.__main__ import main as ensemble_main
from ensemble.build import build_ensemble
from ensemble.candidates import EnsembleError
from ensemble.predict import main as predict_main
from ensemble.report import write_predictions
from worker.scoring import Member
from trainable.checkpoint import MODEL_FILE, load_model_file
from trainable.local_sink import LocalSink
from trainable.trial import train_trial


def logits_from(p_correct, labels, num_classes=2):
    """Member logits [M, N, C] whose softmax gives the true class probability p_correct[m, n] and spreads
    the rest evenly over the other classes."""
    p = np.asarray(p_correct, dtype=float)
    probs = np.repeat(((1 - p) / (num_classes - 1))[..., None], num_classes, axis=-1)
    probs[:, np.arange(len(labels)), labels] = p
    return np.log(probs)


# ----------------------------------------------------------------------------------- combination

def test_logit_and_softmax_average_differ_as_computed_by_hand():
    logits = np.array([[[20.0, 0.0]], [[0.0, 3.0]], [[0.0, 3.0]]])  # one confident member, two mild ones
    weights = np.full(3, 1 / 3)
    assert np.allclose(es.combine("logit_average", logits, weights), [[20 / 3, 2.0]])
    p_mild = np.exp(3) / (1 + np.exp(3))
    assert np.allclose(es.combine("softmax_average", logits, weights), [[(1 + 2 * (1 - p_mild)) / 3, 2 * p_mild / 3]],
                       atol=1e-8)
    # The confident member wins the logit average; the two mild ones win the softmax average.
    assert es.combine("logit_average", logits, weights).argmax() == 0
    assert es.combine("softmax_average", logits, weights).argmax() == 1
    # Caruana's weights apply to the softmax: 2:1 towards the confident member flips it back.
    assert es.combine("caruana", logits, np.array([2, 1, 0]) / 3).argmax() == 0


def test_majority_vote_counts_heads_and_breaks_ties_by_summed_softmax():
    confident_0 = np.log([0.98, 0.01, 0.01])
    mild_1 = np.log([0.35, 0.40, 0.25])
    three = np.array([[confident_0], [mild_1], [mild_1]])
    assert es.combine("majority_vote", three, np.ones(3) / 3).argmax() == 1  # two votes beat one confident vote
    assert es.combine("softmax_average", three, np.ones(3) / 3).argmax() == 0
    # 1 vs 1: class 0 has summed softmax 0.6 + 0.05, class 1 has 0.3 + 0.9.
    tie = np.array([[np.log([0.6, 0.3, 0.1])], [np.log([0.05, 0.9, 0.05])]])
    assert es.combine("majority_vote", tie, np.ones(2) / 2).argmax() == 1
    scores = es.vote_scores(tie)[0]
    assert np.allclose(scores, [1 + 0.65 / 3, 1 + 1.2 / 3, 0 + 0.15 / 3])
    # A member with weight 0 does not vote.
    assert es.combine("majority_vote", three, np.array([1.0, 0.0, 0.0])).argmax() == 0


def test_macro_f1_matches_sklearn_including_absent_classes():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 6, 200)
    pred = np.where(rng.random(200) < 0.6, labels, rng.integers(0, 7, 200)) % 7  # class 6: predicted, never true
    expected = f1_score(labels, pred, labels=np.arange(8), average="macro", zero_division=0)
    assert es.macro_f1(pred, labels, 8) == pytest.approx(expected)


# ---------------------------------------------------------------------------------- fitting

# Four members on 8 two-class images: the probability each gives the true class. Designed so that
#   alone:   A errs on 2 images, B on 3, C on 4, D on 5     (A > B > C > D)
#   pairs:   A+B errs on 0, B+D on 1, every other pair on 2
# With parameters A 60, B 50, C 30, D 30 and a budget of 100, A+B (110) does not fit; among what
# fits (singles and every pair but A+B; no triple), B+D is the best. Truncating the unconstrained
# best (A+B -> A) or filling the budget in the order of individual rank (A, then C) gives 6/8, not 7/8.
BUDGET_P = np.array([
    # 1    2    3    4    5    6    7    8
    [.9, .9, .9, .9, .9, .9, .3, .3],   # A
    [.3, .3, .3, .9, .9, .9, .9, .9],   # B
    [.3, .3, .9, .9, .9, .9, .3, .3],   # C
    [.9, .9, .3, .3, .3, .3, .3, .6],   # D
])
BUDGET_LABELS = np.array([0, 1, 1, 0, 1, 0, 0, 1])
BUDGET_PARAMS = np.array([60, 50, 30, 30])


def budget_problem(budget=100.0, min_gain=0.0):
    return es.Problem(logits_from(BUDGET_P, BUDGET_LABELS), BUDGET_LABELS, BUDGET_PARAMS, budget, "acc", min_gain)


@pytest.mark.parametrize("strategy", es.SUBSET_STRATEGIES)
def test_subset_strategies_find_the_best_ensemble_within_the_budget_not_a_truncation(strategy):
    unconstrained = es.fit(budget_problem(budget=1e9), strategy)
    assert set(np.flatnonzero(unconstrained)) >= {0, 1}  # the best overall needs A and B: over budget
    assert es.score_weights(budget_problem(), strategy, unconstrained)["acc"] == 1.0

    within = es.fit(budget_problem(), strategy)
    assert np.allclose(within, [0, 0.5, 0, 0.5])  # B + D, uniform
    assert BUDGET_PARAMS[within > 0].sum() <= 100
    assert es.score_weights(budget_problem(), strategy, within)["acc"] == 7 / 8
    for truncated in ([1, 0, 0, 0], [0.5, 0, 0.5, 0]):  # A alone; A then C by individual rank
        assert es.score_weights(budget_problem(), strategy, np.array(truncated))["acc"] == 6 / 8


def test_best_single_and_caruana_respect_the_budget():
    assert np.array_equal(es.fit(budget_problem(), "best_single"), [1, 0, 0, 0])
    assert np.array_equal(es.fit(budget_problem(budget=55), "best_single"), [0, 1, 0, 0])  # A (60) is over
    weights = es.fit(budget_problem(), "caruana")
    assert BUDGET_PARAMS[weights > 0].sum() <= 100
    assert not (weights[0] > 0 and weights[1] > 0)  # A and B together would be 110
    with pytest.raises(ValueError, match="No member fits the budget"):
        es.fit(budget_problem(budget=20), "softmax_average")


def test_min_gain_makes_each_extra_member_pay_for_itself():
    # B + D gains 1/8 over A alone: worth it at min_gain 0.1, not at 0.2.
    assert np.allclose(es.fit(budget_problem(min_gain=0.1), "softmax_average"), [0, 0.5, 0, 0.5])
    assert np.allclose(es.fit(budget_problem(min_gain=0.2), "softmax_average"), [1, 0, 0, 0])


def test_caruana_selects_with_replacement_and_weights_by_count():
    # A is right but unsure where B is confidently wrong (Q), B confidently right where A errs (P):
    # A alone errs on P (2), A+B errs on Q (1), A+A+B on nothing.
    p_correct = np.array([
        # P    P    Q   R...
        [.4, .4, .7, .95, .95, .95],   # A
        [.9, .9, .2, .3, .3, .3],      # B
        [.2, .2, .2, .2, .2, .2],      # C: always wrong
    ])
    labels = np.array([0, 1, 0, 1, 0, 1])
    problem = es.Problem(logits_from(p_correct, labels), labels, np.ones(3), budget=10.0, max_rounds=3)
    weights = es.fit(problem, "caruana")
    assert np.allclose(weights, [2 / 3, 1 / 3, 0])  # A, then B, then A again
    assert es.score_weights(problem, "caruana", weights)["acc"] == 1.0
    assert es.score_weights(problem, "softmax_average", np.array([0.5, 0.5, 0]))["acc"] == 5 / 6
    # With B over the budget next to A, Caruana stays with A alone: no addition improves it.
    tight = es.Problem(problem.logits, labels, np.array([1.0, 5.0, 1.0]), budget=5.5, max_rounds=3)
    assert np.allclose(es.fit(tight, "caruana"), [1, 0, 0])


# --------------------------------------------------------------------------------- selection

def test_stratified_folds_spread_every_class_evenly():
    labels = np.repeat(np.arange(10), 3)  # 3 images per class, as in the reports
    folds = es.stratified_folds(labels, 5, seed=1)
    assert np.bincount(folds).tolist() == [6] * 5
    for c in range(10):
        assert len(set(folds[labels == c])) == 3  # a class's 3 images land in 3 different folds


def test_auto_picks_the_ensemble_when_it_helps_out_of_fold():
    # Three members, each confidently wrong on its own third of the images: any single one scores 2/3,
    # any pair 1/3, all three together 1.0.
    n = 30
    labels = np.arange(n) % 2
    p_correct = np.full((3, n), 0.8)
    for m in range(3):
        p_correct[m, m::3] = 0.1
    selection = es.select_ensemble(logits_from(p_correct, labels), labels, [1, 1, 1], budget=10)
    assert selection.strategy == "softmax_average"  # first of the strategies that reach 1.0 out of fold
    assert np.allclose(selection.weights, [1 / 3] * 3)
    report = selection.strategies
    assert report["best_single"]["val"]["acc"] == pytest.approx(2 / 3) and report["best_single"]["cv"]["acc"] < 1
    for name in ("softmax_average", "logit_average", "majority_vote"):
        assert report[name]["cv"]["acc"] == 1.0 and report[name]["members"] == 3
    assert report["caruana"]["members"] == 1  # every first addition makes it worse
    assert [m["acc"] for m in selection.members] == pytest.approx([2 / 3] * 3)
    assert selection.method["cv_folds"] == 5 and "out-of-fold acc" in selection.method["picked_by"]


def test_auto_keeps_a_single_model_when_ensembling_does_not_help():
    n = 40
    labels = np.arange(n) % 4
    rng = np.random.default_rng(0)
    perfect = logits_from(np.full((1, n), 0.9), labels, 4)
    noise = rng.normal(0, 1, size=(3, n, 4))
    selection = es.select_ensemble(np.concatenate([noise[:1], perfect, noise[1:]]), labels, [1] * 4, budget=10)
    assert selection.strategy == "best_single"  # ties go to the simplest strategy
    assert np.array_equal(selection.weights, [0, 1, 0, 0])


def test_cross_validation_exposes_selection_that_fits_noise():
    # Eight members of pure noise (chance: 0.1): the best subset on all of val looks better than chance;
    # its out-of-fold score does not. Averaged over a few seeds, as any one draw is noisy.
    labels = np.repeat(np.arange(10), 3)
    runs = [es.select_ensemble(np.random.default_rng(seed).normal(size=(8, 30, 10)), labels, [1] * 8, budget=100)
            for seed in range(4)]
    for name in es.STRATEGIES:
        in_sample = np.mean([r.strategies[name]["val"]["acc"] for r in runs])
        out_of_fold = np.mean([r.strategies[name]["cv"]["acc"] for r in runs])
        assert out_of_fold < in_sample, name
    assert np.mean([r.strategies["softmax_average"]["val"]["acc"] for r in runs]) >= 0.2
    assert np.mean([r.strategies["softmax_average"]["cv"]["acc"] for r in runs]) <= 0.15


# -------------------------------------------------------------------------------- end to end

CLASSES = ("10", "2", "1")  # numeric folder names: label order "1", "2", "10", not the string order
TINY = {"backbone": "resnet10t", "train_size": 16, "eval_size": 16, "batch_size": 8, "num_workers": 0,
        "epochs": 2, "head_hidden": 16}
TRIALS = {"aaa111": {"lr": 0.01, "seed": 1}, "bbb222": {"lr": 0.003, "seed": 2},
          "ccc333": {"lr": 0.01, "seed": 3, "head": "mlp"}}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Three tiny trials on a learnable toy dataset: {"data": path, trial_id: best checkpoint dir}."""
    root = tmp_path_factory.mktemp("trials")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny convolutions: extra threads only contend on a shared machine
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RESNET_SEARCH_CACHE", str(root / "cache"))
        data = make_image_folder(root / "data", classes=CLASSES, per_class=8, val_per_class=3, size=16, test=6, seed=1,
                                 noise=20.0)
        out = {"data": data}
        for trial_id, params in TRIALS.items():
            train_trial({**TINY, **params, "data": str(data)}, LocalSink(root / trial_id, printer=lambda _: None))
            out[trial_id] = LocalSink(root / trial_id).latest()
        yield out
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def status_and_reason(ended: str) -> tuple[str, str]:
    """'completed', 'stopped by ASHA at epoch k' or 'error: <reason>' as the leaderboard's status and reason."""
    if ended.startswith("error"):
        return "failed", ended.partition(":")[2].strip()
    return ("stopped_early", ended) if ended.startswith("stopped") else ("completed", "")


def write_leaderboard(run_dir, rows):
    run_dir.mkdir(parents=True, exist_ok=True)
    table = pd.DataFrame([{"rank": i + 1, "trial_id": trial_id, "status": status_and_reason(ended)[0],
                           "reason": status_and_reason(ended)[1], "epochs": epochs,
                           "best_val_acc": 0.5, "best_epoch": epochs, "param_count": 4_900_000,
                           "best_checkpoint": str(ckpt)}
                          for i, (trial_id, ended, epochs, ckpt) in enumerate(rows)])
    table.to_csv(run_dir / "leaderboard.csv", index=False)
    return run_dir


def standard_rows(trained):
    return [("aaa111", "completed", 2, trained["aaa111"]),
            ("ddd444", "stopped by ASHA at epoch 1", 1, trained["aaa111"]),  # too few epochs
            ("bbb222", "completed", 2, trained["bbb222"]),
            ("ccc333", "completed", 2, trained["ccc333"]),
            ("eee555", "error: NonFiniteLossError: loss is nan", 2, "")]


def truth(image_name: str) -> str:
    return CLASSES[int(image_name[1:]) % len(CLASSES)]  # make_image_folder: test image i is class i % 3


@pytest.fixture(scope="module")
def built(trained, tmp_path_factory):
    run_dir = write_leaderboard(tmp_path_factory.mktemp("run") / "toy", standard_rows(trained))
    said = []
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RESNET_SEARCH_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))
        manifest = build_ensemble(run_dir, use_ray=False, say=said.append)  # in this process, even if Ray is up
    return run_dir, manifest, "\n".join(said)


def test_ensemble_files_and_scores(built, trained):
    run_dir, manifest, said = built
    assert json.loads((run_dir / "ensemble.json").read_text()) == manifest
    assert manifest["selection"]["candidates"] == ["aaa111", "bbb222", "ccc333"]  # no error, no 1-epoch trial
    assert manifest["selection"]["min_epochs"] == 2
    assert manifest["strategy"] in es.STRATEGIES
    members = manifest["members"]
    assert sum(m["weight"] for m in members) == pytest.approx(1.0)
    assert manifest["param_total"] == sum(m["param_count"] for m in members) <= 100e6
    assert {m["trial_id"] for m in members} <= set(TRIALS)
    assert all(m["checkpoint"] == str(trained[m["trial_id"]]) for m in members)
    assert manifest["classes"] == ["1", "2", "10"]
    # Every candidate alone, scored on the val set rebuilt from its config, matches what the trial reported.
    for alone in manifest["scores"]["members"]:
        reported = load_model_file(trained[alone["trial_id"]])["metrics"]
        assert alone["acc"] == pytest.approx(reported["val_acc"])
        assert alone["macro_f1"] == pytest.approx(reported["val_macro_f1"])
    assert set(manifest["scores"]["strategies"]) == set(es.STRATEGIES)
    assert all({"val", "cv"} <= set(s) for s in manifest["scores"]["strategies"].values())
    assert manifest["val_images"] == 9 and manifest["test_images"] == 6
    assert "Worst classes on val:" in said and "Ensemble: " in said

    per_class = pd.read_csv(run_dir / "per_class.csv", dtype={"class": str})
    assert per_class["class"].tolist() == ["1", "2", "10"]
    assert per_class["support"].tolist() == [3, 3, 3]
    chosen_acc = manifest["scores"]["strategies"][manifest["strategy"]]["val"]["acc"]
    assert (per_class["recall"] * per_class["support"]).sum() / 9 == pytest.approx(chosen_acc)
    assert [w["class"] for w in manifest["worst_classes"]] == per_class.sort_values(
        ["f1", "recall", "class"], kind="stable")["class"].tolist()

    assert (run_dir / "confusion_matrix.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    events = EventAccumulator(str(run_dir / "ensemble")).Reload()
    assert "ensemble/confusion_matrix_val" in events.Tags()["images"]
    assert events.Scalars("ensemble/val_acc")[0].value == pytest.approx(chosen_acc)


def test_prediction_csv_names_files_by_stem_and_classes_by_folder_name(built):
    run_dir, _, _ = built
    lines = (run_dir / "prediction.csv").read_text().splitlines()
    assert lines[0] == "image_name,pred_label"
    table = pd.read_csv(run_dir / "prediction.csv", dtype=str)
    assert table["image_name"].tolist() == [f"t{i:03d}" for i in range(6)]
    # The toy classes are easy: a label-order mix-up ("10" sorted before "2") would show here.
    assert table["pred_label"].tolist() == [truth(name) for name in table["image_name"]]


def test_write_predictions_keeps_class_names_verbatim(tmp_path):
    classes = ["cat", "dog", "2", "10", "007"]
    files = [f"/x/img_{i}.jpg" for i in range(5)]
    write_predictions(tmp_path / "p.csv", files, np.array([4, 3, 2, 1, 0]), classes)
    back = pd.read_csv(tmp_path / "p.csv", dtype=str)
    assert back.to_dict("list") == {"image_name": [f"img_{i}" for i in range(5)],
                                    "pred_label": ["007", "10", "2", "dog", "cat"]}


def test_logits_are_cached_and_reused(built, trained, monkeypatch):
    run_dir, manifest, _ = built
    cached = sorted(p.name for p in (run_dir / "ensemble_cache").iterdir())
    assert cached == [f"{t}-{trained[t].name}-plain-eval.npz" for t in sorted(TRIALS)]

    def no_model(*args, **kwargs):
        raise AssertionError("a cached candidate's model was loaded again")

    monkeypatch.setattr(Member, "load", no_model)
    said = []
    again = build_ensemble(run_dir, say=said.append)
    assert again == manifest
    assert not any(line.startswith("Computing logits") for line in said)


def test_tta_settings_get_their_own_cache_entries(trained, tmp_path):
    run_dir = write_leaderboard(tmp_path / "run", standard_rows(trained)[:1])
    manifest = build_ensemble(run_dir, tta=True, tta_size=24, say=lambda _: None)
    assert manifest["inference"] == {"flip": True, "size": 24}
    assert [p.name for p in (run_dir / "ensemble_cache").iterdir()] == [f"aaa111-{trained['aaa111'].name}-flip-24.npz"]
    with np.load(next((run_dir / "ensemble_cache").iterdir())) as entry:
        assert entry["val_logits"].shape == (9, 3) and entry["test_logits"].shape == (6, 3)


def test_predict_folder_from_the_saved_ensemble(built, tmp_path, capsys):
    run_dir, _, _ = built
    folder = tmp_path / "images"
    shutil.copytree(built_test_dir(built), folder)
    (folder / "notes.txt").write_text("not an image")
    (folder / "nested").mkdir()
    code = predict_main([str(run_dir), str(folder), "--out", str(tmp_path / "out.csv")])
    out = capsys.readouterr().out
    assert code == 0
    assert "Skipped 2 of 8 entries" in out
    predicted = pd.read_csv(tmp_path / "out.csv", dtype=str)
    assert predicted.equals(pd.read_csv(run_dir / "prediction.csv", dtype=str))  # same as at build time


def built_test_dir(built):
    _, manifest, _ = built
    return load_model_file(manifest["members"][0]["checkpoint"])["config"]["data"] + "/test"


def test_budget_limits_the_ensemble(trained, tmp_path):
    run_dir = write_leaderboard(tmp_path / "run", standard_rows(trained))
    manifest = build_ensemble(run_dir, budget_m=6.0, say=lambda _: None)  # one resnet10t is ~4.9M
    assert len(manifest["members"]) == 1 and manifest["param_total"] <= 6e6
    assert all(s["params"] <= 6e6 for s in manifest["scores"]["strategies"].values())


def test_missing_and_corrupt_checkpoints_are_skipped(trained, tmp_path):
    corrupt = tmp_path / "corrupt_ckpt"
    shutil.copytree(trained["aaa111"], corrupt)
    (corrupt / MODEL_FILE).write_bytes(b"not a torch file")
    run_dir = write_leaderboard(tmp_path / "run", [("aaa111", "completed", 2, corrupt),
                                                  ("bbb222", "completed", 2, tmp_path / "gone"),
                                                  ("ccc333", "completed", 2, trained["ccc333"])])
    said = []
    manifest = build_ensemble(run_dir, say=said.append)
    skips = sorted(line for line in said if line.startswith("Skipping trial"))  # bbb222 is found missing first
    assert len(skips) == 2
    assert skips[0].startswith("Skipping trial aaa111") and "cannot be loaded" in skips[0]
    assert skips[1].startswith("Skipping trial bbb222") and "has no model.pt" in skips[1]
    assert [m["trial_id"] for m in manifest["members"]] == ["ccc333"]
    assert [s["trial_id"] for s in manifest["selection"]["skipped"]] == ["aaa111", "bbb222"]


def test_refuses_candidates_validated_on_different_images(trained, tmp_path):
    other_data = make_image_folder(tmp_path / "other", classes=CLASSES, per_class=8, val_per_class=3, size=16)
    moved = tmp_path / "moved_ckpt"
    shutil.copytree(trained["bbb222"], moved)
    saved = load_model_file(moved)
    saved["config"]["data"] = str(other_data)
    torch.save(saved, moved / MODEL_FILE)
    run_dir = write_leaderboard(tmp_path / "run", [("aaa111", "completed", 2, trained["aaa111"]),
                                                  ("bbb222", "completed", 2, moved)])
    with pytest.raises(EnsembleError, match="validated on different images"):
        build_ensemble(run_dir, say=lambda _: None)


def test_empty_test_folder_is_an_error_after_the_ensemble_is_saved(trained, tmp_path, capsys):
    data = tmp_path / "data"
    shutil.copytree(trained["data"], data)
    shutil.rmtree(data / "test")
    (data / "test").mkdir()
    run_dir = write_leaderboard(tmp_path / "run", standard_rows(trained))
    code = ensemble_main([str(run_dir), "--data", str(data)])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("error: ") and "has no images, so there is nothing to predict" in err
    assert (run_dir / "ensemble.json").exists() and not (run_dir / "prediction.csv").exists()


@pytest.mark.parametrize("case, message", [
    ("all_errored", "No finished trials"),
    ("no_leaderboard", "No leaderboard at"),
    ("min_epochs", "No trial ran at least 5 epochs"),
    ("budget", "No candidate fits the 1M parameter budget"),
])
def test_user_mistakes_end_in_one_clear_error(trained, tmp_path, capsys, case, message):
    rows = {"all_errored": [("eee555", "error: CUDA out of memory", 1, "")]}.get(case, standard_rows(trained))
    run_dir = write_leaderboard(tmp_path / "run", rows)
    if case == "no_leaderboard":
        (run_dir / "leaderboard.csv").unlink()
    args = {"min_epochs": ["--min-epochs", "5"], "budget": ["--budget-m", "1"]}.get(case, [])
    assert ensemble_main([str(run_dir), *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and "Traceback" not in err


def test_predict_errors(built, tmp_path, capsys):
    run_dir, _, _ = built
    assert predict_main([str(tmp_path), str(tmp_path)]) == 2
    assert "No ensemble at" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert predict_main([str(run_dir), str(tmp_path / "empty")]) == 2
    assert "has no usable images" in capsys.readouterr().err


# ------------------------------------------------------------------- what later commands leave alone

def with_plan(run_dir, num_samples=5, top_k=5):
    (run_dir / "plan.json").write_text(json.dumps({"results_format": 2, "settings": {"num_samples": num_samples,
                                                                                      "trial": {}},
                                                   "ensemble_top_k": top_k, "data": "x"}))
    return run_dir


def files_of(folder):
    """Every file's bytes, but the run lock's empty file (core/run_lock.py: kept, so that no two commands can
    ever lock two different files of one name)."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name != ".run.lock"}


def test_an_ensemble_with_other_options_is_written_beside_the_searchs_own(trained, tmp_path, capsys):
    run_dir = with_plan(write_leaderboard(tmp_path / "run", standard_rows(trained)), top_k=3)
    assert ensemble_main([str(run_dir)]) == 0  # the search's own options (its --ensemble-top-k 3): RUN itself
    assert "Options other than" not in capsys.readouterr().out
    own = {name: (run_dir / name).read_bytes() for name in ("ensemble.json", "prediction.csv", "per_class.csv",
                                                            "confusion_matrix.png")}
    assert json.loads(own["ensemble.json"])["options"]["top_k"] == 3
    assert ensemble_main([str(run_dir), "--tta", "--top-k", "2"]) == 0
    out = capsys.readouterr().out
    beside = run_dir / "ensembles" / "top_k2-tta"
    assert f"this ensemble is written to {beside}" in out and "are untouched" in out
    assert json.loads((beside / "ensemble.json").read_text())["inference"]["flip"] is True
    assert (beside / "prediction.csv").is_file() and (beside / "per_class.csv").is_file()
    assert {name: (run_dir / name).read_bytes() for name in own} == own
    assert ensemble_main([str(run_dir), "--out", str(tmp_path / "mine")]) == 0  # --out: there, whatever the options
    assert (tmp_path / "mine" / "ensemble.json").is_file() and str(tmp_path / "mine") in capsys.readouterr().out
    assert {name: (run_dir / name).read_bytes() for name in own} == own


def test_an_earlier_refit_section_survives_a_rebuild_of_the_plain_ensemble(trained, tmp_path):
    run_dir = write_leaderboard(tmp_path / "run", standard_rows(trained))
    build_ensemble(run_dir, say=lambda _: None)
    manifest = json.loads((run_dir / "ensemble.json").read_text())
    refit = {"scheme": "kfold", "folds": 3, "members": [], "predictions": str(run_dir / "prediction_refit.csv")}
    (run_dir / "ensemble.json").write_text(json.dumps({**manifest, "refit": refit}))
    (run_dir / "prediction_refit.csv").write_text("image_name,pred_label\nt000,1\n")
    said = []
    again = build_ensemble(run_dir, say=said.append)
    assert again["refit"] == refit == json.loads((run_dir / "ensemble.json").read_text())["refit"]
    assert (run_dir / "prediction_refit.csv").read_text() == "image_name,pred_label\nt000,1\n"
    assert any(line.startswith("Kept the earlier refit (kfold)") for line in said)


def test_an_unfinished_search_is_not_ensembled_without_partial(trained, tmp_path, capsys):
    run_dir = with_plan(write_leaderboard(tmp_path / "run", standard_rows(trained)), num_samples=7)
    before = files_of(run_dir)
    assert ensemble_main([str(run_dir)]) == 2
    err = capsys.readouterr().err
    assert err.count("error:") == 1 and "has 2 of its 7 trial(s) not run or not finished" in err
    assert "python search/run.py --name run --resume" in err and "--partial" in err
    assert files_of(run_dir) == before
    assert ensemble_main([str(run_dir), "--partial"]) == 0
    assert (run_dir / "ensemble.json").is_file()


@pytest.mark.parametrize("argv, message", [
    (["--cpus-per-task", "-1"], "--cpus-per-task is -1, but must be > 0"),
    (["--gpus-per-task", "-0.5"], "--gpus-per-task is -0.5, but must be >= 0"),
    pytest.param(["--refit", "kfold:20"], "--refit kfold:20 needs at least 20 train+val images in every class, "
                 "but class '1' has 11. Use kfold:11 or bag:N. Nothing was written.",
                 marks=pytest.mark.slow),  # --refit starts a local Ray for its trials: ~30 s
    (["EMPTY_LEADERBOARD"], "leaderboard.csv is empty or damaged"),
])
def test_bad_ensemble_commands_end_in_one_message_and_change_nothing(trained, tmp_path, capsys, argv, message):
    run_dir = write_leaderboard(tmp_path / "run", standard_rows(trained))
    if argv == ["EMPTY_LEADERBOARD"]:  # what a full disk left before writes were atomic
        (run_dir / "leaderboard.csv").write_bytes(b"")
        argv = []
    before = files_of(tmp_path)
    assert ensemble_main([str(run_dir), *argv]) == 2
    err = capsys.readouterr().err
    assert err.count("error:") == 1 and message in err and "Traceback" not in err, err
    assert files_of(tmp_path) == {k: v for k, v in files_of(tmp_path).items() if k.startswith("run/ensemble_cache")
                                  } | before  # scored logits may be cached; nothing else is written


def test_the_driver_side_imports_no_torch():
    """The search driver imports the ensemble's driver side on a CPU head node: selection, strategies,
    manifest, report and the task runner must not pull in torch (only the scoring tasks do)."""
    import subprocess
    import sys

    code = ("import sys; import ensemble.build, ensemble.__main__, ensemble.tasks; "
            "print(sorted(m for m in ('torch', 'timm', 'torchvision') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


# ------------------------------------------------------------------------- one eval pipeline

@pytest.fixture(scope="module")
def trained_cache(trained, tmp_path_factory):
    """A fourth tiny trial on the same data and val split, with loader=cache: its checkpoint dir."""
    root = tmp_path_factory.mktemp("cache_trial")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RESNET_SEARCH_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))
        train_trial({**TINY, "lr": 0.01, "seed": 1, "loader": "cache", "data": str(trained["data"])},
                    LocalSink(root / "fff666", printer=lambda _: None))
    return LocalSink(root / "fff666").latest()


def test_member_scores_equal_their_trials_reported_val_metrics_for_both_loaders(trained, trained_cache, tmp_path):
    """A member is scored through its own config's eval pipeline (pil, or the decoded cache finished on the
    device), so ensemble.json's val accuracy is its trial's val_acc at that checkpoint, and its logits give
    the trial's val_loss to float precision."""
    run_dir = write_leaderboard(tmp_path / "run", [("aaa111", "completed", 2, trained["aaa111"]),
                                                  ("fff666", "completed", 2, trained_cache)])
    manifest = build_ensemble(run_dir, say=lambda _: None)
    assert load_model_file(trained_cache)["config"]["loader"] == "cache"
    for alone in manifest["scores"]["members"]:
        checkpoint = trained["aaa111"] if alone["trial_id"] == "aaa111" else trained_cache
        reported = load_model_file(checkpoint)["metrics"]
        assert alone["acc"] == pytest.approx(reported["val_acc"], abs=1e-6)
        assert alone["macro_f1"] == pytest.approx(reported["val_macro_f1"], abs=1e-6)
        with np.load(run_dir / "ensemble_cache" / f"{alone['trial_id']}-{checkpoint.name}-plain-eval.npz") as entry:
            logits = torch.from_numpy(entry["val_logits"])
        labels = torch.tensor([label for _, label in manifest_val_samples(trained)])
        val_loss = torch.nn.functional.cross_entropy(logits, labels).item()
        assert val_loss == pytest.approx(reported["val_loss"], abs=1e-5)


def test_the_cache_member_scored_through_the_pil_pipeline_would_differ(trained, trained_cache):
    """What the test above guards against: the PIL eval transform gives the cache member other logits."""
    import dataclasses

    from ensemble.candidates import Inference
    from core.storage import Location

    member = Member.load(Location(str(trained_cache)))
    samples = manifest_val_samples(trained)
    own = member.logits(samples, Inference())
    member.cfg = dataclasses.replace(member.cfg, loader="pil")
    assert np.abs(member.logits(samples, Inference()) - own).max() > 1e-3


def test_tta_works_with_the_cache_loader(trained_cache, tmp_path):
    run_dir = write_leaderboard(tmp_path / "run", [("fff666", "completed", 2, trained_cache)])
    manifest = build_ensemble(run_dir, tta=True, tta_size=24, say=lambda _: None)
    assert manifest["inference"] == {"flip": True, "size": 24}
    with np.load(run_dir / "ensemble_cache" / f"fff666-{trained_cache.name}-flip-24.npz") as entry:
        assert entry["val_logits"].shape == (9, 3) and entry["test_logits"].shape == (6, 3)
        assert np.isfinite(entry["val_logits"]).all()


def manifest_val_samples(trained):
    from worker.scoring import dataset_lists

    return [tuple(s) for s in dataset_lists(load_model_file(trained["aaa111"])["config"])["val_samples"]]


# ---------------------------------------------------------------------------------- Ray tasks

def test_members_are_scored_as_ray_tasks_with_the_same_logits_as_in_process(built, trained, tmp_path, ray_session):
    """With Ray up, each candidate is scored by a Ray task (another process, a Ray node) with the trials'
    resources; the driver only gathers the logits, and they equal in-process scoring's."""
    import os

    import ray

    from ensemble.tasks import Resources

    run_dir = write_leaderboard(tmp_path / "run", standard_rows(trained))
    said = []
    manifest = build_ensemble(run_dir, resources=Resources(num_cpus=1), use_ray=True, say=said.append)
    in_process_dir, in_process, _ = built
    node_id = ray.get_runtime_context().get_node_id()
    for member in manifest["scores"]["members"]:
        where = member["scored_on"]
        assert where["node_id"] == node_id and where["pid"] != os.getpid() and where["device"] == "cpu"
        name = f"{member['trial_id']}-{trained[member['trial_id']].name}-plain-eval.npz"
        with np.load(run_dir / "ensemble_cache" / name) as remote, np.load(in_process_dir / "ensemble_cache" / name) as local:
            assert np.array_equal(remote["val_logits"], local["val_logits"])
            assert np.array_equal(remote["test_logits"], local["test_logits"])
    in_process_members = [{k: v for k, v in m.items() if k != "scored_on"} for m in in_process["scores"]["members"]]
    assert [{k: v for k, v in m.items() if k != "scored_on"} for m in manifest["scores"]["members"]] == in_process_members
    assert manifest["members"] == in_process["members"]
    assert sum(line.startswith("Computing logits") for line in said) == 3


def test_in_process_scoring_runs_in_this_process(built):
    import os

    _, manifest, _ = built
    assert all(m["scored_on"]["pid"] == os.getpid() for m in manifest["scores"]["members"])


def test_a_users_mistake_inside_a_task_is_one_clear_error(trained, tmp_path, ray_session, capsys):
    """--data pointing at nothing: the indexing fails inside the Ray task, and still ends in one message."""
    from ensemble.tasks import Resources

    run_dir = write_leaderboard(tmp_path / "run", standard_rows(trained)[:1])
    with pytest.raises(EnsembleError) as err:
        build_ensemble(run_dir, data=str(tmp_path / "nowhere"), resources=Resources(num_cpus=1), use_ray=True,
                       say=lambda _: None)
    assert "nowhere" in str(err.value) and "Traceback" not in str(err.value)


def test_the_cli_with_address_scores_as_ray_tasks(trained, tmp_path, ray_session):
    import os

    run_dir = write_leaderboard(tmp_path / "run", standard_rows(trained)[:1])
    assert ensemble_main([str(run_dir), "--address", "auto", "--cpus-per-task", "1"]) == 0  # joins the running Ray
    manifest = json.loads((run_dir / "ensemble.json").read_text())
    assert [m["trial_id"] for m in manifest["members"]] == ["aaa111"]
    assert manifest["scores"]["members"][0]["scored_on"]["pid"] != os.getpid()
