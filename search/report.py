"""What the search learned, from its Optuna study: results/<name>/report/.

    python search/report.py results/<name>

Written at the end of every search (search/execute.py) and on demand for an existing run. From the
study file (search/study.py) and, when present, ensemble.json:

    importance.png            PED-ANOVA importance of every parameter, conditional ones included (the page's one)
    importance_fanova.png     fANOVA importance of the parameters every trial has (a second opinion, not on the page)
    parallel_coordinate.png   every trial's value against the TOP_PARAMETERS most important parameters
    learning_curves.png       every trial's per-epoch value; x marks the epoch where ASHA stopped it
    intermediate_values.png   Optuna's view of the same curves
    best_vs_epochs.png        best value so far against the epochs the search had spent
    optimization_history.png  value per trial, in the order they were asked
    importance.csv            both evaluators' figures, per branch for fANOVA
    report.html               one page that opens offline (images embedded) and starts with the answer: the
                              leaderboard's top, the best config and its command, the ensemble's members, CV scores
                              and confusion matrix; then what mattered, each section with a line on how to read it
and the key pictures in TensorBoard under report/ (results/<name>/report/tensorboard).

Trials stopped by ASHA have no final value, so importance is measured at one fidelity: every trial's
value at the deepest epoch (rung) that at least half of the finished trials reached. Conditional
parameters: PED-ANOVA handles them natively (Optuna 5's conditional PED-ANOVA); fANOVA needs every
trial to have every parameter, so it is run on all trials for the unconditional parameters and, per
branch, on the trials of that branch for its parameters (table only). With fewer than MIN_TRIALS_FOR_IMPORTANCE
trials at that epoch the page says plainly that the ranking is a hint. Trials are named everywhere as the
leaderboard does (the Tune id) with the study's number beside it (#3: what optuna-dashboard shows).
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
MIN_TRIALS_FOR_IMPORTANCE = 20  # below this, parameter rankings move with every few trials added: a caveat
TOP_PARAMETERS = 6              # axes of the parallel-coordinates plot: more are unreadable in one figure
LEADERBOARD_ROWS = 5


@dataclass
class Report:
    run_dir: Path
    rung: int = 0
    rung_trials: int = 0                           # trials that reached the rung: what importance is computed on
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
    report.rung_trials = len(rung_study.get_trials(deepcopy=False))
    figures = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Optuna flags its matplotlib backend and PED-ANOVA as experimental
        report.importance = importance_table(rung_study, report)
        figures["importance"] = lambda: optuna.visualization.matplotlib.plot_param_importances(
            rung_study, evaluator=PedAnovaImportanceEvaluator())
        figures["importance_fanova"] = lambda: optuna.visualization.matplotlib.plot_param_importances(
            rung_study, evaluator=FanovaImportanceEvaluator(seed=0))
        figures["parallel_coordinate"] = lambda: parallel_coordinate(rung_study, top_parameters(report.importance))
        figures["intermediate_values"] = lambda: optuna.visualization.matplotlib.plot_intermediate_values(study)
        figures["optimization_history"] = lambda: optimization_history(rung_study, report.rung,
                                                                       _metric_name(study), study.direction)
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
    with warnings.catch_warnings():  # experimental since Optuna 3.2: the plots label their axis with it
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        copy.set_metric_names([f"{_metric_name(study)} at epoch {rung}"])
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


def trial_label(trial) -> str:
    """The leaderboard's id and the study's number (optuna-dashboard's): 'e26dc075 #3'."""
    return f"{_tune_id(trial)} #{trial.number}" if "ray_trial_id" in trial.user_attrs else f"#{trial.number}"


def top_parameters(importance: pd.DataFrame, n: int = TOP_PARAMETERS) -> list[str] | None:
    """The n most important parameters by PED-ANOVA, or None (every parameter) when there is no ranking."""
    ped = importance[importance["evaluator"] == "PED-ANOVA"] if len(importance) else importance
    if not len(ped):
        return None
    return list(ped.sort_values("importance", ascending=False)["parameter"].head(n))


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
            ax.annotate(trial_label(t), (steps[-1], t.intermediate_values[steps[-1]]), fontsize=7)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch")
    ax.set_ylabel(_metric_name(study))
    ax.set_title("Learning curves (x: stopped by ASHA; thick: ensemble member)")
    if labelled:
        ax.legend(loc="best")
    return fig


def parallel_coordinate(rung_study: optuna.Study, params: list[str] | None):
    ax = optuna.visualization.matplotlib.plot_parallel_coordinate(rung_study, params=params)
    ax.set_title(f"Each trial's value against its {'top ' + str(len(params)) + ' ' if params else ''}parameters"
                 " (lines: trials; colour: value)")
    return ax


def optimization_history(rung_study: optuna.Study, rung: int, metric: str, direction):
    """Each trial's value at the report's epoch against its number in the study (as optuna-dashboard numbers it),
    with the best so far."""
    points = sorted((t.user_attrs["number"], t.value) for t in rung_study.get_trials(deepcopy=False))
    better = max if direction == optuna.study.StudyDirection.MAXIMIZE else min
    best, bests = None, []
    for _, value in points:
        best = value if best is None else better(best, value)
        bests.append(best)
    fig = Figure(figsize=(7, 4), layout="constrained")
    ax = fig.add_subplot()
    ax.plot([n for n, _ in points], [v for _, v in points], "o", label=f"{metric} at epoch {rung}")
    ax.step([n for n, _ in points], bests, where="post", color="tab:red", label="best so far")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("trial number in the study (#, as optuna-dashboard shows it)")
    ax.set_ylabel(f"{metric} at epoch {rung}")
    ax.set_title("Value per trial, in the order they were asked")
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

TITLES = {"importance": "What mattered: parameter importance (PED-ANOVA)",
          "parallel_coordinate": "Each trial against its most important parameters",
          "learning_curves": "Learning curves", "intermediate_values": "Every trial's value per epoch (Optuna's view)",
          "best_vs_epochs": "Best value against the training spent",
          "optimization_history": "Value per trial, in the order they were asked"}
HOW_TO_READ = {
    "importance": "Longer bar: the parameter's value changed the trials' score more. A ranking of the trials run, "
                  "not a law: it moves as trials are added.",
    "parallel_coordinate": "One line per trial through its parameter values; the colour is its score. Lines of the "
                           "best colour bunching on an axis: a value range that worked.",
    "learning_curves": "One line per trial; x: where ASHA stopped a trial; thick lines: the ensemble's members.",
    "intermediate_values": "What Optuna was told: the same curves, as the pruner saw them.",
    "best_vs_epochs": "How fast the search found its best: a curve that flattens early says more trials would add "
                      "little.",
    "optimization_history": "Dots: each trial at the same epoch; the line: the best so far. Dots rising after the "
                            "random startup trials: TPE's model is helping.",
}


def render_html(report: Report, study: optuna.Study) -> str:
    def img_tag(path: Path, alt: str) -> str:
        data = base64.b64encode(path.read_bytes()).decode()
        return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}" style="max-width:100%">'

    def section(name: str) -> str:
        return (f'<h2 id="{name}">{html.escape(TITLES.get(name, name.replace("_", " ")))}</h2>'
                f'<p class="how">How to read: {html.escape(HOW_TO_READ.get(name, ""))}</p>'
                + img_tag(report.pictures[name], TITLES.get(name, name)))

    counts = ", ".join(f"{n} {s.lower()}" for s, n in report.counts.items())
    parts = [f"<h1>Search {html.escape(report.run_dir.name)}: the answer first</h1>",
             f"<p>Study {html.escape(study.study_name)}: {counts}. Trials are named as in the leaderboard, with the "
             "study's number (#) that optuna-dashboard shows.</p>"]
    parts += _answer_sections(report, study, img_tag)
    caveat = (f" Only {report.rung_trials} trials reached that epoch: fewer than {MIN_TRIALS_FOR_IMPORTANCE}, so "
              "read the ranking as a hint, not a result (run more trials for one)."
              if report.rung_trials < MIN_TRIALS_FOR_IMPORTANCE else "")
    parts.append(f'<h2 id="what-mattered">What mattered</h2><p>Importance at epoch {report.rung}, the deepest epoch '
                 f"at least half of the finished trials reached.{html.escape(caveat)} fANOVA's second opinion is in "
                 "importance.csv and importance_fanova.png.</p>")
    parts += [section(n) for n in PICTURES if n in report.pictures and n != "importance_fanova"]
    if len(report.importance):
        ped = report.importance[report.importance["evaluator"] == "PED-ANOVA"]
        if len(ped):
            parts.append('<h2 id="importance-table">Importance table (PED-ANOVA)</h2>'
                         + ped.to_html(index=False, float_format="%.3f"))
    if report.missing:
        parts.append('<h2 id="not-drawn">Not drawn</h2><ul>' + "".join(
            f"<li>{html.escape(k)}: {html.escape(v)}</li>" for k, v in report.missing.items()) + "</ul>")
    style = ("body{font-family:sans-serif;max-width:1000px;margin:auto} table{border-collapse:collapse} "
             "td,th{border:1px solid #ccc;padding:2px 6px} .how{color:#555;font-style:italic}")
    return ("<!doctype html><html><head><meta charset='utf-8'><title>Search report: "
            f"{html.escape(report.run_dir.name)}</title><style>{style}</style></head><body>"
            + "\n".join(parts) + "</body></html>")


