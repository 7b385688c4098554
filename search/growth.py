"""Growing a finished search: more trials, a wider space, into the same run folder and the same Optuna study.

    python search/run.py --name quick-1 --grow --num-samples 24                        # 16 trials -> 24
    python search/run.py --name quick-1 --grow --num-samples 24 --space spaces/wider.py  # and a wider space

Tune cannot add trials to a finished experiment (`Tuner.restore` is "not meant for modifying search spaces or
stopping criteria"), so each growth is an experiment of its own inside the run's, STORAGE/NAME/grow-K, whose
searcher asks the run's study (optuna_study.log): TPE models every trial the search has run, and ASHA's rungs start
from the earlier trials' values (compat/ray_internals.py). The leaderboard, the ensemble and the report are then
rebuilt from every experiment's trials. plan.json records each growth ("growth": its experiment, from and to);
--resume continues an interrupted one.

What may grow, checked here before anything is written (no Ray):
  - the search has ended (every trial finished: an interrupted or budget-stopped one is --resume'd first);
  - the trials' results stay comparable: the same dataset (path and fingerprint), metric and mode, max_epochs,
    ASHA's grace_period and reduction_factor (a trial's rung decisions and its PRUNED step in the study depend on
    them), image sizes and fixed trial keys (SETTINGS["trial"]). Other settings are the search's own; a new
    space's differing ones are named and not used;
  - the wider space holds every trial the search has run: each earlier trial's parameters, replayed through the
    new define(), take the same branches and lie inside the new distributions (a categorical may gain choices, a
    range may widen; a parameter may be added, never removed; a parameter keeps its kind, log scale and step).
Optuna refuses a categorical whose choices change under the same name in one study ("CategoricalDistribution
does not support dynamic value space"), and TPE models a parameter jointly only across trials with the same
distribution; so when a parameter's distribution changes, the study is rewritten once with the new distribution
recorded on its earlier trials (search/study.py `rewrite_distributions`; the file before is kept beside it).
"""
from __future__ import annotations

import logging
import time
from contextlib import contextmanager

import optuna
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.samplers import BaseSampler, RandomSampler

from core.errors import UserError

GROWTH_KEY = "growth"  # plan.json: the growths, oldest first
# Settings that decide what an earlier trial's result means: why each must stay as the search ran it.
COMPARABLE = {
    "metric": "the trials are ranked and ensembled by it",
    "mode": "the trials are ranked and ensembled by it",
    "max_epochs": "a completed trial ran that many epochs, and ASHA's top rung is there",
    "grace_period": "ASHA's rungs are at grace_period x reduction_factor^k: the earlier trials were stopped, and "
                    "told to Optuna as PRUNED, at those epochs",
    "reduction_factor": "ASHA's rungs are at grace_period x reduction_factor^k: the earlier trials were stopped, "
                        "and told to Optuna as PRUNED, at those epochs",
    "train_size": "the trials trained at that image size",
    "eval_size": "the trials were evaluated at that image size",
}


class GrowthError(UserError):
    pass


def growths(record: dict | None) -> list[dict]:
    """plan.json's growths, oldest first: {"experiment": "grow-1", "from": 16, "to": 24, ...}."""
    return list((record or {}).get(GROWTH_KEY) or [])


def next_experiment(record: dict | None) -> str:
    return f"grow-{len(growths(record)) + 1}"


def growth_entry(record: dict, *, to: int, space_file: str | None) -> dict:
    return {"experiment": next_experiment(record), "from": int(record["settings"]["num_samples"]), "to": int(to),
            "space_file": space_file, "time": time.strftime("%Y-%m-%dT%H:%M:%S%z")}


def refuse(what: str, name: str) -> GrowthError:
    return GrowthError(f"--grow: {what}; nothing was written. Grow it with what it ran with, or start a new search "
                       f"under another --name (python search/run.py --space SPACE --name {name}-2).")


def check_samples(num_samples: int | None, ran: int, name: str) -> None:
    if num_samples is None:
        raise GrowthError(f"--grow needs --num-samples TOTAL: the trials the search should have in all, more than "
                          f"the {ran} it has (e.g. python search/run.py --name {name} --grow --num-samples "
                          f"{ran + max(ran // 2, 1)}).")
    if num_samples <= ran:
        raise GrowthError(f"--grow --num-samples {num_samples}: the search has {ran} trial(s) already; give the total "
                          f"it should reach, more than {ran}.")


