"""The trial's configuration: one flat dict in (what Ray Tune passes), one frozen, typed config out.

Every tunable carries its unit and allowed values beside it. `TrialConfig.from_dict` is the only
way in: unknown keys, wrong types and out-of-range values are rejected with a message naming the
key, the value given and what is allowed.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from core import metrics
from core.errors import UserError, close_matches
from core.report_policy import parse_report_epochs
from core.subsets import SubsetError, parse_subset


class ConfigError(UserError):
    pass


def in_range(lo, hi, *, lo_open=False, hi_open=False, doc=""):
    return {"range": (lo, hi, lo_open, hi_open), "doc": doc}


def one_of(*options, doc=""):
    return {"choices": options, "doc": doc}


@dataclass(frozen=True)
class TrialConfig:
    # --- data ---
    data: str = field(default="builtin:digits", metadata={"doc": "dataset root (DATA/train, DATA/val, DATA/test) or builtin:digits"})
    val_fraction: float = field(default=0.1, metadata=in_range(0.0, 0.5, lo_open=True, doc="stratified hold-out from train when DATA/val is absent"))
    min_image_side: int = field(default=8, metadata=in_range(1, 4096, doc="px; smaller images are skipped with a warning"))
    loader: str = field(default="pil", metadata=one_of("pil", "cache", doc="pil: decode every image every epoch; cache: decode once per node into a shared uint8 memory map, crop/flip/augment uint8 in the workers, normalise/erase on the device"))
    cache_short_side: int = field(default=0, metadata=in_range(0, 4096, doc="px, loader=cache: short side images are stored at; 0 = max(train_size, eval_size / crop_pct). Give every trial of a search the same value to share one cache"))
    data_fingerprint: str = field(default="", metadata={"doc": "set by the search: the plan's dataset fingerprint (core/data_fingerprint.py); a trial refuses a dataset that changed since. '' = not checked"})
    subset: str = field(default="", metadata={"doc": "refit: '' = the dataset's train/val; 'kfold:K:k' = train+val pooled into K stratified folds, train on all but fold k, validate on fold k; 'bag:N:b' = bootstrap bag b of the pooled set, validate on its out-of-bag images (core/subsets.py)"})
    subset_seed: int = field(default=0, metadata=in_range(0, 2**31 - 1, doc="seeds the folds / bags of `subset` (the same for every model of one refit)"))
    num_workers: int = field(default=2, metadata=in_range(0, 64, doc="DataLoader worker processes"))
    batch_size: int = field(default=64, metadata=in_range(2, 4096, doc="images per optimizer step"))
    # --- image sizes and augmentation ---
    train_size: int = field(default=224, metadata=in_range(16, 1024, doc="px, train crop side"))
    eval_size: int = field(default=224, metadata=in_range(16, 1024, doc="px, eval crop side (report 003 trained at 224, inferred at 320)"))
    crop_pct: float = field(default=0.875, metadata=in_range(0.5, 1.0, doc="eval: resize to eval_size/crop_pct, then center-crop"))
    scale_min: float = field(default=0.08, metadata=in_range(0.01, 1.0, doc="RandomResizedCrop lower area fraction"))
    hflip: float = field(default=0.5, metadata=in_range(0.0, 1.0, doc="probability"))
    vflip: float = field(default=0.0, metadata=in_range(0.0, 1.0, doc="probability"))
    augment: str = field(default="none", metadata=one_of("none", "trivialaugment", "randaugment", "autoaugment"))
    random_erasing: float = field(default=0.0, metadata=in_range(0.0, 1.0, doc="probability per image"))
    mixup_alpha: float = field(default=0.0, metadata=in_range(0.0, 10.0, doc="Beta(alpha, alpha); 0 = off"))
    cutmix_alpha: float = field(default=0.0, metadata=in_range(0.0, 10.0, doc="Beta(alpha, alpha); 0 = off"))
    mixup_prob: float = field(default=1.0, metadata=in_range(0.0, 1.0, doc="probability a batch is mixed"))
    mixup_switch_prob: float = field(default=0.5, metadata=in_range(0.0, 1.0, doc="probability of cutmix instead of mixup when both are on"))
    # --- model ---
    backbone: str = field(default="resnet18", metadata={"doc": "a timm ResNet-family model name"})
    pretrained: bool = field(default=False, metadata={"doc": "load timm's pretrained weights (hub, or weights_file)"})
    weights_file: str = field(default="", metadata={"doc": "local weights file (.pth/.safetensors); implies pretrained"})
    drop_rate: float = field(default=0.0, metadata=in_range(0.0, 0.95, doc="dropout before the classifier"))
    drop_path_rate: float = field(default=0.0, metadata=in_range(0.0, 0.9, doc="stochastic depth"))
    head: str = field(default="linear", metadata=one_of("linear", "mlp", doc="mlp = Linear-BN-SiLU-Dropout-Linear (report 004)"))
    head_hidden: int = field(default=512, metadata=in_range(8, 8192, doc="MLP hidden width"))
    frozen_stages: int = field(default=0, metadata=in_range(0, 4, doc="freeze the stem and the first N residual stages (report 002: 1)"))
    param_budget_m: float = field(default=100.0, metadata=in_range(0.0, 10_000.0, lo_open=True, doc="max parameters, millions"))
    # --- loss ---
    label_smoothing: float = field(default=0.0, metadata=in_range(0.0, 0.5))
    class_weighting: str = field(default="none", metadata=one_of("none", "inverse", "sqrt_inverse", "effective_number", doc="from train class counts (report 003)"))
    class_weight_beta: float = field(default=0.999, metadata=in_range(0.0, 1.0, lo_open=True, hi_open=True, doc="effective_number's beta"))
    focal_gamma: float = field(default=0.0, metadata=in_range(0.0, 10.0, doc="0 = plain cross-entropy"))
    # --- optimisation ---
    optimizer: str = field(default="adamw", metadata=one_of("adamw", "sgd"))
    lr: float = field(default=1e-3, metadata=in_range(0.0, 10.0, lo_open=True, doc="backbone peak learning rate"))
    head_lr_mult: float = field(default=1.0, metadata=in_range(0.0, 1000.0, lo_open=True, doc="head lr = lr * head_lr_mult (report 000: 10)"))
    momentum: float = field(default=0.9, metadata=in_range(0.0, 1.0, hi_open=True, doc="SGD momentum"))
    weight_decay: float = field(default=0.05, metadata=in_range(0.0, 10.0, doc="decoupled; never on norms and biases"))
    epochs: int = field(default=10, metadata=in_range(1, 10_000))
    warmup_epochs: int = field(default=0, metadata=in_range(0, 1000, doc="linear warm-up from warmup_lr"))
    warmup_lr: float = field(default=1e-6, metadata=in_range(0.0, 10.0))
    scheduler: str = field(default="cosine", metadata=one_of("cosine", "step", "plateau"))
    min_lr: float = field(default=1e-6, metadata=in_range(0.0, 10.0))
    decay_epochs: int = field(default=30, metadata=in_range(1, 10_000, doc="step: epochs between decays"))
    decay_rate: float = field(default=0.1, metadata=in_range(0.0, 1.0, lo_open=True, doc="step/plateau: lr factor"))
    patience_epochs: int = field(default=2, metadata=in_range(0, 1000, doc="plateau: epochs without a gain in `metric`"))
    ema: bool = field(default=False, metadata={"doc": "evaluate an exponential moving average of the weights"})
    ema_decay: float = field(default=0.999, metadata=in_range(0.0, 1.0, lo_open=True, hi_open=True))
    grad_clip: float = field(default=0.0, metadata=in_range(0.0, 1e6, doc="max grad norm; 0 = off"))
    # --- checkpoints (core/checkpoint_policy.py) ---
    resume_state_every: int = field(default=3, metadata=in_range(1, 10_000, doc="epochs: a checkpoint at least every N epochs (and the last); a resumed trial repeats at most N-1 epochs. 1 = every epoch"))
    keep_checkpoints: int = field(default=2, metadata=in_range(1, 1000, doc="the search's best checkpoints kept per trial: an epoch entering the trial's top N also gets a checkpoint"))
    checkpoint_new_bests: bool = field(default=True, metadata={"doc": "also checkpoint every epoch that enters the trial's top keep_checkpoints; False: only every resume_state_every epochs (fewer bytes, the best epoch between two saves is lost)"})
    report_epochs: str = field(default="every", metadata={"doc": "which epochs reach the search: 'every', or the epochs its scheduler decides on, comma-separated (the search fills in ASHA's rungs): then the trial reports only those, its checkpoint epochs and its last, and the epochs between travel with the next report (core/report_policy.py)"})
    checkpoint_after_decision: bool = field(default=False, metadata={"doc": "on an epoch the scheduler decides on (report_epochs) with a checkpoint due, report the metrics first and save the checkpoint only if the trial goes on: trials ASHA stops at a rung write and upload no checkpoint there (core/report_policy.py); needs report_epochs to list the decision epochs"})
    report_in_background: bool = field(default=False, metadata={"doc": "under the search: hand each report (and its checkpoint) to a thread of the trial's own and train the next epoch while Tune persists the checkpoint and the driver decides; a trial the scheduler stops then ends within one batch (worker/tune_trial.py)"})
    metric: str = field(default="val_acc", metadata=one_of(*metrics.NAMES, doc="what this trial is judged by (the search's metric): it ranks the trial's checkpoints and drives the plateau scheduler, in the metric's direction (val_loss: lower is better; core/metrics.py)"))
    # --- runtime ---
    seed: int = field(default=0, metadata=in_range(0, 2**31 - 1))
    amp: bool = field(default=True, metadata={"doc": "autocast on CUDA (bf16 where supported, else fp16); CPU stays fp32"})
    channels_last: bool = field(default=True, metadata={"doc": "on CUDA only; ResNeSt is kept NCHW"})
    fused_optimizer: bool = field(default=True, metadata={"doc": "on CUDA: the optimizer's fused kernel (one launch for all parameters)"})
    cudnn_benchmark: bool = field(default=True, metadata={"doc": "on CUDA: let cuDNN time and pick convolution algorithms (input sizes are fixed)"})
    compile: bool = field(default=False, metadata={"doc": "torch.compile the model (minutes of compile time; pays off on long GPU runs)"})
    log_every_batches: int = field(default=50, metadata=in_range(0, 1_000_000, doc="print the epoch's progress (batch, loss, images/s, time left in the epoch) every N batches; 0 = only the epoch lines"))

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "TrialConfig":
        return build_validated(cls, values, what="trial config",
                               help_hint=" Known keys are listed by `python -m trainable --help-config`.")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def __post_init__(self):
        if self.mixup_active and self.batch_size % 2:
            raise ConfigError(f"batch_size is {self.batch_size}, but mixup/cutmix needs an even batch_size.")
        try:
            parse_subset(self.subset)
        except SubsetError as err:
            raise ConfigError(f"Trial config key 'subset': {err}") from None
        try:
            parse_report_epochs(self.report_epochs)
        except ValueError as err:
            raise ConfigError(f"Trial config key 'report_epochs' has value {self.report_epochs!r}: {err}.") from None
        if self.checkpoint_after_decision and self.report_epochs.strip() == "every":
            raise ConfigError("checkpoint_after_decision is True, but report_epochs is 'every': the trial cannot tell "
                              "the scheduler's decision epochs. Set the search's report_epochs to 'decisions' (or list "
                              "the epochs), or checkpoint_after_decision to False.")
        needed = self.required_cache_side
        if self.cache_short_side and self.cache_short_side < needed:
            raise ConfigError(
                f"cache_short_side is {self.cache_short_side}, but train_size {self.train_size} and eval_size "
                f"{self.eval_size} at crop_pct {self.crop_pct} need at least {needed}; set cache_short_side >= {needed} or 0.")

    @property
    def required_cache_side(self) -> int:
        """Large enough for the train crop and for eval's resize-then-center-crop."""
        return max(self.train_size, int(self.eval_size / self.crop_pct))

    @property
    def mixup_active(self) -> bool:
        return self.mixup_prob > 0 and (self.mixup_alpha > 0 or self.cutmix_alpha > 0)


