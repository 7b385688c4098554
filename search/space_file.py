"""Load a space file (spaces/*.py) and prove it sound before any trial starts.

A space file is plain Python holding:
    define(trial)   define-by-run: Optuna trial.suggest_* calls only (conditionals allowed); may return
                    a dict of extra constant values
    SETTINGS        search settings (see SearchSettings), including fixed trial keys under "trial"
    WARM_STARTS     optional list of known-good points, evaluated first with exactly these values
"""
from __future__ import annotations

import traceback
import types
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import optuna

from core import metrics as metric_names
from core.budget import ModelError, check_budget
from core.config import ConfigError, TrialConfig, build_validated, in_range, one_of
from core.errors import UserError
from core.report_policy import EVERY
from search.child_checks import count_parameters

optuna.logging.set_verbosity(optuna.logging.WARNING)

# Trial keys the search sets from its settings (Space.trial_config), for every trial alike: a space may not
# suggest them, nor fix them under SETTINGS['trial'].
RESERVED_KEYS = ("data", "data_fingerprint", "epochs", "seed", "keep_checkpoints", "metric", "report_epochs")
SETTING_FOR = {"epochs": "max_epochs"}

PROFILES = ("standard", "large")
# driver_profile "large": what keeps one driver loop ahead of hundreds of GPUs (docs/scale.md measures each).
# Missing keys take these values; under "standard" each must keep its standard value.
LARGE_SETTINGS = {"report_epochs": "decisions", "suggestion_pool": 16, "suggestion_pool_workers": 2,
                  "tpe_history_window": 500, "reuse_actors": True}
LARGE_TRIAL = {"report_in_background": True, "checkpoint_after_decision": True}
STANDARD_VALUES = {"report_epochs": "every", "suggestion_pool": 0, "suggestion_pool_workers": 1,
                   "tpe_history_window": 0, "report_in_background": False, "checkpoint_after_decision": False}


class SpaceError(UserError):
    pass


