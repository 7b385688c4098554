"""Run a checked Plan on Ray: start or join Ray, fit (or resume) the Tuner, write the outputs, ensemble the
top trials (as Ray tasks, before Ray shuts down), summarise."""
from __future__ import annotations

import json
import sys

import ray

from search.concurrency import resolve_concurrency
from search.leaderboard import build_leaderboard
from search.outputs import summary, write_leaderboard, write_run_files
from search.study import dashboard_command, study_file
from search.tensorboard_hparams import HParamsLoggerCallback, import_tensorboardx_without_torch
from search.tuner import build_tuner, restore_tuner


def execute(plan) -> int:
    import_tensorboardx_without_torch()
    write_run_files(plan.out_dir, plan.space.path)
    owns_ray = not ray.is_initialized()  # tests and notebooks may have started Ray already
    if owns_ray:
        ray.init(address=plan.address, logging_level="WARNING")
    try:
        return _run(plan)
    finally:
        if owns_ray:  # only now: the ensemble stage scores its members as Ray tasks on the cluster
            ray.shutdown()


def _run(plan) -> int:
    try:
        if plan.resume:
            tuner = restore_tuner(plan.space, plan.experiment_path)
        else:
            concurrency = resolve_concurrency(plan.space.settings, nodes=ray.nodes())
            print(f"Concurrency: {concurrency.describe()}")
            tuner = build_tuner(plan.space, name=plan.name, storage=plan.storage, data=plan.data,
                                max_concurrent=concurrency.trials, callbacks=[HParamsLoggerCallback()],
                                study_path=study_file(plan.out_dir))
        results = tuner.fit()
    except KeyboardInterrupt:
        print(f"\nInterrupted. Trials and searcher state are saved. To continue: {plan.resume_command}", file=sys.stderr)
        return 130

    s = plan.space.settings
    table = build_leaderboard(results, plan.space, plan.space.trial_config({}, plan.data))
    best_config = None
    finished = results.num_terminated
    if len(table) and not table.iloc[0]["ended"].startswith("error"):
        best_config = _config_of(results, table.iloc[0]["trial_id"])
    write_leaderboard(plan.out_dir, table, best_config)
    unfinished = s.num_samples - finished - results.num_errors
    if plan.ensemble_top_k and best_config is not None and unfinished <= 0:  # an interrupted search ensembles on --resume
        _ensemble(plan)
    _report(plan)
    print()
    print(summary(table, metric=s.metric, max_epochs=s.max_epochs, out_dir=plan.out_dir,
                  storage_dir=plan.experiment_path))
    if unfinished > 0:
        print(f"\nThe search stopped with {unfinished} trial(s) not run or not finished. To continue it: "
              f"{plan.resume_command}", file=sys.stderr)
        return 130
    return 0


def _ensemble(plan) -> None:
    """The search's last stage; its problems (e.g. no DATA/test) are reported, never fail the search."""
    from ensemble.build import build_ensemble
    from ensemble.tasks import Resources
    from trainable.errors import UserError

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


def _report(plan) -> None:
    """What the search learned (search/report.py); a report that cannot be drawn never fails the search."""
    from search.report import write_report  # matplotlib: loaded only once the trials are done

    try:
        write_report(plan.out_dir)
        print(f"Optuna study: {dashboard_command(plan.out_dir)}")
    except Exception as err:
        print(f"Report: not written ({type(err).__name__}: {err}).")


def _config_of(results, trial_id: str) -> dict:
    for result in results:
        if (result.metrics or {}).get("trial_id") == trial_id:
            return json.loads(json.dumps(result.config))  # plain JSON types
    return {}