def build_validated(cls, values: dict[str, Any], *, what: str, help_hint: str = ""):
    """Construct dataclass `cls` from a flat dict, checking every key against its field's type and rule."""
    if not isinstance(values, dict):
        raise ConfigError(f"The {what} must be a dict of key: value pairs, got {type(values).__name__}.")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = [k for k in values if k not in fields]
    if unknown:
        key = unknown[0]
        raise ConfigError(f"Unknown {what} key {key!r} (value {values[key]!r})." + _hint(str(key), fields, cls)
                          + help_hint)
    return cls(**{k: _coerce(fields[k], v, what) for k, v in values.items()})


# Names other libraries use for a key (timm, PyTorch, Keras): difflib would point learning_rate at decay_rate.
ALIASES = {"learning_rate": "lr", "base_lr": "lr", "wd": "weight_decay", "bs": "batch_size", "num_epochs": "epochs",
           "model": "backbone", "arch": "backbone", "label_smooth": "label_smoothing", "smoothing": "label_smoothing",
           "drop_path": "drop_path_rate", "dropout": "drop_rate"}


def _hint(key: str, fields, cls) -> str:
    alias = ALIASES.get(key.lower())
    if alias in fields:
        return f" Did you mean: {alias}?"
    if cls is not TrialConfig and key in {f.name for f in dataclasses.fields(TrialConfig)}:
        return (f" {key!r} is a trial config key: move it under SETTINGS['trial'] (every trial gets it), or "
                "suggest it in define(trial).")
    return close_matches(key, fields)


