"""spaces/full.py on a CPU-sized transfer task: its define() and its five WARM_STARTS (the seed reports'
recipes), with the backbone fixed to a small ResNet pretrained on tiny100's other half and 32 px images
(by default; search_vs_recipes.py's --backbone and --size change both).

benchmarks/experiments/search_vs_recipes.py sets `weights_file` (the pretrained backbone) and the data; nothing else
differs from the mission's space: same ranges, same conditional branches, same recipes.
"""
import os

from spaces import full

# benchmarks/experiments/search_vs_recipes.py --backbone/--size set these (a GPU runs the same comparison at scale)
BACKBONE, SIZE = os.environ.get("SVR_BACKBONE", "resnet10t"), int(os.environ.get("SVR_SIZE", "32"))
FIXED = {"backbone": [BACKBONE], "eval_size": [SIZE]}  # one-choice categoricals: the recipes' values are replaced

SETTINGS = {
    "metric": "val_acc", "mode": "max", "num_samples": 1000,  # the epoch budget ends each search
    "max_epochs": 3, "grace_period": 1, "reduction_factor": 2,
    "cpus_per_trial": 1, "gpus_per_trial": 0, "max_concurrent": 1,
    "train_size": SIZE, "eval_size": SIZE, "seed": 0, "data": "../shared/datasets/tiny100",
    "max_failures": 0, "keep_checkpoints": 1,
    "tpe_startup_trials": 4,  # a search here has ~10 trials: with Optuna's default 10, TPE would never model
    "trial": {**full.SETTINGS["trial"], "loader": "pil", "num_workers": 0, "cache_short_side": 0,
              "pretrained": True},
}


class _FixedChoices:
    """Passes suggest_* through to the real trial, narrowing the backbone and eval_size choices."""

    def __init__(self, trial):
        self._trial = trial

    def suggest_categorical(self, name, choices):
        return self._trial.suggest_categorical(name, FIXED.get(name, choices))

    def __getattr__(self, name):
        return getattr(self._trial, name)


def define(trial):
    return full.define(_FixedChoices(trial))


WARM_STARTS = [{**recipe, "backbone": BACKBONE, "eval_size": SIZE} for recipe in full.WARM_STARTS]