@dataclass(frozen=True)
class SearchSettings:
    metric: str = field(default="val_acc", metadata=one_of(*metric_names.NAMES))
    mode: str = field(default="max", metadata=one_of("max", "min", doc="the metric's own direction (core/metrics.py)"))
    num_samples: int = field(default=20, metadata=in_range(1, 1_000_000, doc="trials, warm starts included"))
    max_epochs: int = field(default=10, metadata=in_range(1, 10_000, doc="epochs of a trial ASHA never stops"))
    grace_period: int = field(default=1, metadata=in_range(1, 10_000, doc="epochs before ASHA may stop a trial"))
    reduction_factor: int = field(default=3, metadata=in_range(2, 100, doc="ASHA keeps 1/reduction_factor per rung"))
    cpus_per_trial: float = field(default=2.0, metadata=in_range(0.0, 1024.0, lo_open=True))
    gpus_per_trial: float = field(default=0.0, metadata=in_range(0.0, 64.0, doc="fractions share a GPU"))
    max_concurrent: int = field(default=0, metadata=in_range(0, 1_000_000, doc="0 = as many as resources allow"))
    train_size: int = field(default=224, metadata=in_range(16, 1024, doc="px"))
    eval_size: int = field(default=224, metadata=in_range(16, 1024, doc="px"))
    seed: int = field(default=0, metadata=in_range(0, 2**31 - 1, doc="sampler and trial seed"))
    tpe_startup_trials: int = field(default=10, metadata=in_range(1, 100_000, doc="random trials before TPE models (Optuna's default 10)"))
    tpe_startup_counts_warm_starts: bool = field(default=False, metadata={"doc": "warm starts count towards tpe_startup_trials (Optuna's behaviour); False: TPE first samples tpe_startup_trials random trials of its own, so the recipes do not anchor it (Optuna's n_startup_trials is then tpe_startup_trials + the number of warm starts)"})
    # TPE's model of the space; defaults decided by benchmarks/experiments/sampler_settings.py (docs/benchmarks-history.md).
    tpe_multivariate: bool = field(default=True, metadata={"doc": "one joint density over the parameters (Optuna 5's default)"})
    tpe_group: bool = field(default=True, metadata={"doc": "model each conditional branch's parameters together (needs tpe_multivariate)"})
    tpe_constant_liar: bool = field(default=True, metadata={"doc": "running trials count as bad, so parallel suggestions spread out"})
    reuse_actors: bool = field(default=False, metadata={"doc": "Tune runs the next trial in a finished trial's worker process (same resources) instead of a new one: no new process, torch import or CUDA start per trial (Tune's TuneConfig.reuse_actors)"})
    driver_profile: str = field(default="standard", metadata=one_of(*PROFILES, doc="standard: Ray Tune and Optuna as shipped; large: the settings below for searches of hundreds of GPUs (docs/scale.md), which need the Ray and Optuna versions compat/ was tested with"))
    # --- driver_profile "large" only ---
    report_epochs: str = field(default="every", metadata=one_of("every", "decisions", doc="large: decisions = a trial reports to Tune only on ASHA's rung epochs, its checkpoint epochs and its last; the epochs between travel with the next report (core/report_policy.py)"))
    suggestion_pool: int = field(default=0, metadata=in_range(0, 10_000, doc="large: TPE suggestions prepared ahead by helper processes against the study file (search/suggestion_pool.py); 0 = the driver samples each one"))
    suggestion_pool_workers: int = field(default=1, metadata=in_range(1, 64, doc="large: helper processes filling the suggestion pool, each with its own random stream"))
    tpe_history_window: int = field(default=0, metadata=in_range(0, 10_000_000, doc="large: finished trials TPE models at most, the best 50 + a seeded uniform sample of the rest (search/windowed_tpe.py); 0 = all, plain TPE"))
    data: str = field(default="builtin:digits", metadata={"doc": "dataset path or builtin:digits"})
    keep_checkpoints: int = field(default=2, metadata=in_range(1, 1000, doc="best checkpoints kept per trial"))
    max_failures: int = field(default=2, metadata=in_range(0, 1000, doc="retries of a failed trial from its last checkpoint"))
    trial: dict = field(default_factory=dict, metadata={"doc": "trial config keys fixed for every trial"})

    def __post_init__(self):
        if self.grace_period > self.max_epochs:
            raise ConfigError(f"grace_period is {self.grace_period}, but must be <= max_epochs ({self.max_epochs}).")
        expected = metric_names.direction(self.metric)
        if self.mode != expected:
            raise ConfigError(f"metric {self.metric!r} with mode {self.mode!r}: {self.metric} must be {expected}imised.")
        owned = sorted(set(self.trial) & set(RESERVED_KEYS))
        if owned:
            raise ConfigError(f"trial sets {owned[0]!r}, which the search sets for every trial from its own setting "
                              f"{SETTING_FOR.get(owned[0], owned[0])!r}: move it there.")
        if self.tpe_group and not self.tpe_multivariate:
            raise ConfigError("tpe_group is True, but needs tpe_multivariate=True (Optuna models groups jointly); "
                              "set tpe_group=False or tpe_multivariate=True.")
        if self.driver_profile == "standard":
            values = {**{k: getattr(self, k) for k in LARGE_SETTINGS if k in STANDARD_VALUES},
                      **{k: self.trial[k] for k in LARGE_TRIAL if k in self.trial}}
            off = [(k, v) for k, v in values.items() if v != STANDARD_VALUES[k]]
            if off:
                where = "trial " if off[0][0] in LARGE_TRIAL else ""
                raise ConfigError(f"{where}{off[0][0]} is {off[0][1]!r}, which only driver_profile 'large' allows "
                                  "(the machinery for hundreds of GPUs: docs/scale.md). Set driver_profile: 'large', "
                                  f"or drop {off[0][0]}.")

    @property
    def large(self) -> bool:
        return self.driver_profile == "large"


