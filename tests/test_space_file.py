"""Space files: the contract every spaces/*.py must meet, and one clear error per kind of breakage."""
from pathlib import Path

import optuna
import pytest

from search.space_file import SpaceError, check_space, load_space, sample_params
from core.config import TrialConfig

SPACES = sorted((Path(__file__).resolve().parents[1] / "spaces").glob("[!_]*.py"))

GOOD = '''
SETTINGS = {"num_samples": 4, "max_epochs": 2, "train_size": 32, "eval_size": 32}
def define(trial):
    trial.suggest_categorical("backbone", ["resnet10t", "resnet18"])
    trial.suggest_float("lr", 1e-3, 1e-1, log=True)
    if trial.suggest_categorical("head", ["linear", "mlp"]) == "mlp":
        trial.suggest_categorical("head_hidden", [32, 64])
WARM_STARTS = [{"backbone": "resnet10t", "lr": 0.01, "head": "mlp", "head_hidden": 32}]
'''


def write(tmp_path, text, name="space.py"):
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.mark.slow  # the plan counts every backbone's parameters in a child process (torch, timm): 13-22 s a space
@pytest.mark.parametrize("path", SPACES, ids=lambda p: p.name)
def test_contract_every_space_file_samples_valid_trial_configs(path):
    space = load_space(path)
    configs = check_space(space, num_classes=100, samples=32)
    assert len(configs) == 32
    for config in configs:
        cfg = TrialConfig.from_dict(config)
        assert cfg.epochs == space.settings.max_epochs
    # a seeded study reproduces the same samples
    assert check_space(space, num_classes=100, samples=8) == configs[:8]
    for point in space.warm_starts:  # warm starts convert too
        TrialConfig.from_dict(space.trial_config(point))


def test_full_space_covers_the_mission():
    space = load_space(SPACES[[p.name for p in SPACES].index("full.py")])
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    names, backbones = set(), set()
    for _ in range(200):
        trial = study.ask()
        params = sample_params(space, trial)
        names |= set(params)
        backbones.add(params["backbone"])
        study.tell(trial, 0.0)
    required = {"backbone", "lr", "head_lr_mult", "weight_decay", "mixup_alpha", "cutmix_alpha", "mixup_prob",
                "drop_rate", "drop_path_rate", "warmup_epochs", "label_smoothing", "class_weighting", "focal_gamma",
                "augment", "random_erasing", "frozen_stages", "head", "head_hidden", "class_weight_beta"}
    assert required <= names
    assert {"resnet50", "resnet101", "resnet152d", "resnext50_32x4d", "resnext101_32x8d", "resnext101_64x4d",
            "seresnext50_32x4d", "seresnext101_32x8d", "seresnextaa101d_32x8d", "resnest50d", "resnest101e",
            "seresnet152d"} <= backbones
    assert len(space.warm_starts) == 5  # the five seed reports


def test_conditional_parameters_only_on_their_branch(tmp_path):
    space = load_space(write(tmp_path, GOOD))
    linear = sample_params(space, optuna.trial.FixedTrial({"backbone": "resnet18", "lr": 0.01, "head": "linear"}))
    assert "head_hidden" not in linear


@pytest.mark.parametrize(
    "text, message",
    [
        ("def define(trial):\n    trial.suggest_float('lr', 1e-3, 1e-1\n", r"space\.py:\d+: syntax error"),
        ("SETTINGS = {}\n", r"no define\(trial\) function"),
        ("def define(trial):\n    trial.suggest_categorical('backbone', ['resnet18', 'resnet5O'])\n",
         r"parameter 'backbone' = 'resnet5O': Unknown backbone 'resnet5O'.*Did you mean: resnet50"),
        ("def define(trial):\n    trial.suggest_float('lr', 1e-1, 1e-3)\n",
         r"space\.py:2: define\(trial\) raised ValueError"),
        ("def define(trial):\n    trial.suggest_float('learning_rate', 1e-3, 1e-1)\n",
         r"Unknown trial config key 'learning_rate'"),
        ("def define(trial):\n    trial.suggest_float('lr', 1e-3, 20.0)\n",
         r"parameter 'lr' = 20.0: Trial config key 'lr' has value 20.0, but must be float in \(0.0, 10.0\]"),
        ("def define(trial):\n    trial.suggest_categorical('backbone', ['resnet18', 'seresnext101_32x8d'])\n"
         "SETTINGS = {'trial': {'param_budget_m': 50}}\n",
         r"'seresnext101_32x8d'.*91\.\d\dM parameters, over the budget of 50M"),
        ("def define(trial):\n    trial.suggest_int('epochs', 1, 3)\n", r"sets \['epochs'\], which the search owns"),
        ("SETTINGS = {'num_sample': 3}\ndef define(trial):\n    pass\n",
         r"SETTINGS: Unknown search setting key 'num_sample'.*num_samples"),
        ("SETTINGS = {'grace_period': 5, 'max_epochs': 2}\ndef define(trial):\n    pass\n",
         r"grace_period is 5, but must be <= max_epochs \(2\)"),
        ("import not_a_module\ndef define(trial):\n    pass\n", r"space\.py:1: loading raised ModuleNotFoundError"),
        (GOOD + "WARM_STARTS = [{'backbone': 'resnet10t', 'lr': 0.01, 'head': 'mlp'}]\n",
         r"WARM_STARTS\[0\] does not fit define\(\).*head_hidden"),
        (GOOD + "WARM_STARTS = [{'backbone': 'resnet10t', 'lr': 0.01, 'head': 'linear', 'head_hidden': 32}]\n",
         r"WARM_STARTS\[0\] sets \['head_hidden'\], which define\(\) never suggests"),
        (GOOD + "WARM_STARTS = [{'backbone': 'resnet10t', 'lr': 5.0, 'head': 'linear'}]\n",
         r"WARM_STARTS\[0\] lies outside the space"),
        ("SETTINGS = {'grace_period': 2, 'max_epochs': 8, 'trial': {'checkpoint_new_bests': False}}\n"
         "def define(trial):\n    trial.suggest_categorical('resume_state_every', [1, 2, 3])\n",
         r"parameter 'resume_state_every' = 3: checkpoint_new_bests is False and resume_state_every is 3, "
         r"but ASHA may stop trials at epoch 2 \(its rungs: 2, 6\)"),
    ],
    ids=["syntax", "no-define", "unknown-backbone", "empty-range", "unknown-param", "out-of-range",
         "over-budget", "reserved", "bad-setting", "grace>max", "import-error", "warm-missing", "warm-extra",
         "warm-outside", "no-checkpoint-at-rung"],
)
def test_broken_space_file_one_clear_message(tmp_path, text, message):
    path = write(tmp_path, text)
    with pytest.raises(SpaceError, match=message) as err:
        check_space(load_space(path), num_classes=10, samples=16)
    assert str(path) in str(err.value)


def test_missing_space_file(tmp_path):
    with pytest.raises(SpaceError, match=r"Space file .*nope\.py does not exist"):
        load_space(tmp_path / "nope.py")
