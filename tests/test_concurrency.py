"""How many trials run and wait at once: resolved from the space, the cluster or its autoscaler config, and
actually reaching Tune's controller (which otherwise keeps a single trial pending)."""
from pathlib import Path

import pytest
from ray import tune

from core.files import STUDY_FILE
from search.concurrency import autoscaler_capacity, resolve_concurrency
from search.space_file import SearchSettings, Space
from search.tuner import tune_config

ROOT = Path(__file__).resolve().parents[1]


def settings(**kw) -> SearchSettings:
    return SearchSettings(**{"num_samples": 64, "cpus_per_trial": 8, "gpus_per_trial": 1, **kw})


def node(cpus, gpus=0, alive=True) -> dict:
    return {"Alive": alive, "Resources": {"CPU": cpus, **({"GPU": gpus} if gpus else {})}}


def test_the_space_setting_wins_but_never_exceeds_num_samples(tmp_path):
    assert resolve_concurrency(settings(max_concurrent=6), nodes=[], bootstrap=tmp_path / "none").trials == 6
    assert resolve_concurrency(settings(max_concurrent=100), nodes=[], bootstrap=tmp_path / "none").trials == 64


def test_a_fixed_cluster_runs_what_its_live_nodes_hold(tmp_path):
    nodes = [node(0), node(8, 1), node(48, 4), node(48, 4, alive=False), node(4, 2)]  # 4 CPUs < 8 per trial
    c = resolve_concurrency(settings(), nodes=nodes, bootstrap=tmp_path / "none")
    assert c.trials == 5
    half = resolve_concurrency(settings(gpus_per_trial=0.5, cpus_per_trial=2), nodes=nodes, bootstrap=tmp_path / "none")
    assert half.trials == 2 + 8 + 2


def test_an_autoscaling_cluster_counts_every_node_type_at_max_workers(tmp_path):
    import yaml

    config = yaml.safe_load((ROOT / "cluster.yaml").read_text())
    # cluster.yaml: CPU-only head; 4 x (8 CPU, 1 GPU) + 2 x (48 CPU, 4 GPU); spot type off.
    assert autoscaler_capacity(config, 8, 1) == 4 * 1 + 2 * 4
    bootstrap = tmp_path / "ray_bootstrap_config.yaml"
    bootstrap.write_text((ROOT / "cluster.yaml").read_text())
    c = resolve_concurrency(settings(), nodes=[node(0)], bootstrap=bootstrap)  # only the head is up yet
    assert c.trials == 12 and "full size" in c.reason
    capped = {**config, "max_workers": 3}  # the global cap: the biggest nodes first
    assert autoscaler_capacity(capped, 8, 1) == 2 * 4 + 1


@pytest.mark.parametrize("text", ["available_node_types: [unclosed", "- just\n- a list\n", "available_node_types: 3\n",
                                  "\u00ff\u00fe not yaml: : :"])
def test_a_broken_bootstrap_config_falls_back_to_the_live_nodes_and_says_so(tmp_path, text):
    bootstrap = tmp_path / "ray_bootstrap_config.yaml"
    bootstrap.write_text(text, encoding="latin-1")
    nodes = [node(0), node(8, 1), node(16, 2)]
    c = resolve_concurrency(settings(), nodes=nodes, bootstrap=bootstrap)
    assert c.trials == 3 and str(bootstrap) in c.reason and "--max-concurrent" in c.reason


def test_no_node_that_fits_a_trial_is_one_at_a_time_with_advice(tmp_path):
    c = resolve_concurrency(settings(), nodes=[node(0)], bootstrap=tmp_path / "none")
    assert c.trials == 1 and "--max-concurrent" in c.reason


def define_x(trial):
    trial.suggest_float("x", 0, 1)


def _max_pending(max_concurrent, tmp_path) -> int:
    def quick(config):  # nested, so Ray pickles it by value (workers cannot import tests/)
        import time
        time.sleep(1.0)
        tune.report({"val_acc": config["x"]})

    class PendingCounter(tune.Callback):
        most = 0

        def on_step_begin(self, iteration, trials, **info):
            pending = sum(t.status == "PENDING" for t in trials)
            PendingCounter.most = max(PendingCounter.most, pending)

    space = Space(Path("inline"), define_x,
                  SearchSettings(num_samples=6, max_epochs=1, cpus_per_trial=0.5), ())
    config = tune_config(space, max_concurrent=max_concurrent)
    tune.Tuner(tune.with_resources(quick, {"cpu": 0.5}), tune_config=config,
               run_config=tune.RunConfig(storage_path=str(tmp_path), name=f"pending-{max_concurrent}",
                                         callbacks=[PendingCounter()], verbose=0)).fit()
    return PendingCounter.most


def test_the_concurrency_reaches_tunes_controller_as_pending_trials(ray_session, tmp_path):
    # Tune's default for a custom searcher is one pending trial; ours fills every slot at once.
    assert _max_pending(None, tmp_path) == 1
    assert _max_pending(4, tmp_path) == 4


def test_the_full_space_runs_tune_and_optuna_as_shipped(tmp_path):
    """spaces/full.py as it ships: the standard profile, a report every epoch, plain TPE, no suggestion pool."""
    import optuna

    from search.space_file import load_space

    space = load_space(Path(__file__).parent.parent / "spaces" / "full.py")
    config = tune_config(space, max_concurrent=8, study_path=tmp_path / STUDY_FILE)
    assert space.settings.driver_profile == "standard" and config.max_concurrent_trials == 8
    assert config.reuse_actors is False and space.trial_config({})["report_epochs"] == "every"
    assert config.search_alg._pool_spec is None and type(config.search_alg.study.sampler) is optuna.samplers.TPESampler


def test_the_large_profile_turns_on_the_scale_machinery(tmp_path):
    """driver_profile "large": reused actors, reports at ASHA's rungs (3, 9, 27) and checkpoints, background
    reports, checkpoints after decisions, windowed TPE in a suggestion pool of two helpers over the study file."""
    from search.space_file import load_space
    from search.windowed_tpe import WindowedTPESampler

    text = (Path(__file__).parent.parent / "spaces" / "full.py").read_text()
    large = tmp_path / "large.py"
    large.write_text(text.replace('"max_concurrent": 0,', '"max_concurrent": 0, "driver_profile": "large",'))
    space = load_space(large)
    config = tune_config(space, max_concurrent=8, study_path=tmp_path / STUDY_FILE)
    assert config.reuse_actors is True and space.trial_config({})["report_epochs"] == "3,9,27"
    trial = space.trial_config({})
    assert trial["report_in_background"] is True and trial["checkpoint_after_decision"] is True
    spec = config.search_alg._pool_spec
    assert (spec.size, spec.workers, spec.study_path) == (16, 2, str(tmp_path / STUDY_FILE))
    assert isinstance(config.search_alg.study.sampler, WindowedTPESampler)
    assert config.search_alg.study.sampler.history_window == 500