def with_profile(settings: dict) -> dict:
    """SETTINGS as written, with driver_profile "large" filling in its values where the space left them out."""
    if not isinstance(settings, dict) or settings.get("driver_profile") != "large":
        return settings
    trial = settings.get("trial", {})
    trial = {**LARGE_TRIAL, **trial} if isinstance(trial, dict) else trial
    return {**LARGE_SETTINGS, **settings, "trial": trial}


@dataclass(frozen=True)
class Space:
    path: Path
    define: Callable[[Any], dict | None]
    settings: SearchSettings
    warm_starts: tuple[dict, ...]

    def trial_config(self, params: dict, data: str | None = None) -> dict:
        """Sampled params on top of the fixed settings: the flat dict a trial receives."""
        s = self.settings
        # The trial ranks its own epochs for checkpoints the way Tune's CheckpointConfig keeps them
        # (core/checkpoint_policy.py).
        base = {**s.trial, "data": data or s.data, "epochs": s.max_epochs, "seed": s.seed,
                "train_size": s.train_size, "eval_size": s.eval_size,
                "keep_checkpoints": s.keep_checkpoints, "metric": s.metric,
                "report_epochs": EVERY if s.report_epochs == "every" else ",".join(map(str, asha_rungs(s)))}
        return {**base, **params}

    def settings_dict(self) -> dict:
        return {k: getattr(self.settings, k) for k in self.settings.__dataclass_fields__}

    def replace_settings(self, **changes) -> "Space":
        values = {**self.settings_dict(), **changes}
        return Space(self.path, self.define, build_validated(SearchSettings, values, what="search setting"), self.warm_starts)


def load_space(path: str | Path) -> Space:
    path = Path(path)
    if path.is_dir():
        raise SpaceError(f"--space {path} is a folder; give a space file in it, e.g. spaces/quick.py.")
    if not path.is_file():
        hint = ", ".join(sorted(p.name for p in Path("spaces").glob("[!_]*.py"))) if Path("spaces").is_dir() else ""
        raise SpaceError(f"Space file {path} does not exist." + (f" Available in spaces/: {hint}." if hint else ""))
    module = _import(path)
    define = getattr(module, "define", None)
    if not callable(define):
        raise SpaceError(f"{path}: no define(trial) function. A space file defines `def define(trial): ...` "
                         "using trial.suggest_* (see spaces/quick.py).")
    settings_dict = getattr(module, "SETTINGS", {})
    try:
        settings = build_validated(SearchSettings, with_profile(settings_dict), what="search setting")
    except ConfigError as err:
        raise SpaceError(f"{path}: SETTINGS: {err}") from None
    warm = getattr(module, "WARM_STARTS", [])
    if not isinstance(warm, (list, tuple)) or not all(isinstance(w, dict) for w in warm):
        raise SpaceError(f"{path}: WARM_STARTS must be a list of dicts (one per known-good point).")
    return Space(path, DefineFromSource(str(path), _read_source(path)), settings, tuple(warm))


class DefineFromSource:
    """define(trial) rebuilt from the space file's source text.

    Ray saves the searcher with plain pickle, which cannot pickle a function from a file loaded at run
    time; this object pickles as (path, source), so a resumed search needs neither the file nor an
    importable module.
    """

    def __init__(self, path: str, source: str):
        self.path, self.source = path, source
        self._define = None

    def __call__(self, trial):
        if self._define is None:
            self._define = _exec_source(Path(self.path), self.source).define
        return self._define(trial)

    def __getstate__(self):
        return {"path": self.path, "source": self.source}

    def __setstate__(self, state):
        self.__init__(state["path"], state["source"])


def _import(path: Path):
    return _exec_source(path, _read_source(path))


