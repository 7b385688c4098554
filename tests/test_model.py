import pytest
import timm
import torch

from core.config import TrialConfig
from trainable.model import ModelError, build_model, check_backbone, count_parameters_for

SEED_REPORT_BACKBONES = {  # parameter counts the seed reports printed, with a 100-class head
    "resnext101_64x4d": 81_611_172,   # report 002
    "resnest101e": 46_430_916,        # report 000: 46.43M
    "seresnext50_32x4d": 25_715_796,  # report 000: 25.72M
    "resnest50d": 25_639_140,         # report 000: 25.64M
}


@pytest.mark.parametrize("name, expected", SEED_REPORT_BACKBONES.items())
def test_parameter_counts_match_reports(name, expected):
    assert count_parameters_for(TrialConfig(backbone=name), 100) == expected


@pytest.mark.parametrize("name", ["resnet50", "resnext50_32x4d", "seresnextaa101d_32x8d", "resnest50d", "resnet50d",
                                  "seresnet152d", "resnet50.a1_in1k"])
def test_resnet_family_accepted(name):
    check_backbone(name)


def test_unknown_backbone_suggests_close_matches():
    with pytest.raises(ModelError, match=r"Unknown backbone 'resnet5O'.*Did you mean: resnet50"):
        check_backbone("resnet5O")


def test_non_resnet_refused():
    with pytest.raises(ModelError, match="not a ResNet-family"):
        check_backbone("vit_tiny_patch16_224")


def test_over_budget_refused_with_count_before_training():
    with pytest.raises(ModelError, match=r"seresnext101_32x8d with a linear head has 91\.7\dM parameters, over the budget of 50M"):
        build_model(TrialConfig(backbone="seresnext101_32x8d", param_budget_m=50), 100)


def test_mlp_head_shape_and_dropout_before_classifier():
    model = build_model(TrialConfig(backbone="resnet10t", head="mlp", head_hidden=32, drop_rate=0.3), 7)
    head = model.head
    assert [type(m).__name__ for m in head] == ["Linear", "BatchNorm1d", "SiLU", "Dropout", "Linear"]
    assert head[3].p == 0.3 and head[-1].out_features == 7
    model.eval()
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 7)


def test_linear_head_has_dropout_before_classifier():
    model = build_model(TrialConfig(backbone="resnet10t", drop_rate=0.5), 3)
    assert [type(m).__name__ for m in model.head] == ["Dropout", "Linear"] and model.head[0].p == 0.5


def test_freeze_first_stage_freezes_stem_and_layer1_only():
    model = build_model(TrialConfig(backbone="resnet18", frozen_stages=1), 5)
    trainable = {n.split(".")[1] for n, p in model.backbone.named_parameters(prefix="b") if p.requires_grad}
    frozen = {n.split(".")[1] for n, p in model.backbone.named_parameters(prefix="b") if not p.requires_grad}
    assert frozen == {"conv1", "layer1"}  # stem BN and layer1 BNs became FrozenBatchNorm2d (no parameters)
    assert trainable == {"layer2", "layer3", "layer4"}
    assert type(model.backbone.bn1).__name__ == "FrozenBatchNorm2d"


def test_local_weights_file_loads_through_timm_and_reinitialises_classifier(tmp_path):
    source = timm.create_model("resnet10t", num_classes=1000)
    torch.nn.init.constant_(source.layer4[0].conv1.weight, 0.123)
    weights = tmp_path / "resnet10t_in1k.pth"
    torch.save(source.state_dict(), weights)
    model = build_model(TrialConfig(backbone="resnet10t", weights_file=str(weights)), 4)
    assert torch.all(model.backbone.layer4[0].conv1.weight == 0.123)
    assert model.head[-1].out_features == 4


def test_missing_weights_file_is_a_clear_error(tmp_path):
    with pytest.raises(ModelError, match=r"Could not load pretrained weights for 'resnet10t' from .*nope\.pth"):
        build_model(TrialConfig(backbone="resnet10t", weights_file=str(tmp_path / "nope.pth")), 4)
