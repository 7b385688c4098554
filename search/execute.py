"""Run a checked Plan on Ray: start or join Ray, fit (or resume) the Tuner, write the outputs, ensemble the
top trials (as Ray tasks, before Ray shuts down), summarise.

Exit codes: 0 the search ended (every trial completed, stopped early or failed, at least one not failed);
1 every trial failed; 130 interrupted (trials left to run: the ensemble waits for --resume).
"""
from __future__ import annotations

import json
import os
import sys
from collections import Counter

import pandas as pd
import ray

from core.errors import UserError
from core.files import LEADERBOARD_CSV
from core.torch_free import import_tensorboardx_without_torch
from core.trial_status import TrialStatus
from ensemble.build import build_ensemble
from ensemble.tasks import Resources
from search.concurrency import resolve_concurrency
from search.leaderboard import build_leaderboard
from search.outputs import summary, tool_command, write_leaderboard, write_run_files
from search.progress import SearchProgress
from search.run_folder import never_started, owned, set_aside_abandoned_start
from search.saved_plan import write_saved_plan
from search import growth, spend
from search.space_file import searched_parameters
from search.study import dashboard_command, study_file
from search.trial_tensorboard import TrialTensorBoard
from search.tuner import build_tuner, fit, restore_tuner

EXIT_ALL_FAILED, EXIT_INTERRUPTED = 1, 130


def execute(plan) -> int:
    with owned(plan):  # before anything is written: a second search of the same name ends here, naming this one
        if plan.grow:  # again, now that the folder is ours: another command may have grown it meanwhile
            growth.check_finished(plan.out_dir, plan.grow["from"], plan.name)
        elif plan.resume and (finished := finished_leaderboard(plan)) is not None:
            return _already_finished(plan, finished)  # touches nothing: no Ray, no file rewritten
        plan._check_existing()  # again, now that the folder is ours
        import_tensorboardx_without_torch()
        owns_ray = not ray.is_initialized()  # tests and notebooks may have started Ray already
        if owns_ray:
            _init_ray(plan)
        try:
            if not plan.resume and never_started(plan.out_dir):
                set_aside_abandoned_start(plan.out_dir)
            write_run_files(plan.out_dir, plan.space.path)  # only once Ray is up: a failed start leaves no run behind
            if not plan.resume:
                write_saved_plan(plan, smoke_test=plan.smoke_test)
            elif plan.grow:
                growth.start(plan)  # the wider space, the study, plan.json: before the growth's first trial
            else:
                spend.record_budget(plan)
            return _run(plan)
        finally:
            if owns_ray:  # only now: the ensemble stage scores its members as Ray tasks on the cluster
                ray.shutdown()


def _init_ray(plan) -> None:
    try:
        # log_level WARNING in every worker too: no "Checkpoint successfully created" line per checkpoint; the
        # trials' own prints (epoch lines, batch progress) still reach this terminal.
        ray.init(address=plan.address, logging_level="WARNING",
                 logging_config=ray.LoggingConfig(encoding="TEXT", log_level="WARNING"))
    except (ConnectionError, RuntimeError, ValueError) as err:  # preflight saw the port open; Ray did not answer
        address = plan.address or os.environ.get("RAY_ADDRESS")
        if not address:
            raise
        first_line = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise UserError(f"--address {address}: could not join the Ray cluster ({first_line}). Check that "
                        "it is a Ray head's GCS address (`ray status` on the head) and, with token auth, that "
                        "RAY_AUTH_TOKEN_PATH points at its token; nothing was written.") from None


