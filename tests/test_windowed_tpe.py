"""WindowedTPESampler: plain TPE up to the window; beyond it, TPE's good group intact and a bounded, stable rest."""
import pickle

import warnings

import optuna
import pytest
from optuna.trial import TrialState

from search.windowed_tpe import WindowedTPESampler

optuna.logging.set_verbosity(optuna.logging.ERROR)
warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)


def objective_study(n: int, sampler=None, seed: int = 0) -> optuna.Study:
    """n finished trials: every third pruned at a step that depends on it, the rest complete."""
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=seed))
    for i in range(n):
        t = study.ask()
        x = t.suggest_float("x", -3, 3)
        if t.suggest_categorical("branch", ["a", "b"]) == "a":
            t.suggest_int("k", 1, 4)  # conditional: sampled independently
        value = -(x - 1) ** 2
        if i % 3 == 0:
            t.report(value - 1, 1 + i % 5)
            study.tell(t, state=TrialState.PRUNED)
        else:
            study.tell(t, value)
    if sampler is not None:
        study.sampler = sampler
    return study


def suggest(study, k=5):
    out = []
    for _ in range(k):
        t = study.ask()
        out.append((t.suggest_float("x", -3, 3), t.suggest_categorical("branch", ["a", "b"])))
        study.tell(t, state=TrialState.FAIL)
    return out


@pytest.mark.parametrize("options", [{}, {"multivariate": True, "group": True, "constant_liar": True}])
def test_up_to_the_window_it_is_exactly_tpe(options):
    # With group=True the conditional groups are found incrementally: the same groups, the same suggestions.
    windowed = objective_study(80, WindowedTPESampler(seed=3, n_startup_trials=5, history_window=100, keep_best=20,
                                                      **options))
    plain = objective_study(80, optuna.samplers.TPESampler(seed=3, n_startup_trials=5, **options))
    assert suggest(windowed, 8) == suggest(plain, 8)


def test_beyond_the_window_tpe_sees_the_best_and_a_bounded_stable_sample():
    sampler = WindowedTPESampler(seed=3, n_startup_trials=5, history_window=60, keep_best=20)
    study = objective_study(300, sampler)
    view = sampler._windowed(study)
    shown = view._get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))
    assert len(shown) == 60
    complete = sorted((t for t in study.trials if t.state == TrialState.COMPLETE), key=lambda t: -t.value)
    assert {t.number for t in complete[:20]} <= {t.number for t in shown}  # TPE's good group is within these
    before = {t.number for t in shown}
    t = study.ask(); t.suggest_float("x", -3, 3); t.suggest_categorical("branch", ["a", "b"])
    study.tell(t, -100.0)  # a bad new trial may take a sampled place, but never displaces the best
    after = {t.number for t in sampler._windowed(study)._get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))}
    assert len(after) == 60 and len(before - after) <= 1


def test_suggestions_run_and_improve_beyond_the_window():
    sampler = WindowedTPESampler(seed=1, n_startup_trials=10, history_window=60, keep_best=20)
    study = objective_study(200, sampler)
    xs = [x for x, _ in suggest(study, 20)]
    assert sum(abs(x - 1) < 1 for x in xs) >= 14  # concentrated near the optimum x = 1 (random: 1/3)


def test_pickles_without_its_window_and_rebuilds_it():
    sampler = WindowedTPESampler(seed=3, n_startup_trials=5, history_window=60, keep_best=20)
    study = objective_study(120, sampler)
    suggest(study, 1)
    clone = pickle.loads(pickle.dumps(sampler))
    assert clone._window == set() and clone.history_window == 60
    study.sampler = clone
    assert len(suggest(study, 2)) == 2 and len(clone._window) == 60


def test_a_window_not_above_keep_best_is_refused():
    with pytest.raises(ValueError, match="history_window"):
        WindowedTPESampler(history_window=50, keep_best=50)


def test_constant_liar_sees_only_the_newest_running_trials_beyond_the_window():
    sampler = WindowedTPESampler(seed=3, n_startup_trials=5, history_window=60, keep_best=20, keep_running=5,
                                 constant_liar=True)
    study = objective_study(100, sampler)
    running = [study.ask() for _ in range(12)]  # 12 trials in flight
    shown = sampler._windowed(study)._get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED,
                                                                         TrialState.RUNNING))
    in_flight = sorted(t.number for t in shown if t.state == TrialState.RUNNING)
    assert in_flight == [t.number for t in running[-5:]]
    assert len(shown) == 60 + 5


@pytest.mark.parametrize("counts_warm_starts", [True, False])
def test_warm_starts_count_towards_startup_only_when_asked(counts_warm_starts, tmp_path):
    """Five enqueued recipes, the best at x = 0.1, and 3 start-up trials: counted (Optuna's behaviour), TPE models
    from its first own trial and goes next to the best recipe; not counted (the default: Optuna's n_startup_trials
    is then 3 + 5, through its public argument), its first 3 own trials are the random sampler's."""
    from search.sampler import make_tpe_sampler, startup_trials
    from search.space_file import load_space

    space_file = tmp_path / "space.py"
    space_file.write_text(
        "SETTINGS = {'tpe_startup_trials': 3, 'tpe_group': False, "
        f"'tpe_startup_counts_warm_starts': {counts_warm_starts}, 'seed': 0}}\n"
        "def define(trial):\n    trial.suggest_float('x', 0.0, 100.0)\n"
        "WARM_STARTS = [{'x': x} for x in (0.1, 30.0, 50.0, 70.0, 90.0)]\n")
    space = load_space(space_file)
    assert startup_trials(space) == (3 if counts_warm_starts else 8)

    study = optuna.create_study(direction="maximize", sampler=make_tpe_sampler(space))
    for point in space.warm_starts:
        study.enqueue_trial(point)
    study.optimize(lambda trial: -abs(trial.suggest_float("x", 0.0, 100.0) - 0.1), n_trials=8)
    draws = [t.params["x"] for t in study.trials[5:]]
    random = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    random.optimize(lambda t: t.suggest_float("x", 0.0, 100.0), n_trials=3)
    if counts_warm_starts:
        assert sum(x < 10.0 for x in draws) >= 2, draws  # anchored at the best recipe
    else:
        assert draws == [t.params["x"] for t in random.trials], draws  # TPE's random sampler, seeded alike
