"""The mission's space: ResNet-family fine-tuning for 100-class, class-imbalanced image classification.

Dimensions are the levers the five seed reports (../shared/seeds/) tuned by hand. Conditional
dimensions only exist on their branch (mixup alphas with mixup on, MLP width with the MLP head, beta
with effective-number weighting), so TPE never wastes samples on inert parameters.

Run:  python search/run.py --space spaces/full.py --data /path/to/DATA --gpus-per-trial 1
"""

BACKBONES = [  # all under the 100M budget with a 100-class head (params in millions)
    "resnet50",               # 23.7
    "resnet101",              # 42.7
    "resnet152d",             # 58.4
    "resnext50_32x4d",        # 23.2
    "resnext101_32x8d",       # 86.9
    "resnext101_64x4d",       # 81.6  (reports 001, 002)
    "seresnext50_32x4d",      # 25.7  (report 000)
    "seresnext101_32x8d",     # 91.7
    "seresnextaa101d_32x8d",  # 91.7  (report 003, best private score 96.3%)
    "resnest50d",             # 25.6  (report 000)
    "resnest101e",            # 46.4  (report 000)
    "seresnet152d",           # 65.0
]

SETTINGS = {
    "metric": "val_acc",
    "mode": "max",
    "num_samples": 64,
    "max_epochs": 30,
    "grace_period": 3,
    "reduction_factor": 3,
    "cpus_per_trial": 8,     # data loading workers
    "gpus_per_trial": 1,
    "max_concurrent": 0,     # as many as the cluster holds; an autoscaler grows it up to num_samples
    # Ray Tune and Optuna as shipped. For hundreds of GPUs add "driver_profile": "large" (docs/scale.md).
    "train_size": 224,
    "eval_size": 224,        # searched below too: report 003 inferred at 320
    "seed": 0,
    "data": "data/hw1",      # DATA/train/<class>, DATA/val/<class>, DATA/test; override with --data
    "trial": {
        "pretrained": True,
        "batch_size": 64,
        "num_workers": 7,
        # Decode the dataset once per node into a shared uint8 memory map (docs/decoded-cache.md).
        # One short side for every trial, so they all share one cache: eval_size 320 / crop_pct 0.875.
        "loader": "cache",
        "cache_short_side": 365,
        # A full checkpoint (model + optimizer state: 0.3-1.5 GB here) every 3rd epoch and the last, not at
        # every new best: 3x fewer bytes to storage and 3x fewer of Tune's forced experiment snapshots, for
        # a best kept checkpoint at most 2 epochs from the best epoch (BENCHMARKS.md section 10).
        "checkpoint_new_bests": False,
        "resume_state_every": 3,     # divides grace_period, so every ASHA rung (3, 9, 27) has a checkpoint
        "optimizer": "adamw",
        "min_lr": 1e-6,
        "hflip": 0.5,
    },
}


def define(trial):
    trial.suggest_categorical("backbone", BACKBONES)
    trial.suggest_float("lr", 1e-5, 2e-3, log=True)
    trial.suggest_float("head_lr_mult", 1.0, 30.0, log=True)
    trial.suggest_float("weight_decay", 1e-5, 1e-1, log=True)
    trial.suggest_int("warmup_epochs", 0, 5)
    trial.suggest_categorical("scheduler", ["cosine", "plateau"])
    # augmentation
    trial.suggest_categorical("augment", ["none", "trivialaugment", "randaugment", "autoaugment"])
    trial.suggest_float("random_erasing", 0.0, 0.4)
    trial.suggest_categorical("vflip", [0.0, 0.2, 0.5])
    if trial.suggest_categorical("mixup_prob", [0.0, 0.5, 1.0]) > 0:
        trial.suggest_float("mixup_alpha", 0.1, 1.5)
        trial.suggest_categorical("cutmix_alpha", [0.0, 1.0])
    # regularisation and head
    trial.suggest_float("drop_rate", 0.0, 0.5)
    trial.suggest_float("drop_path_rate", 0.0, 0.2)
    trial.suggest_int("frozen_stages", 0, 2)
    if trial.suggest_categorical("head", ["linear", "mlp"]) == "mlp":
        trial.suggest_categorical("head_hidden", [256, 512, 1024])
    # loss
    trial.suggest_float("label_smoothing", 0.0, 0.2)
    if trial.suggest_categorical("class_weighting", ["none", "inverse", "sqrt_inverse", "effective_number"]) == "effective_number":
        trial.suggest_float("class_weight_beta", 0.9, 0.9999, log=True)
    trial.suggest_categorical("focal_gamma", [0.0, 1.0, 2.0])
    trial.suggest_categorical("eval_size", [224, 288, 320])