def _answer_sections(report: Report, study: optuna.Study, img_tag) -> list[str]:
    """The leaderboard's top, the best config and how to run it, the ensemble and its confusion matrix."""
    from core.files import BEST_CONFIG, CONFUSION_PNG, LEADERBOARD_CSV

    parts = []
    numbers = {str(t.user_attrs.get("ray_trial_id")): t.number for t in study.get_trials(deepcopy=False)}
    board_path = report.run_dir / LEADERBOARD_CSV
    if board_path.is_file():
        board = pd.read_csv(board_path, dtype={"trial_id": str})
        metric = _metric_name(study)
        shown = [c for c in ("rank", "trial_id", "status", "epochs", f"best_{metric}", "best_epoch", "backbone")
                 if c in board.columns]
        top = board.sort_values("rank").head(LEADERBOARD_ROWS)[shown].copy()
        top.insert(2, "#", [numbers.get(t, "") for t in top["trial_id"]])
        parts.append(f'<h2 id="leaderboard">Leaderboard: the top {len(top)} of {len(board)}</h2>'
                     f'<p class="how">How to read: ranked by best {html.escape(metric)} over the epochs each trial '
                     "ran; stopped_early trials ran fewer epochs (ASHA). Every trial: leaderboard.md.</p>"
                     + top.to_html(index=False, float_format="%.4f"))
    best_path = report.run_dir / BEST_CONFIG
    if best_path.is_file():
        config = json.loads(best_path.read_text())
        parts.append('<h2 id="best-config">Best configuration</h2><p class="how">How to read: the best trial\'s '
                     "whole trial config; train it again (or longer) with the command below.</p>"
                     f"<pre>python -m trainable --config {html.escape(str(best_path))}</pre>"
                     f"<pre>{html.escape(json.dumps(config, indent=2, sort_keys=True))}</pre>")
    manifest_path = report.run_dir / ENSEMBLE_MANIFEST
    try:
        manifest = json.loads(manifest_path.read_text())
    except (OSError, ValueError):
        manifest = None
    if manifest:
        members = pd.DataFrame([{"trial_id": m["trial_id"], "#": numbers.get(m["trial_id"], ""),
                                 "backbone": m.get("backbone"), "weight": m.get("weight"),
                                 "val_acc alone": m.get("val_acc")} for m in manifest.get("members", [])])
        scores = pd.DataFrame([{"strategy": name, "members": v.get("members"),
                                **{f"cv_{k}": v.get("cv", {}).get(k) for k in ("acc", "macro_f1")},
                                **{f"val_{k}": v.get("val", {}).get(k) for k in ("acc", "macro_f1")}}
                               for name, v in manifest.get("scores", {}).get("strategies", {}).items()])
        parts.append(f'<h2 id="ensemble">Ensemble: {html.escape(str(manifest.get("strategy")))} of '
                     f'{len(members)} member(s)</h2><p class="how">How to read: cv_ scores are out-of-fold on val '
                     "(the honest estimate); val_ scores are fitted and scored on the same images. The strategy "
                     "with the best cv score was chosen.</p>" + members.to_html(index=False, float_format="%.4f")
                     + scores.to_html(index=False, float_format="%.4f"))
    confusion = report.run_dir / CONFUSION_PNG
    if confusion.is_file():
        parts.append('<h2 id="confusion">Confusion matrix of the ensemble on val</h2><p class="how">How to read: '
                     "row: the true class, column: the predicted one; a dark cell off the diagonal is a pair of "
                     "classes the ensemble confuses.</p>" + img_tag(confusion, "confusion matrix"))
    elif manifest is None:
        parts.append('<h2 id="confusion">Confusion matrix</h2><p>Not drawn: the search built no ensemble (its '
                     f"predictions on val draw it); build one with python -m ensemble {html.escape(str(report.run_dir))}."
                     "</p>")
    return parts


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