def _read_source(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8-sig")  # a BOM (Windows editors) is fine, as for Python itself
    except UnicodeDecodeError as err:
        raise SpaceError(f"{path} is not UTF-8 text (byte {err.start}: {err.reason}). A space file is Python "
                         "source: save it as UTF-8.") from None


def _exec_source(path: Path, source: str):
    module = types.ModuleType(f"space_{path.stem}")
    module.__file__ = str(path)
    try:
        exec(compile(source, str(path), "exec"), module.__dict__)
    except SyntaxError as err:
        raise SpaceError(f"{path}:{err.lineno}: syntax error: {err.msg}. Fix the space file and run again.") from None
    except (Exception, SystemExit) as err:  # sys.exit() in a space file too: it must not end the search silently
        raise SpaceError(f"{path}:{_line_in(path, err)}: loading raised {type(err).__name__}: {err}") from None
    return module


def _line_in(path: Path, err: BaseException) -> str:
    frames = [f for f in traceback.extract_tb(err.__traceback__) if Path(f.filename).resolve() == path.resolve()]
    return str(frames[-1].lineno) if frames else "?"


def sample_params(space: Space, trial) -> dict:
    """What Ray's OptunaSearch does with a define-by-run space: suggested values plus any returned constants."""
    try:
        extra = space.define(trial)
    except Exception as err:
        raise SpaceError(f"{space.path}:{_line_in(space.path, err)}: define(trial) raised "
                         f"{type(err).__name__}: {err}") from None
    if extra is not None and not isinstance(extra, dict):
        raise SpaceError(f"{space.path}: define(trial) must return None or a dict, got {type(extra).__name__}.")
    return {**trial.params, **(extra or {})}


def sample_space(space: Space, samples: int = 64, data: str | None = None) -> tuple[list[dict], dict]:
    """Seeded random samples of the space: (their trial configs, every parameter's distribution seen)."""
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=space.settings.seed))
    sampled, distributions = [], {}
    for _ in range(samples):
        trial = study.ask()
        params = sample_params(space, trial)
        reserved = sorted(set(params) & set(RESERVED_KEYS))
        if reserved:
            raise SpaceError(f"{space.path}: define(trial) sets {reserved}, which the search owns "
                             "(use SETTINGS data / max_epochs / seed / keep_checkpoints / metric / report_epochs).")
        sampled.append(space.trial_config(params, data))
        distributions.update(trial.distributions)
        study.tell(trial, 0.0)
    return sampled, distributions


def searched_parameters(space: Space, samples: int = 64) -> dict:
    """name -> Optuna distribution of every parameter define() suggests on some branch (TensorBoard's HParams)."""
    return sample_space(space, samples)[1]


def check_space(space: Space, *, num_classes: int = 100, samples: int = 64, data: str | None = None,
                counted: dict | None = None) -> list[dict]:
    """Sample configs with a seeded study and validate every one, every categorical choice and every range end.

    Returns the sampled trial configs. Raises SpaceError naming the file and the problem. `counted`, if given,
    receives "min_params" / "max_params": the smallest and largest model's parameter counts (search/disk_space.py
    sizes checkpoints by them).
    """
    sampled, distributions = sample_space(space, samples, data)
    # Each parameter alone first, so a message names the parameter rather than a whole config.
    base = space.trial_config({}, data)
    to_check = [(f"parameter {name!r} = {value!r}", {**base, name: value})
                for name, dist in distributions.items() for value in extremes(dist)]
    to_check += [(f"sampled config #{i}", c) for i, c in enumerate(sampled)]
    to_check += [(f"WARM_STARTS[{k}]", _warm_start_config(space, k, point, data))
                 for k, point in enumerate(space.warm_starts)]
    checked = [(where, _valid_config(space, config, where, base)) for where, config in to_check]
    _check_checkpoint_cadence(space, checked)
    smallest, largest = _check_budgets(space, checked, num_classes)
    if counted is not None:
        counted.update(min_params=smallest, max_params=largest)
    return sampled


def extremes(dist) -> list:
    """Every choice of a categorical parameter, or both ends of a range."""
    if isinstance(dist, optuna.distributions.CategoricalDistribution):
        return list(dist.choices)
    return [dist.low, dist.high]


def _valid_config(space: Space, config: dict, where: str, base: dict) -> TrialConfig:
    try:
        return TrialConfig.from_dict(config)
    except ConfigError as err:
        if _fails_alike(base, err):  # a mistake in the fixed keys: not the parameter this config varied
            where = "SETTINGS['trial']"
        raise SpaceError(f"{space.path}: {where}: {err}") from None