def _recipe(**overrides):
    """A report's recipe: the space's neutral values, then what the report set."""
    neutral = {
        "warmup_epochs": 0, "scheduler": "cosine", "augment": "none", "random_erasing": 0.0, "vflip": 0.0,
        "mixup_prob": 0.0, "drop_rate": 0.0, "drop_path_rate": 0.0, "frozen_stages": 0, "head": "linear",
        "label_smoothing": 0.0, "class_weighting": "none", "focal_gamma": 0.0, "eval_size": 224,
        "head_lr_mult": 1.0, "weight_decay": 1e-2,
    }
    return {**neutral, **overrides}


# The seed reports' final recipes, evaluated first (Ray 2.60 enqueues them even for define-by-run).
WARM_STARTS = [
    # 000: ResNeSt-101, AdamW fc 1e-3 / backbone 1e-4, wd 1e-3, cosine, TrivialAugment, h+v flips,
    #      random erasing 0.2, label smoothing 0.1 (ensembled with ResNeSt-50 and SE-ResNeXt-50).
    _recipe(backbone="resnest101e", lr=1e-4, head_lr_mult=10.0, weight_decay=1e-3, augment="trivialaugment",
            random_erasing=0.2, vflip=0.5, label_smoothing=0.1),
    # 001: ResNeXt-101 64x4d, AdamW 1e-4, cosine (warm restarts), MixUp or CutMix.
    _recipe(backbone="resnext101_64x4d", lr=1e-4, mixup_prob=1.0, mixup_alpha=0.2, cutmix_alpha=1.0),
    # 002: ResNeXt-101 64x4d, Adam 8e-5 (no weight decay), AutoAugment, first stage frozen.
    _recipe(backbone="resnext101_64x4d", lr=8e-5, weight_decay=1e-5, augment="autoaugment", frozen_stages=1),
    # 003: SEResNeXtAA-101d 32x8d, 5e-5 with linear warm-up, wd 1e-3, plateau decay, class-weighted CE,
    #      dropout 0.5, mixup p=0.5 alpha=1.3, trained at 224 and inferred at 320 (96.3% private).
    _recipe(backbone="seresnextaa101d_32x8d", lr=5e-5, weight_decay=1e-3, warmup_epochs=5, scheduler="plateau",
            class_weighting="inverse", drop_rate=0.5, mixup_prob=0.5, mixup_alpha=1.3, cutmix_alpha=0.0,
            eval_size=320),
    # 004: ResNet-50 + MLP head (512, BN, SiLU, dropout 0.5), RandAugment, random erasing 0.3, vflip 0.2,
    #      label smoothing 0.1, AdamW 5e-4 wd 5e-4, plateau, mixup alpha 0.2.
    _recipe(backbone="resnet50", lr=5e-4, weight_decay=5e-4, head="mlp", head_hidden=512, drop_rate=0.5,
            augment="randaugment", random_erasing=0.3, vflip=0.2, label_smoothing=0.1, scheduler="plateau",
            mixup_prob=1.0, mixup_alpha=0.2, cutmix_alpha=0.0),
]
