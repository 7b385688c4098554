"""Benchmark space on tiny100: resnet10t from scratch at 32 px, the full space's non-backbone levers."""

SETTINGS = {
    "metric": "val_acc", "mode": "max", "num_samples": 1000,  # the epoch budget ends each search
    "max_epochs": 4, "grace_period": 1, "reduction_factor": 2,
    "cpus_per_trial": 1, "gpus_per_trial": 0, "max_concurrent": 2,
    "train_size": 32, "eval_size": 32, "seed": 0, "data": "../shared/datasets/tiny100",
    "max_failures": 0,
    "tpe_startup_trials": 4,  # a search here has ~6-15 trials: with Optuna's default 10, TPE would never model
    "trial": {"backbone": "resnet10t", "batch_size": 128, "num_workers": 0, "scale_min": 0.35},
}


def define(trial):
    trial.suggest_float("lr", 1e-4, 1e-1, log=True)
    trial.suggest_float("weight_decay", 1e-5, 1e-1, log=True)
    trial.suggest_int("warmup_epochs", 0, 2)
    trial.suggest_categorical("augment", ["none", "trivialaugment", "randaugment"])
    if trial.suggest_categorical("mixup_prob", [0.0, 0.5, 1.0]) > 0:
        trial.suggest_float("mixup_alpha", 0.1, 1.0)
    trial.suggest_float("drop_rate", 0.0, 0.3)
    if trial.suggest_categorical("head", ["linear", "mlp"]) == "mlp":
        trial.suggest_categorical("head_hidden", [128, 256])
    trial.suggest_float("label_smoothing", 0.0, 0.2)
    trial.suggest_categorical("class_weighting", ["none", "sqrt_inverse"])
