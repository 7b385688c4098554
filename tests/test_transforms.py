import random

import numpy as np
import pytest
import torch
from PIL import Image

from core.config import TrialConfig
from trainable.transforms import eval_transform, mixup_for, train_transform

DATA_CONFIG = {"mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225), "interpolation": "bilinear"}


@pytest.mark.parametrize("policy", ["none", "trivialaugment", "randaugment", "autoaugment"])
def test_every_policy_survives_many_draws(policy):
    """Policies sample ops and magnitudes at random: run enough draws to hit the extremes."""
    cfg = TrialConfig(augment=policy, train_size=16, random_erasing=0.5, vflip=0.5)
    transform = train_transform(cfg, DATA_CONFIG)
    rng = np.random.default_rng(0)
    torch.manual_seed(0)
    random.seed(0)  # timm's policies draw from python's random
    for _ in range(3000):  # enough that rare ops meet extreme magnitudes (a 0-bit posterize broke trials)
        image = Image.fromarray(rng.integers(0, 255, (10, 14, 3), dtype=np.uint8))
        out = transform(image)
        assert out.shape == (3, 16, 16) and out.dtype == torch.float32


def test_train_and_eval_sizes_are_separate():
    cfg = TrialConfig(train_size=32, eval_size=48, crop_pct=1.0)
    image = Image.new("RGB", (100, 80), "red")
    assert train_transform(cfg, DATA_CONFIG)(image).shape == (3, 32, 32)
    out = eval_transform(cfg, DATA_CONFIG)(image)
    assert out.shape == (3, 48, 48)
    # normalised with the model's mean/std: pure red -> (1-mean)/std in channel 0
    assert torch.allclose(out[0], torch.full((48, 48), (1 - 0.485) / 0.229), atol=1e-3)


def test_mixup_off_by_default_and_soft_targets_when_on():
    assert mixup_for(TrialConfig(), 10) is None
    mix = mixup_for(TrialConfig(mixup_alpha=0.4, label_smoothing=0.1), 10)
    images, labels = torch.randn(4, 3, 8, 8), torch.tensor([0, 1, 2, 3])
    _, targets = mix(images, labels)
    assert targets.shape == (4, 10)
    assert torch.allclose(targets.sum(1), torch.ones(4))
