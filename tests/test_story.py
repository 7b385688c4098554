"""The summary's TPE and ensemble lines (search/story.py) from a fake study, leaderboard and ensemble.json."""
import json

import optuna
import pandas as pd

from search.searcher import SAMPLED_BY
from search.story import ensemble_line, tpe_line


def test_the_tpe_line_counts_what_sampled_each_trial():
    study = optuna.create_study()
    for kind in ["warm_start", "random", "random", "tpe", "tpe", "tpe"]:
        trial = study.ask()
        trial.set_user_attr(SAMPLED_BY, kind)
        study.tell(trial, 0.5)
    assert tpe_line(study, startup_trials=3) == ("TPE: 1 warm start, 2 random startup trials, 3 sampled from its "
                                                 "model of the trials finished before them.")
    mostly_random = optuna.create_study()
    for kind in ["warm_start", "random", "random", "tpe"]:
        trial = mostly_random.ask()
        trial.set_user_attr(SAMPLED_BY, kind)
        mostly_random.tell(trial, 0.5)
    assert "lower tpe_startup_trials" in tpe_line(mostly_random, startup_trials=3)
    assert tpe_line(optuna.create_study(), startup_trials=3) is None


def board():
    return pd.DataFrame({"rank": [1, 2, 3, 4], "trial_id": ["a", "b", "c", "d"],
                         "status": ["completed", "stopped_early", "completed", "failed"], "epochs": [4, 2, 4, 1]})


def manifest(tmp_path, strategy, single, combined):
    strategies = {"best_single": {"cv": {"acc": single}}, "softmax_average": {"cv": {"acc": combined}}}
    members = [{"trial_id": "a"}] if strategy == "best_single" else [{"trial_id": "a"}, {"trial_id": "c"}]
    (tmp_path / "ensemble.json").write_text(json.dumps({
        "strategy": strategy, "members": members, "scores": {"strategies": strategies},
        "selection": {"top_k": 4, "min_epochs": 4, "candidates": ["a", "c"], "skipped": []}}))


def test_the_ensemble_line_compares_with_its_best_member_and_names_who_was_left_out(tmp_path):
    manifest(tmp_path, "softmax_average", 0.90, 0.92)
    line = ensemble_line(tmp_path, board())
    assert line.startswith("Ensemble: softmax_average of 2 members (a, c), cv_acc 0.9200 vs 0.9000 for the best "
                           "member alone (+2.00 points).")
    assert "Left out of the top 4: b (stopped by ASHA at epoch 2; candidates need 4 (--min-epochs)); d (failed)" in line


def test_the_ensemble_line_says_why_the_best_member_alone_was_kept(tmp_path):
    manifest(tmp_path, "best_single", 0.90, 0.88)
    line = ensemble_line(tmp_path, board())
    assert "Ensemble: best_single of 1 member (a), cv_acc 0.9000: no combination beat the best member" in line
    assert "softmax_average, scored 0.8800" in line
    assert ensemble_line(tmp_path / "nowhere", board()) is None