def _fails_alike(config: dict, err: ConfigError) -> bool:
    try:
        TrialConfig.from_dict(config)
    except ConfigError as base_err:
        return str(base_err) == str(err)
    return False


def asha_rungs(s: SearchSettings) -> list[int]:
    """The epochs below max_epochs where ASHA may stop a trial: grace_period * reduction_factor^k."""
    rungs, r = [], s.grace_period
    while r < s.max_epochs:
        rungs.append(r)
        r *= s.reduction_factor
    return rungs


def _check_checkpoint_cadence(space: Space, checked: list[tuple[str, TrialConfig]]) -> None:
    """Without checkpoint_new_bests a trial saves only every resume_state_every epochs and on its last, and it
    cannot know when ASHA will stop it: a trial stopped at a rung between two saves would end with no weights
    (no ensemble member, nothing to resume). ASHA's rungs are grace_period * reduction_factor^k below max_epochs."""
    rungs = asha_rungs(space.settings)
    for where, cfg in checked:
        missed = [r for r in rungs if r % cfg.resume_state_every] if not cfg.checkpoint_new_bests else []
        if missed:
            raise SpaceError(
                f"{space.path}: {where}: checkpoint_new_bests is False and resume_state_every is "
                f"{cfg.resume_state_every}, but ASHA may stop trials at epoch {missed[0]} (its rungs: "
                f"{', '.join(map(str, rungs))}), where they would end without a checkpoint. Set "
                "resume_state_every to a divisor of grace_period, or checkpoint_new_bests to True.")


def _check_budgets(space: Space, checked: list[tuple[str, TrialConfig]], num_classes: int) -> tuple[int, int]:
    """Every distinct (backbone, head) counted once, in a child process (it needs torch and timm); then
    each config against its own budget, in order, so the first message names the first offender."""
    key = lambda cfg: (cfg.backbone, cfg.head, cfg.head_hidden if cfg.head == "mlp" else 0)
    distinct = sorted({key(cfg) for _, cfg in checked})
    counts = count_parameters([{"backbone": b, "head": h, "head_hidden": w or 512, "num_classes": num_classes}
                             for b, h, w in distinct])
    by_key = dict(zip(distinct, counts))
    for where, cfg in checked:
        counted = by_key[key(cfg)]
        try:
            if "error" in counted:
                raise ModelError(counted["error"])
            check_budget(cfg, counted["params"])
        except ModelError as err:
            if cfg.backbone == space.settings.trial.get("backbone"):
                where = "SETTINGS['trial']"
            raise SpaceError(f"{space.path}: {where}: {err}") from None
    params = [c["params"] for c in counts if "params" in c]
    return min(params, default=0), max(params, default=0)


def _warm_start_config(space: Space, k: int, point: dict, data: str | None) -> dict:
    """A warm start must hold exactly the parameters define() asks for on that branch, with valid values."""
    trial = optuna.trial.FixedTrial(point)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            params = sample_params(space, trial)
        except SpaceError as err:
            raise SpaceError(f"{space.path}: WARM_STARTS[{k}] does not fit define(): {err}") from None
    outside = [str(w.message) for w in caught if "range" in str(w.message) or "choices" in str(w.message)]
    if outside:
        raise SpaceError(f"{space.path}: WARM_STARTS[{k}] lies outside the space: {outside[0]}")
    unused = sorted(set(point) - set(trial.params))
    if unused:
        raise SpaceError(f"{space.path}: WARM_STARTS[{k}] sets {unused}, which define() never suggests on this "
                         "branch; Optuna would ignore them. Remove them or make define() suggest them.")
    return space.trial_config(params, data)


def warm_start_configs(space: Space, data: str | None = None) -> list[dict]:
    """Every warm start's trial config, as the search runs it."""
    return [_warm_start_config(space, k, point, data) for k, point in enumerate(space.warm_starts)]
