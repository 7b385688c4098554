"""timm backbone + our head, stage freezing, and the parameter budget.

The classifier is always our own `head` module (the timm model is built with num_classes=0), so the
head/backbone learning-rate split and the MLP head (report 004) work the same for every backbone.
"""
from __future__ import annotations

import os

import timm
import torch
from torch import nn

from core.budget import ModelError, check_budget
from core.config import TrialConfig
from core.errors import close_matches

# timm modules whose models are ResNet-family (resnet*, resnext*, seresnext*, seresnextaa*, *d, resnest*, ...).
RESNET_FAMILY_MODULES = ("resnet", "resnest", "resnetv2", "res2net", "sknet")


def resnet_family_names() -> list[str]:
    return timm.list_models(module=RESNET_FAMILY_MODULES)


def check_backbone(name: str) -> None:
    """Fail with close matches unless `name` (optionally with a '.pretrained_tag') is a ResNet-family model."""
    arch = name.split(".", 1)[0]
    known = resnet_family_names()
    if arch not in known:
        hint = close_matches(arch, known)
        if timm.is_model(arch):
            raise ModelError(f"Backbone {name!r} is a timm model but not a ResNet-family one; the task allows ResNet variants only.{hint}")
        raise ModelError(f"Unknown backbone {name!r}.{hint} List them with `python -m trainable --list-backbones`.")


class Classifier(nn.Module):
    def __init__(self, backbone: nn.Module, head: nn.Module):
        super().__init__()
        self.backbone = backbone
        self.head = head

    def forward(self, x):
        return self.head(self.backbone(x))


def build_head(in_features: int, num_classes: int, cfg: TrialConfig) -> nn.Module:
    if cfg.head == "mlp":
        return nn.Sequential(
            nn.Linear(in_features, cfg.head_hidden),
            nn.BatchNorm1d(cfg.head_hidden),
            nn.SiLU(),
            nn.Dropout(cfg.drop_rate),
            nn.Linear(cfg.head_hidden, num_classes),
        )
    return nn.Sequential(nn.Dropout(cfg.drop_rate), nn.Linear(in_features, num_classes))


def build_model(cfg: TrialConfig, num_classes: int) -> Classifier:
    """Build, load pretrained weights, freeze, and enforce the parameter budget — before any training."""
    check_backbone(cfg.backbone)
    model = create_classifier(cfg, num_classes, pretrained=cfg.pretrained or bool(cfg.weights_file))
    check_budget(cfg, count_parameters(model))
    if cfg.frozen_stages:
        freeze_stages(model.backbone, cfg.frozen_stages)
    return model


def create_classifier(cfg: TrialConfig, num_classes: int, pretrained: bool) -> Classifier:
    """The backbone (with timm's pretrained weights, or a weights_file through the same mechanism) and our head."""
    kwargs = {}
    if cfg.weights_file and not os.path.isfile(cfg.weights_file):
        # timm would only log "No checkpoint found" and raise an empty error.
        what = "is a folder" if os.path.isdir(cfg.weights_file) else "does not exist"
        raise ModelError(f"Could not load pretrained weights for {cfg.backbone!r} from {cfg.weights_file}: weights_file "
                         f"{what}. Give the path of a .pth/.safetensors file, or leave weights_file empty.")
    if cfg.weights_file:
        # timm's own pretrained mechanism, pointed at a local file: same key filtering and checks as the hub path.
        kwargs["pretrained_cfg_overlay"] = {"file": cfg.weights_file}
    try:
        backbone = timm.create_model(
            cfg.backbone, pretrained=pretrained, num_classes=0, drop_path_rate=cfg.drop_path_rate or None, **kwargs
        )
    except (FileNotFoundError, RuntimeError, OSError) as err:
        if pretrained:
            where = cfg.weights_file or "the Hugging Face hub"
            raise ModelError(
                f"Could not load pretrained weights for {cfg.backbone!r} from {where}: {err}. "
                "Set weights_file to a local .pth/.safetensors file, or pretrained=false to train from scratch."
            ) from err
        raise
    return Classifier(backbone, build_head(backbone.num_features, num_classes, cfg))


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def count_parameters_for(cfg: TrialConfig, num_classes: int) -> int:
    """Parameter count without allocating weights (meta device): cheap enough to check a whole space."""
    check_backbone(cfg.backbone)
    with torch.device("meta"):
        return count_parameters(create_classifier(cfg, num_classes, pretrained=False))


def freeze_stages(backbone: nn.Module, n: int) -> None:
    """Freeze the stem and the first `n` residual stages; their BatchNorms become FrozenBatchNorm2d."""
    names = [name for name, _ in backbone.named_children()]
    if "layer1" not in names:
        raise ModelError(f"frozen_stages needs a backbone with layer1..layer4 stages; {type(backbone).__name__} has {names}.")
    stem = names[: names.index("layer1")]
    timm.utils.freeze(backbone, stem + [f"layer{i}" for i in range(1, n + 1)])


def uses_channels_last(cfg: TrialConfig) -> bool:
    # ResNeSt's split-attention is slower in channels_last (issue 6 measures this).
    return cfg.channels_last and not cfg.backbone.startswith("resnest")
