"""What the search learned, from its Optuna study: results/<name>/report/.

    python search/report.py results/<name>

Written at the end of every search (search/execute.py) and on demand for an existing run. From the
study file (search/study.py) and, when present, ensemble.json:

    importance.png            PED-ANOVA importance of every parameter, conditional ones included
    importance_fanova.png     fANOVA importance of the parameters every trial has
    parallel_coordinate.png   every trial's parameters against its value
    learning_curves.png       every trial's per-epoch value; x marks the epoch where ASHA stopped it
    intermediate_values.png   Optuna's view of the same curves
    best_vs_epochs.png        best value so far against the epochs the search had spent
    optimization_history.png  value per trial, in the order they were asked
    importance.csv            both evaluators' figures, per branch for fANOVA
    report.html               all of it on one page that opens offline (images embedded)
and the key pictures in TensorBoard under report/ (results/<name>/report/tensorboard).

Trials stopped by ASHA have no final value, so importance is measured at one fidelity: every trial's
value at the deepest epoch (rung) that at least half of the finished trials reached. Conditional
parameters: PED-ANOVA handles them natively (Optuna 5's conditional PED-ANOVA); fANOVA needs every
trial to have every parameter, so it is run on all trials for the unconditional parameters and, per
branch, on the trials of that branch for its parameters (table only).
"""
from __future__ import annotations

import argparse
import base64
import html
import io
import json
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path

if __package__ in (None, ""):  # `python search/report.py`: make the repo root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import optuna
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from optuna.importance import FanovaImportanceEvaluator, PedAnovaImportanceEvaluator, get_param_importances
from optuna.trial import TrialState

from core.atomic import write_text
from core.files import ENSEMBLE_MANIFEST, REPORT_DIR
from core.errors import UserError
from core.run_format import check_run_folder
from search.study import StudyError, load_study

optuna.logging.set_verbosity(optuna.logging.WARNING)  # no "study created" line per in-memory copy

PICTURES = ("importance", "importance_fanova", "parallel_coordinate", "learning_curves", "intermediate_values",
            "best_vs_epochs", "optimization_history")
TENSORBOARD_PICTURES = ("importance", "parallel_coordinate", "learning_curves", "best_vs_epochs")


@dataclass
class Report:
    run_dir: Path
    rung: int = 0
    counts: dict = field(default_factory=dict)
    importance: pd.DataFrame = field(default_factory=pd.DataFrame)
    pictures: dict = field(default_factory=dict)   # name -> Path
    missing: dict = field(default_factory=dict)    # name -> why it could not be drawn
    members: list = field(default_factory=list)    # ensemble members (trial ids)

    @property
    def out_dir(self) -> Path:
        return self.run_dir / REPORT_DIR


def write_report(run_dir: Path, say=print) -> Report:
    """Raises StudyError when the run has no study; everything else that cannot be drawn is listed."""
    run_dir = Path(run_dir)
    check_run_folder(run_dir, "its report")
    study = load_study(run_dir)
    report = Report(run_dir)
    report.out_dir.mkdir(parents=True, exist_ok=True)
    trials = study.get_trials(deepcopy=False)
    report.counts = {s.name: sum(t.state == s for t in trials) for s in TrialState if any(t.state == s for t in trials)}
    report.members = _ensemble_members(run_dir)
    report.rung, rung_study = equal_fidelity_study(study)
    figures = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Optuna flags its matplotlib backend and PED-ANOVA as experimental
        report.importance = importance_table(rung_study, report)
        figures["importance"] = lambda: optuna.visualization.matplotlib.plot_param_importances(
            rung_study, evaluator=PedAnovaImportanceEvaluator())
        figures["importance_fanova"] = lambda: optuna.visualization.matplotlib.plot_param_importances(
            rung_study, evaluator=FanovaImportanceEvaluator(seed=0))
        figures["parallel_coordinate"] = lambda: optuna.visualization.matplotlib.plot_parallel_coordinate(rung_study)
        figures["intermediate_values"] = lambda: optuna.visualization.matplotlib.plot_intermediate_values(study)
        figures["optimization_history"] = lambda: optuna.visualization.matplotlib.plot_optimization_history(
            rung_study, target_name=f"value at epoch {report.rung}")
        figures["learning_curves"] = lambda: learning_curves(study, report.members)
        figures["best_vs_epochs"] = lambda: best_vs_epochs(study)
        for name in PICTURES:
            _save(report, name, figures[name])
    write_text(report.out_dir / "importance.csv", report.importance.to_csv(index=False))  # whole, then in place
    _to_tensorboard(report)
    write_text(report.out_dir / "report.html", render_html(report, study))
    say(f"Report of what the search learned: {report.out_dir / 'report.html'}")
    return report