def settings_problems(saved: dict, new, where: str, ran: int) -> tuple[list[str], list[str]]:
    """(what makes the earlier trials incomparable, settings of `new` that differ and are not used): `saved` the
    search's settings as plan.json holds them, `new` a wider space file's SearchSettings."""
    problems, ignored = [], []
    for key, why in COMPARABLE.items():
        if getattr(new, key) != saved[key]:
            problems.append(f"{where} sets {key} {getattr(new, key)!r}, but the search's {ran} trials ran with "
                            f"{key} {saved[key]!r} ({why})")
    trial = saved.get("trial") or {}
    for key, value in sorted(new.trial.items()):
        if key not in trial or trial[key] != value:
            ran_with = f"{trial[key]!r}" if key in trial else "the trial config's default"
            problems.append(f"{where} fixes the trial key {key} to {value!r}, but the search's trials ran with "
                            f"{ran_with}")
    skip = set(COMPARABLE) | {"trial", "num_samples", "data"}
    for key in sorted(saved):
        if key not in skip and hasattr(new, key) and getattr(new, key) != saved[key]:
            ignored.append(f"{key} ({getattr(new, key)!r} there, {saved[key]!r} in the search)")
    return problems, ignored


class _Replay(BaseSampler):
    """Suggests an earlier trial's own values (define-by-run follows its branches), the first choice / the low end
    for a parameter it did not have (a random one where the new distribution does not hold its value: space_problems
    names it)."""

    def __init__(self):
        self.params: dict = {}
        self._random = RandomSampler(seed=0)

    def infer_relative_search_space(self, study, trial):
        return {}

    def sample_relative(self, study, trial, search_space):
        return {}

    def sample_independent(self, study, trial, param_name, param_distribution):
        if param_name in self.params:
            value = self.params[param_name]
            if contains(param_distribution, value):
                return value
        return self._random.sample_independent(study, trial, param_name, param_distribution)


