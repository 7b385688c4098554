"""Train/eval transforms and mixup, all from timm (TrivialAugment from torchvision: timm has none).

Mean/std and interpolation come from the backbone's pretrained config, so a pretrained model sees
inputs normalised the way it was trained.
"""
from __future__ import annotations

import timm.data
from torchvision import transforms as T

from core.config import TrialConfig

# timm auto_augment strings for the policies timm implements. Not "inc1": its increasing posterize
# reaches 0 bits at high magnitude, which Pillow >= 13 rejects (ValueError mid-epoch).
_TIMM_POLICIES = {"randaugment": "rand-m9-n2-mstd0.5", "autoaugment": "original"}


def data_config_for(backbone) -> dict:
    """mean, std, interpolation of the model's pretrained config."""
    return timm.data.resolve_model_data_config(backbone)


def train_transform(cfg: TrialConfig, data_config: dict):
    primary, secondary, final = _timm_train_parts(cfg, data_config)
    if cfg.augment == "trivialaugment":
        secondary = T.Compose([T.TrivialAugmentWide()])
    return T.Compose([primary, secondary, final])


def augment_policy(cfg: TrialConfig, data_config: dict):
    """The PIL augment policy alone (None for 'none'): the same object train_transform applies."""
    if cfg.augment == "none":
        return None
    if cfg.augment == "trivialaugment":
        return T.TrivialAugmentWide()
    return _timm_train_parts(cfg, data_config)[1]


def _timm_train_parts(cfg: TrialConfig, data_config: dict):
    return timm.data.create_transform(
        cfg.train_size,
        is_training=True,
        scale=(cfg.scale_min, 1.0),
        hflip=cfg.hflip,
        vflip=cfg.vflip,
        color_jitter=0.0,  # the reports' policies carry their own colour ops
        auto_augment=_TIMM_POLICIES.get(cfg.augment),
        interpolation=data_config["interpolation"],
        mean=data_config["mean"],
        std=data_config["std"],
        re_prob=cfg.random_erasing,
        re_mode="pixel",
        separate=True,
    )


def eval_transform(cfg: TrialConfig, data_config: dict, size: int | None = None):
    return timm.data.create_transform(
        size or cfg.eval_size,
        is_training=False,
        crop_pct=cfg.crop_pct,
        interpolation=data_config["interpolation"],
        mean=data_config["mean"],
        std=data_config["std"],
    )


def mixup_for(cfg: TrialConfig, num_classes: int) -> timm.data.Mixup | None:
    if not cfg.mixup_active:
        return None
    return timm.data.Mixup(
        mixup_alpha=cfg.mixup_alpha,
        cutmix_alpha=cfg.cutmix_alpha,
        prob=cfg.mixup_prob,
        switch_prob=cfg.mixup_switch_prob,
        label_smoothing=cfg.label_smoothing,
        num_classes=num_classes,
    )
