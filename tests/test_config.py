import pytest

from core.config import ConfigError, TrialConfig, describe_fields


def test_defaults_round_trip():
    cfg = TrialConfig.from_dict({})
    assert TrialConfig.from_dict(cfg.to_dict()) == cfg


def test_coerces_integral_floats_and_keeps_types():
    cfg = TrialConfig.from_dict({"epochs": 3.0, "lr": 1, "ema": True})
    assert cfg.epochs == 3 and isinstance(cfg.epochs, int)
    assert cfg.lr == 1.0 and isinstance(cfg.lr, float)


def test_frozen():
    with pytest.raises(Exception):
        TrialConfig().lr = 0.1


def test_unknown_key_names_it_and_suggests():
    with pytest.raises(ConfigError, match=r"Unknown trial config key 'warmup_epoch'.*Did you mean: warmup_epochs"):
        TrialConfig.from_dict({"warmup_epoch": 3})
    with pytest.raises(ConfigError, match=r"'mixup_alpa' \(value 0.2\).*mixup_alpha"):
        TrialConfig.from_dict({"mixup_alpa": 0.2})


@pytest.mark.parametrize(
    "key, value, allowed",
    [
        ("lr", 0, r"float in \(0.0, 10.0\]"),
        ("lr", -1e-3, r"float in \(0.0, 10.0\]"),
        ("lr", float("nan"), "float in"),
        ("epochs", 2.5, r"int in \[1, 10000\]"),
        ("epochs", "3", "int in"),
        ("augment", "cutout", "one of 'none', 'trivialaugment', 'randaugment', 'autoaugment'"),
        ("class_weighting", "balanced", "one of 'none', 'inverse'"),
        ("ema", 1, "must be bool"),
        ("frozen_stages", 5, r"int in \[0, 4\]"),
        ("class_weight_beta", 1.0, r"float in \(0.0, 1.0\)"),
        ("drop_rate", 1.0, r"\[0.0, 0.95\]"),
    ],
)
def test_out_of_range_names_key_value_and_rule(key, value, allowed):
    with pytest.raises(ConfigError) as err:
        TrialConfig.from_dict({key: value})
    message = str(err.value)
    assert repr(key) in message and repr(value) in message
    assert __import__("re").search(allowed, message), message


def test_mixup_needs_even_batch():
    with pytest.raises(ConfigError, match="even batch_size"):
        TrialConfig.from_dict({"mixup_alpha": 0.2, "batch_size": 33})
    assert TrialConfig.from_dict({"batch_size": 33}).batch_size == 33  # fine without mixup


def test_describe_fields_lists_every_key():
    text = describe_fields()
    for key in TrialConfig().to_dict():
        assert f"  {key} " in text