def _run(plan) -> int:
    live = spend.live_spend(plan)  # hours and cost spent: the budget's stopper and the status line read it
    # A grown search's trials are in several experiments: the first, then one per growth (search/growth.py);
    # Tune runs the last one, the others have ended.
    *ended, active = plan.experiment_paths
    earlier = [growth.results_of(path, plan.space) for path in ended]
    grow = None
    if ended:
        s = plan.space.settings
        base = plan.space.trial_config({}, plan.data)
        for row in build_leaderboard(earlier, plan.space, base).itertuples():  # the budget counts them too
            live.seconds[str(row.trial_id)], live.epochs[str(row.trial_id)] = row.trial_hours * 3600, row.epochs
        grow = growth.Growth(plan.grow or plan.growths[-1], plan.name, growth.histories(earlier, s.metric))
    try:
        if plan.resume and not plan.grow and _can_restore(active):
            if spend.ended_by_budget(plan):  # its stopper finished Tune's search: open it for the trials left
                from compat.ray_internals import reopen_search

                reopen_search(active)
            tuner = restore_tuner(plan.space, active)
        else:  # a new search, a growth, or a growth stopped before Tune's first saved state
            concurrency = resolve_concurrency(plan.space.settings, nodes=ray.nodes())
            print(f"Concurrency: {concurrency.describe()}")
            s = plan.space.settings
            tensorboard = TrialTensorBoard(metric=s.metric, max_epochs=s.max_epochs,
                                           parameters=searched_parameters(plan.space))
            progress = SearchProgress(metric=s.metric, num_samples=grow.trials if grow else s.num_samples,
                                      max_epochs=s.max_epochs, fields=[spend.SpendFields(plan.name)])
            tuner = build_tuner(plan.space, name=plan.name, storage=plan.experiment_path if grow else plan.storage,
                                data=plan.data, max_concurrent=concurrency.trials, callbacks=[tensorboard, progress],
                                study_path=study_file(plan.out_dir), data_fingerprint=plan.data_fingerprint,
                                grow=grow)
        print(f"Trials run in {active}: watch them with "
              f"{tool_command('tensorboard')} --logdir {plan.experiment_path}")
        spend.REGISTRY[plan.name] = live  # the Tune stopper and callback find it by the run's name
        try:
            results = fit(tuner, plan.space)
        finally:
            spend.REGISTRY.pop(plan.name, None)
    except KeyboardInterrupt:  # a second Ctrl-C: Tune saved its state at the first
        print(f"\nInterrupted. Trials and searcher state are saved. To continue: {plan.resume_command}", file=sys.stderr)
        return EXIT_INTERRUPTED

    s = plan.space.settings
    grids = [*earlier, results]
    table = build_leaderboard(grids, plan.space, plan.space.trial_config({}, plan.data), live.usd_per_hour)
    spend.mark_budget_stops(table, live)
    best_config = None
    if len(table) and TrialStatus(table.iloc[0]["status"]).trained:
        best_config = _config_of(grids, table.iloc[0]["trial_id"])
    write_leaderboard(plan.out_dir, table, best_config)
    summary_text = summary(table, metric=s.metric, max_epochs=s.max_epochs, out_dir=plan.out_dir,
                           storage_dir=plan.experiment_path)
    summary_text += "\n" + spend.spent_line(table, plan)
    unfinished = unfinished_trials(table, s.num_samples)
    spend.record_budget_end(plan, ended=bool(unfinished and live.closed))
    if unfinished and live.closed:  # the budget ended it: a search that ended cleanly, with fewer trials
        print(f"\nThe budget is spent: {unfinished} trial(s) not run. {spend.spent_line(table, plan)}. To continue "
              f"with a larger budget: {plan.resume_command} --budget-gpu-hours HOURS", file=sys.stderr)
    elif unfinished:  # no ensemble, no report: they wait for the trials --resume will finish
        print("\n" + summary_text)
        print(f"\nThe search stopped with {unfinished} trial(s) not run or not finished; no ensemble was built. "
              f"To continue it: {plan.resume_command}", file=sys.stderr)
        return EXIT_INTERRUPTED
    if _all_failed(table):
        print(f"\nerror: {all_failed_message(table, plan.out_dir)}", file=sys.stderr)
        return EXIT_ALL_FAILED
    if plan.ensemble_top_k and best_config is not None:
        _ensemble(plan)
    from search.cleanup import after_ensemble  # only after ensemble.json (and the refit) are written

    kept = after_ensemble(plan, table)
    _report(plan)
    print("\n" + summary(table, metric=s.metric, max_epochs=s.max_epochs, out_dir=plan.out_dir,
                         storage_dir=plan.experiment_path, story=story_lines(plan, table)))
    print(spend.spent_line(table, plan))  # hours and cost spent, then the checkpoint bytes kept
    print(kept)
    return 0


def story_lines(plan, table: pd.DataFrame) -> list[str]:
    """What TPE and the ensemble did, a line each (search/story.py); a story that cannot be read is left out."""
    from search.sampler import startup_trials
    from search.story import ensemble_line, tpe_line
    from search.study import StudyError, load_study

    lines = [growth.grew_line({"growth": [*(plan.growths or []), *([plan.grow] if plan.grow else [])]})]
    try:
        lines.append(tpe_line(load_study(plan.out_dir), startup_trials(plan.space)))
    except (StudyError, OSError, ValueError, KeyError):
        pass
    try:
        lines.append(ensemble_line(plan.out_dir, table))
    except (OSError, ValueError, KeyError):
        pass
    return [line for line in lines if line]


def unfinished_trials(table: pd.DataFrame, num_samples: int) -> int:
    """Trials interrupted, never started, or never created (Tune had not asked the searcher for them yet)."""
    ended = table["status"].map(lambda status: TrialStatus(status).ended) if len(table) else pd.Series([], dtype=bool)
    return int((~ended).sum()) + max(num_samples - len(table), 0)


