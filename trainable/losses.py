"""Training loss: soft-target cross-entropy with class weights and an optional focal term.

One function covers every combination the reports used: hard labels are turned into
(label-smoothed) soft targets, and mixup/cutmix already produce soft targets, so there is one path.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

WEIGHTINGS = ("none", "inverse", "sqrt_inverse", "effective_number")


def class_weights(counts: Sequence[int], scheme: str, beta: float = 0.999) -> torch.Tensor | None:
    """Per-class weights from train counts, normalised so the average weight per *sample* is 1.

    effective_number follows Cui et al. 2019: w_c = (1 - beta) / (1 - beta^n_c).
    """
    if scheme == "none":
        return None
    n = torch.tensor(counts, dtype=torch.float64)
    if (n <= 0).any():
        raise ValueError(f"class counts must be positive, got {list(counts)}")
    if scheme == "inverse":
        w = 1.0 / n
    elif scheme == "sqrt_inverse":
        w = 1.0 / n.sqrt()
    elif scheme == "effective_number":
        w = (1.0 - beta) / (1.0 - beta**n)
    else:
        raise ValueError(f"class weighting {scheme!r} is not one of {WEIGHTINGS}")
    w = w * n.sum() / (w * n).sum()  # keeps the loss on the same scale as unweighted CE
    return w.float()


def smooth_one_hot(labels: torch.Tensor, num_classes: int, smoothing: float) -> torch.Tensor:
    off = smoothing / num_classes
    return torch.full((labels.numel(), num_classes), off, device=labels.device).scatter_(
        1, labels.view(-1, 1), 1.0 - smoothing + off
    )


def soft_target_loss(
    logits: torch.Tensor,
    targets: torch.Tensor,
    weight: torch.Tensor | None = None,
    focal_gamma: float = 0.0,
) -> torch.Tensor:
    """mean_i  -sum_c w_c * t_ic * (1 - p_ic)^gamma * log p_ic   (gamma=0, w=1: plain cross-entropy)."""
    log_p = F.log_softmax(logits.float(), dim=1)
    per_class = -targets * log_p
    if focal_gamma:
        per_class = per_class * (1.0 - log_p.exp()).pow(focal_gamma)
    if weight is not None:
        per_class = per_class * weight
    return per_class.sum(dim=1).mean()
