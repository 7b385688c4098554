"""The refit's training: one Ray Tune experiment, a fixed grid of (candidate config, fold or bag) trials, run
with the search's trainable code and resources and stored next to the search (STORAGE/<name>/refit-<tag>).

No searcher and no ASHA: every trial runs the epochs it was given. Running the same refit again restores the
experiment (Tuner.restore): finished models are kept, interrupted or failed ones continue from their last
checkpoint, and a finished refit only hands back its checkpoints. Ray is imported only here, inside the
functions, so the ensemble's driver modules stay light; torch is imported only in the trial's worker.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

from core.atomic import write_text
from core.storage import join_uri
from core.torch_free import import_tensorboardx_without_torch
from core.trial_status import FATAL_ERROR, error_reason
from core.errors import EnsembleError
from ensemble.tasks import Resources


def run_refit_trials(jobs: list[dict], *, storage_path: str, name: str, resources: Resources, plan_file: Path,
                     max_failures: int = 2, max_concurrent: int | None = None, callbacks=(),
                     continue_hint: str = "", say: Callable[[str], None] = print) -> dict[str, str]:
    """Train every job (or resume the experiment that is training them); returns {job name: final checkpoint
    path}. Raises EnsembleError when the recorded refit was planned differently, or when models are left
    unfinished (interrupted) or failed, naming them and how to continue (`continue_hint`: another command
    that does)."""
    from ray import tune  # here, not at the top: `python -m ensemble` without --refit never needs Ray
    from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback

    from worker.tune_trial import refit_trial

    import_tensorboardx_without_torch()  # Tune's TensorBoard logger would otherwise load torch in the driver
    experiment = join_uri(storage_path, name)
    trainable = tune.with_resources(refit_trial, {"cpu": resources.num_cpus, "gpu": resources.num_gpus})
    if tune.Tuner.can_restore(experiment):
        _check_same_plan(plan_file, jobs, experiment)
        say(f"Resuming the refit in {experiment}: finished models are kept, unfinished ones continue.")
        tuner = tune.Tuner.restore(experiment, trainable=trainable, resume_unfinished=True, resume_errored=True)
    else:
        plan_file.parent.mkdir(parents=True, exist_ok=True)
        write_text(plan_file, json.dumps(jobs, indent=1))
        say(f"Refit: training {len(jobs)} models in {experiment}")
        tuner = tune.Tuner(
            trainable,
            param_space={"job": tune.grid_search(jobs)},
            # Every model asks for the same resources: an actor trains one after another without re-importing
            # torch and timm for each (seconds per model).
            tune_config=tune.TuneConfig(num_samples=1, max_concurrent_trials=max_concurrent, reuse_actors=True,
                                        trial_dirname_creator=lambda trial: trial.config["job"]["name"]),
            run_config=tune.RunConfig(
                name=name, storage_path=storage_path,
                checkpoint_config=tune.CheckpointConfig(num_to_keep=1),  # the final epoch's model is the fold model
                failure_config=tune.FailureConfig(max_failures=max_failures),
                # CSV and JSON loggers as a search has them (its TensorBoard logger may come in `callbacks`)
                callbacks=[CSVLoggerCallback(), JsonLoggerCallback(), *callbacks], verbose=0),
        )
    return _finished_checkpoints(tuner.fit(), jobs, experiment, continue_hint)


def _check_same_plan(plan_file: Path, jobs: list[dict], experiment: str) -> None:
    try:
        recorded = json.loads(plan_file.read_text())
    except (OSError, ValueError):
        return  # no record on this machine: the trials' own configs are compared after fit
    if recorded != jobs:
        raise EnsembleError(
            f"The refit in {experiment} was started with other models ({len(recorded)} recorded in {plan_file}, "
            f"{len(jobs)} asked now: different candidates, epochs or data). Re-run it with the options it was "
            f"started with to continue it, or delete {experiment} and {plan_file} to refit from scratch.")


def _finished_checkpoints(results, jobs: list[dict], experiment: str, continue_hint: str) -> dict[str, str]:
    wanted = {job["name"]: job for job in jobs}
    found, failed, unfinished, seen, fatal = {}, [], [], set(), False
    for result in results:
        job = (result.config or {}).get("job", {})
        if job.get("name") not in wanted or job != wanted[job["name"]]:
            raise EnsembleError(f"The refit in {experiment} holds a model ({job.get('name')}) that this refit "
                                f"did not ask for; delete {experiment} to refit from scratch.")
        seen.add(job["name"])
        metrics = result.metrics or {}
        epochs = int(metrics.get("epoch", metrics.get("training_iteration", 0)) or 0)  # the trial's own count
        fatal = fatal or bool(metrics.get(FATAL_ERROR))
        if result.error is not None or metrics.get(FATAL_ERROR):
            failed.append(f"{job['name']} ({metrics.get(FATAL_ERROR) or error_reason(result.error)})")
        elif result.checkpoint is None or epochs < job["config"]["epochs"]:
            unfinished.append(f"{job['name']} ({epochs} of {job['config']['epochs']} epochs)")
        else:
            found[job["name"]] = result.checkpoint.path
    unfinished += [f"{name} (not started)" for name in wanted if name not in seen]
    if failed or unfinished:
        raise EnsembleError(
            f"The refit finished {len(found)} of {len(jobs)} models; "
            + (f"failed: {', '.join(failed)}; " if failed else "")
            + (f"unfinished: {', '.join(unfinished)}; " if unfinished else "")
            + f"its state is saved in {experiment}. Run the same command again to continue it (finished "
              f"models are kept; failed ones resume from their last checkpoint){continue_hint}."
            + (f" Config and data errors are not retried: fix them, then delete {experiment} to refit."
               if fatal else ""))
    return found
