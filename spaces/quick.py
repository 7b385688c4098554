"""spaces/full.py's dimensions scaled down to a CPU demo on builtin:digits (~5 minutes on 2 cores).

Tiny backbones at 32 px from scratch, few epochs, and a search that shows each part at work: TPE models 10 of the
16 trials (after one warm start and 5 random ones; the summary counts them), ASHA halves the field at epochs 1
and 2 (reduction_factor 2), and the trials that run all 3 epochs are the ensemble's candidates.

Why 3 epochs and not 4: at 4 the best trial reached val_acc 0.978, the next ones 0.970 and below, and no
combination beat it in cross-validation on val, so the demo's "ensemble" was its best member alone. At 3 the
members are weaker (0.92-0.95) and their average beats the best of them by 1.9 points in cross-validation
(BENCHMARKS.md section 11): the demo shows what an ensemble does, not the best digits model.

What fills the run folder is checkpoints: resnet10t's weights are 20 MB, and every trial keeps one (an ensemble
member, what a resume continues; keep_checkpoints 1, the default keeps 2). Once the ensemble is written only the
weights of each trial's best stay (their optimizer state, twice as large, goes: search/cleanup.py), about 350 MB.

Run:  python search/run.py --space spaces/quick.py        (what `make demo` runs)
"""

SETTINGS = {
    "metric": "val_acc",
    "mode": "max",
    "num_samples": 16,
    "max_epochs": 3,
    "grace_period": 1,
    "reduction_factor": 2,
    "tpe_startup_trials": 4,
    "keep_checkpoints": 1,
    "cpus_per_trial": 1,
    "gpus_per_trial": 0,
    "max_concurrent": 2,
    "train_size": 32,
    "eval_size": 32,
    "seed": 0,
    "data": "builtin:digits",
    "trial": {"pretrained": False, "batch_size": 64, "num_workers": 0, "scale_min": 0.5},
}


def define(trial):
    trial.suggest_categorical("backbone", ["resnet10t", "resnet14t"])
    trial.suggest_float("lr", 1e-3, 3e-2, log=True)
    trial.suggest_float("head_lr_mult", 1.0, 10.0, log=True)
    trial.suggest_float("weight_decay", 1e-5, 1e-1, log=True)
    trial.suggest_int("warmup_epochs", 0, 1)
    trial.suggest_categorical("augment", ["none", "trivialaugment", "randaugment", "autoaugment"])
    trial.suggest_float("random_erasing", 0.0, 0.3)
    if trial.suggest_categorical("mixup_prob", [0.0, 0.5, 1.0]) > 0:
        trial.suggest_float("mixup_alpha", 0.1, 1.0)
        trial.suggest_categorical("cutmix_alpha", [0.0, 1.0])
    trial.suggest_float("drop_rate", 0.0, 0.3)
    trial.suggest_float("drop_path_rate", 0.0, 0.1)
    trial.suggest_int("frozen_stages", 0, 1)
    if trial.suggest_categorical("head", ["linear", "mlp"]) == "mlp":
        trial.suggest_categorical("head_hidden", [64, 128])
    trial.suggest_float("label_smoothing", 0.0, 0.2)
    if trial.suggest_categorical("class_weighting", ["none", "inverse", "effective_number"]) == "effective_number":
        trial.suggest_float("class_weight_beta", 0.9, 0.999, log=True)
    trial.suggest_categorical("focal_gamma", [0.0, 2.0])


# A known-good point for digits, evaluated first.
WARM_STARTS = [
    {"backbone": "resnet10t", "lr": 1e-2, "head_lr_mult": 1.0, "weight_decay": 1e-4, "warmup_epochs": 1,
     "augment": "none", "random_erasing": 0.0, "mixup_prob": 0.0, "drop_rate": 0.0, "drop_path_rate": 0.0,
     "frozen_stages": 0, "head": "linear", "label_smoothing": 0.1, "class_weighting": "none", "focal_gamma": 0.0},
]