def contains(dist, value) -> bool:
    """Whether `dist` can suggest `value` (public fields only)."""
    if isinstance(dist, CategoricalDistribution):
        return any(value == c and type(value) is type(c) for c in dist.choices)
    if isinstance(dist, (FloatDistribution, IntDistribution)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not dist.low <= value <= dist.high:
            return False
        if dist.step is not None:
            steps = (value - dist.low) / dist.step
            return abs(steps - round(steps)) < 1e-8
        return not isinstance(dist, IntDistribution) or float(value).is_integer()
    return False


def describe(dist) -> str:
    if isinstance(dist, CategoricalDistribution):
        return f"choices {list(dist.choices)}"
    kind = "int" if isinstance(dist, IntDistribution) else "float"
    extra = (", log" if dist.log else "") + (f", step {dist.step}" if dist.step is not None and
                                             not (kind == "int" and dist.step == 1) else "")
    return f"{kind} {dist.low}..{dist.high}{extra}"


@contextmanager
def _quiet_optuna():
    level = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(logging.ERROR)
    try:
        yield
    finally:
        optuna.logging.set_verbosity(level)


def space_problems(trials, define, where: str) -> tuple[list[str], dict]:
    """(why the wider space does not hold the search's trials, the new distribution of every parameter whose
    distribution changes): each earlier trial (optuna FrozenTrials with parameters) replayed through `define`."""
    replay = _Replay()
    with _quiet_optuna():
        study = optuna.create_study(sampler=replay)
    problems: dict[str, str] = {}  # one line per parameter (the first trial that shows it)
    new: dict[str, object] = {}
    changed: dict[str, object] = {}
    for old in sorted((t for t in trials if t.params), key=lambda t: t.number):
        replay.params = dict(old.params)
        trial = study.ask()
        try:
            with _quiet_optuna():
                define(trial)
        except Exception as err:
            problems.setdefault("define", f"{where}: define(trial) raised {type(err).__name__}: {err} on trial "
                                          f"#{old.number}'s parameters {old.params}")
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
            continue
        for name, value in old.params.items():
            before, after = old.distributions[name], trial.distributions.get(name)
            if after is None:
                problems.setdefault(name, f"{where} no longer suggests {name} (trial #{old.number} ran "
                                          f"{name}={value!r}); a parameter may be added, not removed")
                continue
            if type(after) is not type(before) or getattr(after, "log", None) != getattr(before, "log", None) or \
                    (not isinstance(after, CategoricalDistribution) and after.step != before.step):
                problems.setdefault(name, f"{where} suggests {name} as {describe(after)}, the search as "
                                          f"{describe(before)}: a parameter keeps its kind, log scale and step")
                continue
            if not contains(after, value):  # (a single choice is never asked of the sampler)
                problems.setdefault(name, f"trial #{old.number} ran {name}={value!r}, which {where}'s "
                                          f"{describe(after)} does not hold")
                continue
            if after != before:
                changed.setdefault(name, after)
        for name, dist in trial.distributions.items():
            if new.setdefault(name, dist) != dist:
                problems.setdefault(name, f"{where} suggests {name} with two distributions ({describe(new[name])} "
                                          f"and {describe(dist)}); one study holds one per name")
        study.tell(trial, state=optuna.trial.TrialState.FAIL)
    return list(problems.values()), {k: v for k, v in changed.items() if k not in problems}


def check_space(space, saved: dict, trials, ran: int, name: str) -> tuple[dict, list[str]]:
    """Refuses (one GrowthError naming every problem) a wider space that would make the earlier trials
    incomparable; returns (the distributions to widen in the study, the new space's settings not used)."""
    where = str(space.path)
    problems, ignored = settings_problems(saved, space.settings, where, ran)
    replayed, widened = space_problems(trials, space.define, where)
    problems += replayed
    if problems:
        raise refuse("; ".join(problems), name)
    return widened, ignored


def grew_line(record: dict | None) -> str | None:
    """The summary's line: 'Grew from 16 to 24 trials (grow-1); the ensemble is built from all 24.'"""
    done = growths(record)
    if not done:
        return None
    steps = " and ".join(f"{g['from']} to {g['to']}" for g in done)
    names = ", ".join(g["experiment"] for g in done)
    return (f"Grew from {steps} trials ({names}: every earlier trial kept, in the same study); the leaderboard and "
            f"the ensemble are built from all {done[-1]['to']}.")


def check_finished(out_dir, ran: int, name: str, storage_flag: str = "") -> None:
    """A search grows once every trial it has asked for has ended (its leaderboard says so)."""
    import pandas as pd

    from core.files import LEADERBOARD_CSV
    from core.trial_status import TrialStatus

    path = out_dir / LEADERBOARD_CSV
    try:
        table = pd.read_csv(path, dtype={"trial_id": str, "status": str})
        ended = int(sum(TrialStatus(status).ended for status in table["status"]))
    except (OSError, ValueError, KeyError, UnicodeDecodeError):
        ended = -1
    if ended < ran:
        left = f"{ran - max(ended, 0)} of its {ran} trial(s) have not finished" if ended >= 0 else \
            f"it has no readable {LEADERBOARD_CSV} (it never ended)"
        raise GrowthError(f"--grow: the search {name!r} has not ended ({left}); a search grows once it has. "
                          f"Continue it first: python search/run.py --name {name} --resume{storage_flag} (with a "
                          "larger budget if the budget stopped it), then grow it.")


def plan_growth(args, saved: dict, out_dir, loaded):
    """The plan's side of --grow (search/plan.py): (the space the growth runs, {"entry": its plan.json entry,
    "widened": the distributions the study must record anew}). Refuses, before anything is written, what cannot
    grow. loaded: --space's file as written, or the run's copy with the search's settings."""
    from pathlib import Path

    from search.space_file import SearchSettings
    from search.study import StudyError, load_study

    name = saved.get("name") or Path(out_dir).name
    settings = saved["settings"]
    ran = int(settings["num_samples"])
    storage = saved.get("storage") or ""
    storage_flag = f" --storage {storage}" if "://" in storage or Path(storage) != Path("results").resolve() else ""
    if saved.get("smoke_test"):
        raise refuse("a --smoke-test search (1 epoch at <= 64 px) does not grow into a real one", name)
    check_finished(Path(out_dir), ran, name, storage_flag)
    check_samples(args.num_samples, ran, name)
    widened: dict = {}
    if args.space:
        default_data = SearchSettings().data
        data = loaded.settings.data
        if data != default_data and _data_spec(data) != saved["data"]:
            raise refuse(f"{args.space} sets data {data!r}, another dataset than the {saved['data']} the search's "
                         f"{ran} trials were trained and scored on", name)
        try:
            trials = load_study(Path(out_dir)).get_trials(deepcopy=False)
        except StudyError as err:
            raise GrowthError(f"--grow --space needs the search's study to check the wider space against: {err}") \
                from None
        widened, ignored = check_space(loaded, settings, trials, ran, name)
        if ignored:
            print(f"Note: --grow keeps the search's own settings; {args.space} differs on {', '.join(ignored)}: "
                  "the search's are used.")
    try:
        space = loaded.replace_settings(**{**settings, "num_samples": int(args.num_samples)})
    except UserError as err:
        raise GrowthError(f"--grow: the search's settings do not fit {loaded.path}: {err}") from None
    entry = growth_entry(saved, to=int(args.num_samples), space_file=str(args.space) if args.space else None)
    return space, {"entry": entry, "widened": widened}


def _data_spec(spec: str) -> str:
    from pathlib import Path

    return spec if spec.startswith("builtin:") else str(Path(spec).resolve())


# --- the driver's side, with Ray up (search/execute.py)

class Growth:
    """The experiment a growth runs its trials in, for search/tuner.py: its name, the run's study, how many
    trials, and the earlier trials' values per epoch (ASHA's rungs start from them)."""

    def __init__(self, entry: dict, study_name: str, histories: dict[str, dict[int, float]]):
        self.experiment, self.study_name = entry["experiment"], study_name
        self.trials = int(entry["to"]) - int(entry["from"])
        self.histories = histories

    def seed(self, scheduler, maximize: bool) -> None:
        from compat.ray_internals import CompatError, seed_asha_rungs

        try:
            seed_asha_rungs(scheduler, self.histories, maximize)
        except CompatError as err:
            print(f"Note: {err}")


def results_of(experiment_path: str, space):
    """An ended experiment's ResultGrid, as Tuner.get_results() builds it, without restoring (or fitting) it."""
    from ray import tune

    s = space.settings
    return tune.ResultGrid(tune.ExperimentAnalysis(experiment_path, default_metric=s.metric, default_mode=s.mode))


def histories(grids, metric: str) -> dict[str, dict[int, float]]:
    """trial id -> {epoch: its metric}, for every trial of `grids` (ResultGrids)."""
    out: dict[str, dict[int, float]] = {}
    for grid in grids:
        for result in grid:
            frame = result.metrics_dataframe
            if frame is None or metric not in frame or "epoch" not in frame:
                continue
            trial_id = (result.metrics or {}).get("trial_id") or str(result.path).rstrip("/").rsplit("/", 1)[-1]
            history: dict[int, float] = {}
            for epoch, value in zip(frame["epoch"], frame[metric]):
                if epoch == epoch and value == value:  # not NaN (a fatal error's row)
                    history.setdefault(int(epoch), float(value))
            out[trial_id] = history
    return out


def start(plan) -> None:
    """Under the run lock, before the growth's first trial: the wider space becomes the run's space.py (the one
    before kept as space.before-grow-K.py), the study records the widened distributions (search/study.py; the
    file before kept as optuna_study.before-grow-K.log), and plan.json the growth and the new total, so that
    --resume continues it and `python -m ensemble` waits for it. Each file is replaced whole."""
    import json
    import shutil

    from core.atomic import write_text
    from core.files import PLAN_FILE, SPACE_COPY
    from search.study import rewrite_distributions

    out_dir, entry = plan.out_dir, plan.grow
    k = entry["experiment"]
    copy = out_dir / SPACE_COPY
    if plan.space.path.resolve() != copy.resolve():
        source = plan.space.path.read_text(encoding="utf-8-sig")
        if source != copy.read_text(encoding="utf-8-sig"):
            before = out_dir / f"space.before-{k}.py"
            if not before.exists():
                shutil.copy2(copy, before)
            write_text(copy, source)
    if plan.widened:
        rewrite_distributions(out_dir, plan.widened, out_dir / f"optuna_study.before-{k}.log")
        print(f"Study: {', '.join(f'{n} now {describe(d)}' for n, d in sorted(plan.widened.items()))} on every "
              f"trial (the study before: optuna_study.before-{k}.log).")
    record = json.loads((out_dir / PLAN_FILE).read_text())
    record["settings"]["num_samples"] = entry["to"]
    record[GROWTH_KEY] = [*growths(record), entry]
    record["budget"] = plan.budget
    record["ended_by_budget"] = False
    write_text(out_dir / PLAN_FILE, json.dumps(record, indent=2, sort_keys=True))
