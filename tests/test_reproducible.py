"""A seeded search repeats itself: the same space, data and seed, one trial at a time, give the same sampled
configs, the same per-epoch metrics and the same ASHA decisions (README, "What is repeatable")."""
import json
import textwrap

import optuna
import pandas as pd
import pytest

from search.run import main as run_main
from search.study import load_study

pytestmark = pytest.mark.slow

SPACE = textwrap.dedent("""
    SETTINGS = {"metric": "val_acc", "mode": "max", "num_samples": 4, "max_epochs": 2, "grace_period": 1,
                "reduction_factor": 2, "cpus_per_trial": 1, "max_concurrent": 1, "train_size": 16, "eval_size": 16,
                "reuse_actors": True,  # one worker process trains the trials in turn: the same, seconds faster
                "seed": 7, "tpe_startup_trials": 2, "data": "builtin:digits",
                "trial": {"pretrained": False, "batch_size": 64, "num_workers": 0}}

    def define(trial):
        trial.suggest_categorical("backbone", ["resnet10t", "resnet14t"])
        trial.suggest_float("lr", 1e-3, 3e-2, log=True)
        if trial.suggest_categorical("mixup_prob", [0.0, 1.0]) > 0:
            trial.suggest_float("mixup_alpha", 0.1, 1.0)
        trial.suggest_categorical("augment", ["none", "randaugment"])

    WARM_STARTS = [{"backbone": "resnet10t", "lr": 1e-2, "mixup_prob": 0.0, "augment": "none"}]
""")


def run_search(tmp_path, name: str) -> tuple[list, pd.DataFrame]:
    space = tmp_path / "space.py"
    space.write_text(SPACE)
    code = run_main(["--space", str(space), "--storage", str(tmp_path / "results"), "--name", name,
                     "--ensemble-top-k", "0"])
    assert code == 0
    run_dir = tmp_path / "results" / name
    trials = [(t.number, t.params, t.state.name, dict(t.intermediate_values))
              for t in load_study(run_dir).get_trials(deepcopy=False)]
    board = pd.read_csv(run_dir / "leaderboard.csv", dtype={"trial_id": str})
    return trials, board


def test_the_same_seed_gives_the_same_trials_and_metrics(tmp_path, ray_session):
    first, first_board = run_search(tmp_path, "first")
    second, second_board = run_search(tmp_path, "second")
    assert len(first) == 4 and {state for _, _, state, _ in first} <= {"COMPLETE", "PRUNED"}
    assert any(state == "PRUNED" for _, _, state, _ in first)  # ASHA decided something
    assert len({json.dumps(params, sort_keys=True) for _, params, _, _ in first}) == 4  # TPE sampled new points
    assert first == second  # parameters, how each ended, every epoch's val_acc: exactly
    columns = ["backbone", "lr", "status", "epochs", "best_val_acc", "best_epoch"]
    key = lambda board: board[columns].sort_values(["lr"]).reset_index(drop=True)
    pd.testing.assert_frame_equal(key(first_board), key(second_board))


def test_another_seed_gives_other_trials(tmp_path):
    """The comparison above is not vacuous: the sampler's seed decides the suggestions."""
    from search.sampler import make_tpe_sampler
    from search.space_file import load_space

    space = tmp_path / "space.py"
    space.write_text(SPACE)
    loaded = load_space(space)

    def suggestions(seed):
        study = optuna.create_study(sampler=make_tpe_sampler(loaded, seed=seed), direction="maximize")
        out = []
        for _ in range(4):
            trial = study.ask()
            loaded.define(trial)
            out.append(trial.params)
            study.tell(trial, trial.params["lr"])
        return out

    assert suggestions(1) == suggestions(1) and suggestions(1) != suggestions(2)