# ------------------------------------------------------------------------------------ data

def equal_fidelity_study(study: optuna.Study) -> tuple[int, optuna.Study]:
    """An in-memory study where every trial that reached the rung is COMPLETE with its value there."""
    finished = [t for t in study.get_trials(deepcopy=False) if t.state in (TrialState.COMPLETE, TrialState.PRUNED)
                and t.intermediate_values]
    reached = sorted((max(t.intermediate_values) for t in finished), reverse=True)
    rung = reached[(len(reached) - 1) // 2] if reached else 0  # the deepest step at least half reached
    copy = optuna.create_study(direction=study.direction)
    for t in finished:
        if rung in t.intermediate_values:
            copy.add_trial(optuna.trial.create_trial(params=t.params, distributions=t.distributions,
                                                     value=t.intermediate_values[rung],
                                                     user_attrs={"number": t.number}))
    return rung, copy


def importance_table(rung_study: optuna.Study, report: Report) -> pd.DataFrame:
    rows = []
    trials = rung_study.get_trials(deepcopy=False)
    if len(trials) < 2:
        report.missing["importance"] = f"{len(trials)} trial(s) reached epoch {report.rung}; importance needs 2 or more"
        return pd.DataFrame(columns=["evaluator", "branch", "trials", "parameter", "importance"])
    try:
        for p, v in get_param_importances(rung_study, evaluator=PedAnovaImportanceEvaluator()).items():
            rows.append({"evaluator": "PED-ANOVA", "branch": "all", "trials": len(trials), "parameter": p, "importance": v})
    except Exception as err:
        report.missing["PED-ANOVA"] = f"{type(err).__name__}: {err}"
    everywhere = set.intersection(*(set(t.params) for t in trials))
    branches: dict[frozenset, list[str]] = {}  # the trials a conditional parameter lives on -> its parameters
    for name in sorted(set().union(*(t.params for t in trials)) - everywhere):
        branches.setdefault(frozenset(t.number for t in trials if name in t.params), []).append(name)
    groups = [("all", sorted(everywhere), len(trials))]
    for nums, names in branches.items():  # the branch's parameters, and the others that vary on it
        on_branch = [t for t in trials if t.number in nums]
        varying = [p for p in sorted(everywhere) if len({repr(t.params[p]) for t in on_branch}) > 1]
        groups.append((" + ".join(names), names + varying, len(nums)))
    for branch, params, n in groups:
        if n < 2 or not params:
            continue
        try:
            fanova = get_param_importances(rung_study, evaluator=FanovaImportanceEvaluator(seed=0), params=params)
        except Exception as err:
            report.missing[f"fANOVA ({branch})"] = f"{type(err).__name__}: {err}"
            continue
        rows += [{"evaluator": "fANOVA", "branch": branch, "trials": n, "parameter": p, "importance": v}
                 for p, v in fanova.items()]
    return pd.DataFrame(rows, columns=["evaluator", "branch", "trials", "parameter", "importance"])


def _ensemble_members(run_dir: Path) -> list[str]:
    path = run_dir / ENSEMBLE_MANIFEST
    try:
        return [m["trial_id"] for m in json.loads(path.read_text())["members"]]
    except (OSError, ValueError, KeyError, TypeError):
        return []


def _tune_id(trial) -> str:
    return str(trial.user_attrs.get("ray_trial_id", f"#{trial.number}"))


# ------------------------------------------------------------------------------------ pictures

def learning_curves(study: optuna.Study, members: list[str]):
    fig = Figure(figsize=(8, 5), layout="constrained")
    ax = fig.add_subplot()
    styles = {TrialState.COMPLETE: ("tab:blue", "ran every epoch"), TrialState.PRUNED: ("tab:orange", "stopped by ASHA"),
              TrialState.FAIL: ("tab:red", "failed"), TrialState.RUNNING: ("tab:gray", "running")}
    labelled = set()
    for t in study.get_trials(deepcopy=False):
        if not t.intermediate_values or t.state not in styles:
            continue
        steps = sorted(t.intermediate_values)
        color, label = styles[t.state]
        member = _tune_id(t) in members
        ax.plot(steps, [t.intermediate_values[s] for s in steps], color=color, alpha=0.9 if member else 0.45,
                lw=2.5 if member else 1.0, label=None if label in labelled else label)
        labelled.add(label)
        if t.state == TrialState.PRUNED:
            ax.plot(steps[-1], t.intermediate_values[steps[-1]], "x", color=color, ms=8)
        if member:
            ax.annotate(_tune_id(t), (steps[-1], t.intermediate_values[steps[-1]]), fontsize=7)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch")
    ax.set_ylabel(_metric_name(study))
    ax.set_title("Learning curves (x: stopped by ASHA; thick: ensemble member)")
    if labelled:
        ax.legend(loc="best")
    return fig


def best_vs_epochs(study: optuna.Study):
    """Best value so far against the epochs spent, trials taken in the order they ended."""
    done = sorted((t for t in study.get_trials(deepcopy=False) if t.intermediate_values and t.datetime_complete),
                  key=lambda t: t.datetime_complete)
    maximize = study.direction == optuna.study.StudyDirection.MAXIMIZE
    spent, best, xs, ys = 0, None, [], []
    for t in done:
        spent += len(t.intermediate_values)
        value = (max if maximize else min)(t.intermediate_values.values())
        best = value if best is None else (max if maximize else min)(best, value)
        xs.append(spent)
        ys.append(best)
    fig = Figure(figsize=(7, 4), layout="constrained")
    ax = fig.add_subplot()
    ax.step(xs, ys, where="post", marker="o")
    ax.set_xlabel("epochs spent (all trials, in the order they ended)")
    ax.set_ylabel(f"best {_metric_name(study)} so far")
    ax.set_title("Best value against the training spent")
    return fig


def _metric_name(study: optuna.Study) -> str:
    return study.user_attrs.get("metric", "value")


def _save(report: Report, name: str, draw) -> None:
    try:
        figure = draw()
    except Exception as err:  # e.g. too few trials for an evaluator: the rest of the report still stands
        report.missing[name] = f"{type(err).__name__}: {err}"
        return
    fig = figure if isinstance(figure, Figure) else figure.get_figure()  # Optuna returns Axes
    path = report.out_dir / f"{name}.png"
    fig.savefig(path, dpi=100, bbox_inches="tight")
    report.pictures[name] = path
    _close(fig)


def _close(fig) -> None:
    import matplotlib.pyplot as plt  # Optuna draws on pyplot figures: release them

    plt.close(fig)


def _to_tensorboard(report: Report) -> None:
    import matplotlib.image

    from core.torch_free import import_tensorboardx_without_torch

    import_tensorboardx_without_torch()  # also when run on demand: the driver never loads torch
    from tensorboardX import SummaryWriter

    logdir = report.out_dir / "tensorboard"
    earlier = list(logdir.glob("events.out.tfevents.*"))  # removed once the new one is written: the current report only
    with SummaryWriter(str(logdir)) as writer:
        for name in TENSORBOARD_PICTURES:
            if name in report.pictures:
                image = matplotlib.image.imread(report.pictures[name])[..., :3]
                writer.add_image(f"report/{name}", image, dataformats="HWC")
    for old in earlier:
        old.unlink(missing_ok=True)


# ------------------------------------------------------------------------------------ the page

def render_html(report: Report, study: optuna.Study) -> str:
    def img(name):
        data = base64.b64encode(report.pictures[name].read_bytes()).decode()
        return f'<h2>{name.replace("_", " ")}</h2><img src="data:image/png;base64,{data}" style="max-width:100%">'

    counts = ", ".join(f"{n} {s.lower()}" for s, n in report.counts.items())
    parts = [f"<h1>What the search learned: {html.escape(report.run_dir.name)}</h1>",
             f"<p>Study {html.escape(study.study_name)}: {counts}. Importance at epoch {report.rung}, the deepest "
             "epoch at least half of the finished trials reached.</p>"]
    if report.members:
        parts.append(f"<p>Ensemble members: {html.escape(', '.join(report.members))}</p>")
    parts += [img(n) for n in PICTURES if n in report.pictures]
    if len(report.importance):
        parts.append("<h2>importance table</h2>" + report.importance.to_html(index=False, float_format="%.3f"))
    if report.missing:
        parts.append("<h2>not drawn</h2><ul>" + "".join(f"<li>{html.escape(k)}: {html.escape(v)}</li>"
                                                         for k, v in report.missing.items()) + "</ul>")
    return ("<!doctype html><html><head><meta charset='utf-8'><title>Search report</title></head>"
            "<body style='font-family:sans-serif;max-width:1000px;margin:auto'>" + "\n".join(parts) + "</body></html>")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python search/report.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dir", type=Path, help="a search's results folder, results/<name>")
    return p


def main(argv=None, prog=None) -> int:
    parser = build_parser()
    parser.prog = prog or parser.prog  # `resnet-search report` (cli/main.py) shows its own name
    args = parser.parse_args(argv)
    try:
        write_report(args.run_dir)
    except StudyError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
