import math

import pytest
import torch
import torch.nn.functional as F

from trainable.losses import class_weights, smooth_one_hot, soft_target_loss


def test_plain_ce_and_label_smoothing_match_torch():
    torch.manual_seed(0)
    logits, labels = torch.randn(8, 5), torch.randint(0, 5, (8,))
    for ls in (0.0, 0.1):
        ours = soft_target_loss(logits, smooth_one_hot(labels, 5, ls))
        assert torch.allclose(ours, F.cross_entropy(logits, labels, label_smoothing=ls), atol=1e-6)


def test_soft_targets_match_torch_soft_ce_with_weights():
    torch.manual_seed(0)
    logits, targets = torch.randn(6, 4), torch.softmax(torch.randn(6, 4), 1)
    w = torch.tensor([1.0, 2.0, 0.5, 1.5])
    assert torch.allclose(soft_target_loss(logits, targets, w), F.cross_entropy(logits, targets, weight=w), atol=1e-6)


def test_focal_matches_formula_and_downweights_easy_examples():
    logits = torch.tensor([[4.0, 0.0], [0.2, 0.0]])
    labels = torch.tensor([0, 0])
    t = smooth_one_hot(labels, 2, 0.0)
    p = torch.softmax(logits, 1)[:, 0]
    expected = (-(1 - p) ** 2 * p.log()).mean()
    assert torch.allclose(soft_target_loss(logits, t, focal_gamma=2.0), expected, atol=1e-6)
    assert soft_target_loss(logits, t, focal_gamma=2.0) < soft_target_loss(logits, t)


@pytest.mark.parametrize("scheme", ["inverse", "sqrt_inverse", "effective_number"])
def test_class_weights_favour_rare_classes_and_keep_scale(scheme):
    counts = [100, 10, 1]
    w = class_weights(counts, scheme, beta=0.99)
    assert w[0] < w[1] < w[2]
    # average weight per sample is 1, so the loss stays on the CE scale
    assert math.isclose(float((w * torch.tensor(counts, dtype=torch.float)).sum()), sum(counts), rel_tol=1e-5)


def test_class_weight_values():
    w = class_weights([1, 3], "inverse")
    assert torch.allclose(w, torch.tensor([2.0, 2 / 3]))  # 1/n scaled so 1*w0 + 3*w1 = 4
    assert class_weights([5, 5], "none") is None
    # effective number with beta -> 0 is uniform
    assert torch.allclose(class_weights([1, 50], "effective_number", beta=1e-9), torch.ones(2), atol=1e-6)