def finished_leaderboard(plan) -> pd.DataFrame | None:
    """The leaderboard of a search whose every trial had ended when it was written, else None."""
    path = plan.out_dir / LEADERBOARD_CSV
    if not path.is_file():
        return None
    try:
        table = pd.read_csv(path, dtype={"trial_id": str, "status": str, "reason": str})
        table["status"].map(TrialStatus)
    except (ValueError, KeyError, UnicodeDecodeError):  # empty or cut (a full disk): rebuilt from Tune's state
        return None
    return None if unfinished_trials(table, plan.space.settings.num_samples) else table


def _already_finished(plan, table: pd.DataFrame) -> int:
    s = plan.space.settings
    print(f"\nThe search {plan.name!r} has already finished; nothing was run or rewritten.")
    if _all_failed(table):
        print(f"error: {all_failed_message(table, plan.out_dir)}", file=sys.stderr)
        return EXIT_ALL_FAILED
    print(summary(table, metric=s.metric, max_epochs=s.max_epochs, out_dir=plan.out_dir,
                  storage_dir=plan.experiment_path, story=story_lines(plan, table)))
    print(spend.spent_line(table, plan))
    if plan.ensemble_top_k and not (plan.out_dir / "ensemble.json").exists():
        print(f"No ensemble in {plan.out_dir}: build it with python -m ensemble {plan.out_dir}")
    elif plan.refit and not _has_refit(plan.out_dir, plan.refit):  # never dropped without a word
        print(f"--refit {plan.refit} was not run: the search had already finished. Run it on its own with: "
              f"python -m ensemble {plan.out_dir} --refit {plan.refit}")
    return 0


def _has_refit(out_dir, refit: str) -> bool:
    try:
        section = json.loads((out_dir / "ensemble.json").read_text()).get("refit") or {}
    except (OSError, ValueError, AttributeError):
        return False
    scheme, _, count = refit.partition(":")
    return section.get("scheme") == scheme and str(section.get("folds", section.get("bags"))) == count


def _all_failed(table: pd.DataFrame) -> bool:
    return len(table) > 0 and (table["status"] == TrialStatus.FAILED.value).all()


def all_failed_message(table: pd.DataFrame, out_dir) -> str:
    """One message for a search where every trial failed: each distinct reason once, with its count."""
    reasons = Counter(str(reason).strip().splitlines()[0] if isinstance(reason, str) and reason.strip() else "unknown"
                      for reason in table["reason"])
    listed = "; ".join(f"{count} x {reason}" for reason, count in reasons.most_common())
    return (f"All {len(table)} trial(s) failed: {listed}. Fix the cause and start a new search under another "
            f"--name (per-trial reasons: {out_dir / 'leaderboard.md'}).")


def _ensemble(plan) -> None:
    """The search's last stage; its problems (e.g. no DATA/test) are reported, never fail the search."""
    s = plan.space.settings
    print("\nEnsemble of the top trials:")
    try:
        # Ray is still up: members are scored as Ray tasks with the trials' resources, next to their checkpoints.
        build_ensemble(plan.out_dir, top_k=plan.ensemble_top_k, budget_m=s.trial.get("param_budget_m", 100.0),
                       storage=plan.storage, resources=Resources(s.cpus_per_trial, s.gpus_per_trial),
                       refit=plan.refit,
                       refit_tune={"max_failures": s.max_failures, "max_concurrent": s.max_concurrent or None})
    except UserError as err:
        print(f"Ensemble: {err}")
    except KeyboardInterrupt:  # the search is over; only its ensemble (or refit) was cut short
        print(f"\nInterrupted during the ensemble stage; the search's trials are all saved. Build it (a refit "
              f"continues where it stopped) with: python -m ensemble {plan.out_dir}"
              + (f" --refit {plan.refit}" if plan.refit else ""), file=sys.stderr)
        raise SystemExit(EXIT_INTERRUPTED) from None


def _report(plan) -> None:
    """What the search learned (search/report.py); a report that cannot be drawn never fails the search."""
    from search.report import write_report  # matplotlib: loaded only once the trials are done

    try:
        write_report(plan.out_dir)
        print(f"Optuna study: {dashboard_command(plan.out_dir)}")
    except Exception as err:
        print(f"Report: not written ({type(err).__name__}: {err}).")


def _config_of(grids, trial_id: str) -> dict:
    for grid in grids:
        for result in grid:
            if (result.metrics or {}).get("trial_id") == trial_id:
                return json.loads(json.dumps(result.config))  # plain JSON types
    return {}


def _can_restore(experiment_path: str) -> bool:
    from ray import tune

    return tune.Tuner.can_restore(experiment_path)
