"""A checked search plan: space + settings overrides + data + where results go. Built before Ray starts.

Every user mistake (bad space, bad data, a GPU asked of a machine without one, a name already used)
ends here as a UserError, before anything is written or any trial starts.
"""
from __future__ import annotations

import os
import shlex
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from core.data import DatasetIndex, index_dataset, resolve_data_root
from core.errors import UserError
from core.files import SPACE_COPY
from core.run_format import check_format
from core.storage import StorageURI
from search import preflight
from search.saved_plan import read_saved_plan
from search.space_file import Space, SpaceError, check_space, load_space

OVERRIDE_FLAGS = {"num_samples": "--num-samples", "max_concurrent": "--max-concurrent", "seed": "--seed",
                  "cpus_per_trial": "--cpus-per-trial", "gpus_per_trial": "--gpus-per-trial"}


@dataclass
class Plan:
    space: Space
    data: str            # what every trial receives: an absolute path, or builtin:digits
    index: DatasetIndex
    name: str
    storage_uri: StorageURI  # --storage, parsed: a local folder or a cloud URI
    out_dir: Path        # our files (leaderboard, best_config, ...) on the driver's disk
    resume: bool
    address: str | None
    ensemble_top_k: int = 5
    smoke_test: bool = False
    refit: str | None = None  # ensemble/refit.py: "kfold:K" or "bag:N" after the ensemble
    data_fingerprint: str = ""  # core/data_fingerprint.py: what every trial checks its dataset against
    forecast: dict | None = None  # search/forecast.py: expected epochs, hours, cost (plan.json "forecast")
    budget: dict | None = None    # search/spend.py: {"gpu_hours", "usd"} the search keeps within
    keep_all_checkpoints: bool = False  # search/cleanup.py: removes none after the ensemble
    keep_train_state: bool = False  # ... or keeps the optimizer state of ended trials' checkpoints
    growths: list | None = None   # search/growth.py: plan.json's growths so far (each one experiment inside this)
    grow: dict | None = None      # --grow: the growth this command starts (its plan.json entry), else None
    widened: dict | None = None   # --grow: parameter -> its new distribution, where the wider space changes one

    @property
    def storage(self) -> str:
        """What Tune's storage_path gets: an absolute local folder or a cloud URI."""
        return self.storage_uri.value

    @property
    def experiment_path(self) -> str:
        return self.storage_uri.join(self.name)

    @property
    def experiment_paths(self) -> list[str]:
        """The search's Tune experiments: the first, then each growth's (inside it), the one starting now last."""
        grown = [*(self.growths or []), *([self.grow] if self.grow else [])]
        return [self.experiment_path, *(self.storage_uri.join(self.name, g["experiment"]) for g in grown)]

    @property
    def resume_command(self) -> str:
        storage = "" if self.storage == str(Path("results").resolve()) else f" --storage {shlex.quote(self.storage)}"
        address = f" --address {self.address}" if self.address else ""
        return f"python search/run.py --name {self.name} --resume{storage}{address}"

    @classmethod
    def from_args(cls, args) -> "Plan":
        if getattr(args, "refit", None) is not None:  # a typo fails now, not after the search
            from ensemble.refit import RefitScheme  # no torch

            RefitScheme.parse(args.refit)
        storage = StorageURI.parse(args.storage)
        grow = bool(getattr(args, "grow", False))
        if grow and args.resume:
            raise UserError("--grow and --resume are two things: --grow adds trials to a finished search, --resume "
                            "continues an interrupted one (a growth included); give one of them.")
        if grow and not args.name:
            raise UserError("--grow needs --name: the name of the finished search to grow (see results/).")
        if args.resume and not args.name:
            raise UserError("--resume needs --name: the name of the search to continue (see results/).")
        name = args.name or f"{(args.space.stem if args.space else 'search')}-{time.strftime('%Y%m%d-%H%M%S')}"
        _check_name(name)
        out_dir = outputs_dir(storage, name)
        experiment = storage.join(name)
        # A resumed search is the one that was started: its saved plan, never the space file's defaults.
        saved = read_saved_plan(out_dir) if args.resume or grow else None
        if args.resume or grow:
            _refuse_changes(args, saved, out_dir, grow=grow)
        # Before anything reads the storage or joins Ray: a bad URI or a dead address is one message, not a hang.
        preflight.check_destination(storage, args.name, args.address or (saved or {}).get("address"))
        if (args.resume or grow) and (saved is None or not _can_restore(experiment)):
            if saved is None and _can_restore(experiment):  # Tune's state, but no plan: an older version's run
                check_format({}, out_dir, "this search")
            raise UserError(f"No search named {name!r} in {storage} to {'grow' if grow else 'resume'}. "
                            f"Start it without --{'grow' if grow else 'resume'}: python search/run.py --space SPACE "
                            f"--name {name}")
        growth = None
        if grow:
            from search import growth as growing

            space, growth = growing.plan_growth(args, saved, out_dir, _load(args, out_dir, saved, grow=True))
        else:
            space = _load(args, out_dir, saved)
        data_spec = saved["data"] if saved else args.data or space.settings.data
        root = resolve_data_root(data_spec)
        data = data_spec if data_spec.startswith("builtin:") else str(root)
        trial_defaults = space.trial_config({}, data)
        index = index_dataset(root, val_fraction=trial_defaults.get("val_fraction", 0.1),
                              seed=space.settings.seed, min_image_side=trial_defaults.get("min_image_side", 8))
        counted: dict = {}
        check_space(space, num_classes=len(index.classes), data=data, counted=counted)
        fingerprint = _fingerprint(index, saved, who="--grow" if grow else "--resume")
        top_k = args.ensemble_top_k if args.ensemble_top_k is not None else (saved or {}).get("ensemble_top_k", 5)
        if top_k < 0:
            raise UserError(f"--ensemble-top-k is {top_k}, but must be >= 0 (0 skips the ensemble).")
        # A refit runs after the search: --resume may add or change it, else the one the search started with.
        refit = getattr(args, "refit", None) or (saved or {}).get("refit")
        if refit and not top_k:
            raise UserError("--refit retrains the ensemble's candidates, but --ensemble-top-k 0 skips the "
                            "ensemble; drop one of them.")
        if refit:  # kfold:K larger than the smallest class would fail only after the whole search
            _check_refit_fits(refit, index)
        address = args.address or (saved or {}).get("address")  # a new --address: the cluster moved
        plan = cls(space, data, index, name, storage, out_dir, args.resume or grow, address, top_k,
                   smoke_test=bool(saved["smoke_test"] if saved else args.smoke_test), refit=refit,
                   data_fingerprint=fingerprint, growths=growth_list(saved))
        if growth is not None:
            plan.grow, plan.widened = growth["entry"], growth["widened"]
        plan._check_existing()
        if space.settings.large:  # its machinery reaches into Ray and Optuna internals: tested versions only
            from compat import optuna_internals, ray_internals

            ray_internals.check("driver_profile 'large'")
            optuna_internals.check("driver_profile 'large'")
        # What this machine cannot give the trials (GPUs, CPUs, pretrained weights offline) is found together and
        # refused in one message with one command that works here, not one fix per attempt.
        problems = [] if address else _local_resource_problems(space)
        try:
            preflight.check_trials(space, index, data)  # batch size, metric, pretrained weights: would fail every trial
        except preflight.WeightsUnavailable as err:
            if not problems:
                raise
            problems.append((str(err), ["--no-pretrained"]))
        if problems:
            raise SpaceError(_one_message(space, problems, getattr(args, "argv", None)))
        from search import forecast, spend

        plan.forecast = forecast.plan_forecast(plan, args, saved, _local_gpus())
        plan.budget = spend.plan_budget(args, saved, plan.forecast)
        plan.keep_all_checkpoints = bool(getattr(args, "keep_all_checkpoints", False))
        plan.keep_train_state = bool(getattr(args, "keep_train_state", False))
        if not plan.resume:  # a resumed search has written most of its checkpoints already
            from search.disk_space import check_free_space

            check_free_space(space, storage.local_path and storage.local_path / name, counted.get("min_params"),
                             counted.get("max_params"))
        return plan

    def _check_existing(self) -> None:
        """Also run again under the run lock (search/execute.py): another search may have started meanwhile."""
        from search.run_folder import never_started, written

        if not self.resume and (_can_restore(self.experiment_path)
                                or (written(self.out_dir) and not never_started(self.out_dir))):
            raise UserError(f"A search named {self.name!r} already exists in {self.storage}; nothing was "
                            f"overwritten. To continue it: {self.resume_command}   (or pick another --name)")

    def describe(self) -> str:
        s, idx = self.space.settings, self.index
        skipped = sum(len(v) for v in idx.skipped.values())
        gpu = f", {s.gpus_per_trial:g} GPU" if s.gpus_per_trial else ""
        state = f" (growing from {self.grow['from']} to {self.grow['to']} trials, experiment {self.grow['experiment']})" \
            if self.grow else " (resuming)" if self.resume else ""
        lines = [
            f"Search {self.name!r}{state}",
            f"  space      {self.space.path}  ({len(self.space.warm_starts)} warm starts evaluated first)",
            f"  data       {self.data}: {len(idx.classes)} classes, {len(idx.train)} train, {len(idx.val)} val"
            f"{' (hold-out)' if idx.val_is_holdout else ''}, {len(idx.test)} test"
            + (f", {skipped} files skipped" if skipped else ""),
            f"  searcher   Optuna TPE (seed {s.seed}), {s.num_samples} trials, metric {s.metric} ({s.mode}); "
            f"driver profile {s.driver_profile}",
            f"  scheduler  ASHA over epochs: max {s.max_epochs}, grace {s.grace_period}, reduction {s.reduction_factor}",
            f"  resources  {s.cpus_per_trial:g} CPU{gpu} per trial; max concurrent "
            f"{s.max_concurrent or 'as resources allow'}; {self._capacity()}",
            f"  images     train {s.train_size}px, eval {s.eval_size}px; {self._loader()}",
            f"  storage    {self.experiment_path}",
            f"  outputs    {self.out_dir}",
        ]
        if self.forecast:
            from search import forecast, spend

            lines += [forecast.table(self.forecast)] + ([spend.describe_budget(self.budget)] if self.budget else [])
        return "\n".join(lines)

    def _loader(self) -> str:
        trial = self.space.settings.trial
        if trial.get("loader", "pil") != "cache":
            return "loader pil (every trial decodes every image every epoch)"
        side = trial.get("cache_short_side") or "auto"
        return f"loader cache (decoded once per node, short side {side})"

    def _capacity(self) -> str:
        if self.address:
            return f"cluster at {self.address}"
        cpus, gpus = os.cpu_count() or 1, _local_gpus()
        s = self.space.settings
        fits = int(cpus // s.cpus_per_trial)
        if s.gpus_per_trial:
            fits = min(fits, int(gpus // s.gpus_per_trial))
        return f"this machine ({cpus} CPUs, {gpus} GPUs) runs {fits} at once"

    def execute(self) -> int:
        from search.execute import execute

        return execute(self)


def _refuse_changes(args, saved: dict | None, out_dir: Path, grow: bool = False) -> None:
    """Flags that would change the search being resumed are refused; the same values as at the start are
    accepted (a repeated command line). Growing (search/growth.py), --num-samples and --space are the growth, and
    another --data would make the earlier trials incomparable."""
    if saved is None:
        return  # nothing to resume: from_args says so
    if grow and args.data and _data_spec(args.data) != saved["data"]:
        from search.growth import refuse

        raise refuse(f"--data {args.data} is another dataset than the {saved['data']} the search's "
                     f"{saved['settings']['num_samples']} trials were trained and scored on", saved.get("name") or
                     out_dir.name)
    changed = {}  # flag -> what was given, and what the search started with
    for key, flag in OVERRIDE_FLAGS.items():
        if grow and key == "num_samples":
            continue
        given = getattr(args, key)
        if given is not None and given != saved["settings"][key]:
            changed[flag] = f"{flag} {given}, it started with {saved['settings'][key]}"
    for flag, (key, value) in _trial_flags(args).items():
        if saved["settings"].get("trial", {}).get(key) != value:
            changed[flag] = f"{flag}, it started with {key} {saved['settings'].get('trial', {}).get(key)!r}"
    if args.smoke_test and not saved.get("smoke_test"):
        changed["--smoke-test"] = "--smoke-test, it started without"
    if args.data and _data_spec(args.data) != saved["data"]:
        changed["--data"] = f"--data {args.data}, it started with {saved['data']}"
    if args.space and not grow and not _same_space(args.space, out_dir):
        changed["--space"] = (f"--space {args.space}, which differs from the copy it started with "
                              f"({saved.get('space_file', 'space.py')}, saved as space.py beside plan.json)")
    if changed:
        verb = "grown" if grow else "resumed"
        hint = "" if grow else (" To add trials to a finished search (more samples, a wider space): --grow "
                                "--num-samples TOTAL [--space WIDER]." if "--num-samples" in changed or
                                "--space" in changed else "")
        raise UserError(f"{', '.join(changed)} cannot change a search being {verb} ({'; '.join(changed.values())}). "
                        f"{'Grow' if grow else 'Resume'} it without them (its saved plan holds every setting it "
                        f"started with), or start a new search under another --name.{hint}")


def _same_space(given: Path, out_dir: Path) -> bool:
    """--space on --resume is accepted only as a repeat of the start's (the same text as the run's copy)."""
    try:
        return Path(given).read_bytes() == (out_dir / SPACE_COPY).read_bytes()
    except OSError:
        return False


def _trial_flags(args) -> dict:
    """--no-pretrained / --weights-file as flag -> (trial key, value)."""
    flags = {}
    if getattr(args, "no_pretrained", False):
        if getattr(args, "weights_file", None):
            raise UserError("--no-pretrained and --weights-file contradict each other; give one of them.")
        flags["--no-pretrained"] = ("pretrained", False)
    if getattr(args, "weights_file", None):
        flags["--weights-file"] = ("weights_file", str(Path(args.weights_file).expanduser().absolute()))
    return flags


def _data_spec(spec: str) -> str:
    return spec if spec.startswith("builtin:") else str(Path(spec).resolve())


def _load(args, out_dir: Path, saved: dict | None, grow: bool = False) -> Space:
    if grow and args.space:
        return load_space(args.space)  # a wider space: search/growth.py checks it against the search
    if args.resume or grow:
        copy = out_dir / SPACE_COPY
        space = load_space(copy)
        try:
            space = space.replace_settings(**saved["settings"])
        except (UserError, TypeError) as err:
            raise UserError(f"{out_dir / 'plan.json'}: its settings do not fit {copy}: {err}. "
                            "Start a new search under another --name.") from None
    else:
        if not args.space:
            raise UserError("--space is required: a space file such as spaces/quick.py or spaces/full.py.")
        space = load_space(args.space)
        overrides = {k: getattr(args, k) for k in OVERRIDE_FLAGS if getattr(args, k) is not None}
        trial_keys = dict(_trial_flags(args).values())
        if trial_keys:
            overrides["trial"] = {**space.settings.trial, **trial_keys}
        if args.smoke_test:
            s = space.settings
            overrides.update(num_samples=min(s.num_samples, 2), max_epochs=1, grace_period=1,
                             train_size=min(s.train_size, 64), eval_size=min(s.eval_size, 64))
        if overrides:
            try:
                space = space.replace_settings(**overrides)
            except UserError as err:
                raise UserError(f"Command-line override: {err}") from None
    return space


def outputs_dir(storage: StorageURI, name: str) -> Path:
    """Where the leaderboard, plan and ensemble go: inside the experiment for local storage, results/<name>
    on the driver for cloud storage."""
    if storage.is_cloud:
        return Path("results").resolve() / name
    return storage.local_path / name


def _can_restore(experiment_path: str) -> bool:
    from ray import tune

    return tune.Tuner.can_restore(experiment_path)


def _check_name(name: str) -> None:
    if not name or "/" in name or name.startswith("."):
        raise UserError(f"--name {name!r} must be a plain folder name (no '/', not starting with '.').")


def _local_gpus() -> int:
    """The NVIDIA GPUs Ray will see on this machine: those nvidia-smi lists, within CUDA_VISIBLE_DEVICES (no torch,
    no Ray internals). 0 without the NVIDIA driver."""
    try:
        proc = subprocess.run(["nvidia-smi", "--query-gpu=index", "--format=csv,noheader"], capture_output=True,
                              text=True, timeout=20)
        found = len(proc.stdout.split()) if proc.returncode == 0 else 0
    except (OSError, subprocess.SubprocessError):
        found = 0
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is None:
        return found
    return min(found, len([d for d in visible.split(",") if d.strip() and d.strip() != "-1"]))


def _local_resource_problems(space: Space) -> list[tuple[str, list[str]]]:
    """(what this machine lacks, the flags that fix it) for GPUs and CPUs per trial."""
    s, cpus, gpus = space.settings, os.cpu_count() or 1, _local_gpus()
    problems = []
    if s.gpus_per_trial > gpus:
        problems.append((f"it asks for {s.gpus_per_trial:g} GPU per trial, but this machine has {gpus}",
                         ["--gpus-per-trial", f"{gpus}"]))
    if s.cpus_per_trial > cpus:
        problems.append((f"it asks for {s.cpus_per_trial:g} CPUs per trial, but this machine has {cpus}",
                         ["--cpus-per-trial", f"{cpus}"]))
    return problems


def _one_message(space: Space, problems: list, argv: list[str] | None) -> str:
    reasons = "; ".join(text.rstrip(".") for text, _ in problems)
    fixes = [flags for _, flags in problems]
    if argv is None:  # called without a command line (a notebook): name the flags
        fix = "pass " + " ".join(shlex.join(f) for f in fixes)
    else:
        fix = "this command runs here: " + shlex.join(["python", "search/run.py", *_with_flags(argv, fixes)])
    return (f"{space.path} cannot run on this machine as it stands: {reasons}. To run it locally, {fix} "
            "(or use --address for a Ray cluster that has them).")


def _with_flags(argv: list[str], fixes: list[list[str]]) -> list[str]:
    """argv with each fix's flag set: an existing `--flag value` (or `--flag=value`) replaced, else appended."""
    out = list(argv)
    for flags in fixes:
        name = flags[0]
        for i, arg in enumerate(out):
            if arg == name:
                del out[i:i + len(flags)]
                break
            if arg.startswith(name + "="):
                del out[i]
                break
        out.extend(flags)
    return out


def _check_refit_fits(refit: str, index: DatasetIndex) -> None:
    from core.subsets import SubsetError, check_fits, parse_scheme_parts

    scheme, count = parse_scheme_parts(refit, with_part=False)
    try:
        check_fits(scheme, count, [label for _, label in index.train + index.val], index.classes)
    except SubsetError as err:
        raise UserError(f"--refit {err}") from None


def growth_list(saved: dict | None) -> list:
    from search.growth import growths

    return growths(saved)


def _fingerprint(index: DatasetIndex, saved: dict | None, who: str = "--resume") -> str:
    """A new search fingerprints its dataset; a resumed one must find the dataset it started with."""
    from core.data_fingerprint import check_fingerprint, fingerprint

    if saved is None:
        return fingerprint(index)
    recorded = saved.get("data_fingerprint") or ""
    check_fingerprint(recorded, index, who=who,
                      fix="Its trials would refuse it: restore the dataset as it was, or start a new search under "
                          "another --name.")
    return recorded