def describe_fields(cls=None) -> str:
    """One line per key: name, default, allowed values — for --help-config."""
    lines = []
    for f in dataclasses.fields(cls or TrialConfig):
        meta = f.metadata
        allowed = _allowed(f)
        doc = meta.get("doc", "")
        lines.append(f"  {f.name:<18} default {f.default!r:<18} {allowed}{'; ' + doc if doc else ''}")
    return "\n".join(lines)


def _allowed(f) -> str:
    meta = f.metadata
    if "choices" in meta:
        return "one of " + ", ".join(map(repr, meta["choices"]))
    if "range" in meta:
        lo, hi, lo_open, hi_open = meta["range"]
        return f"{f.type} in {'(' if lo_open else '['}{lo}, {hi}{')' if hi_open else ']'}"
    return f.type


def _coerce(f, value, what: str):
    name, kind, given = f.name, f.type, value
    bad = lambda: ConfigError(f"{what[0].upper() + what[1:]} key {name!r} has value {given!r}, but must be {_allowed(f)}.")
    if kind == "bool":
        if isinstance(value, bool):
            return value
        raise bad()
    if kind == "dict":
        if not isinstance(value, dict):
            raise bad()
        return value
    if kind == "str":
        if not isinstance(value, str):
            raise bad()
        choices = f.metadata.get("choices")
        if choices and value not in choices:
            raise bad()
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise bad()
    if kind == "int":
        if isinstance(value, float):
            if not value.is_integer():
                raise bad()
            value = int(value)
    else:
        value = float(value)
        if not math.isfinite(value):
            raise bad()
    lo, hi, lo_open, hi_open = f.metadata["range"]
    if value < lo or value > hi or (lo_open and value == lo) or (hi_open and value == hi):
        raise bad()
    return value
