"""One row per trial from a Ray Tune ResultGrid: rank, hyperparameters, best metrics, how it ended, cost."""
from __future__ import annotations

import pandas as pd

from ray import tune

from core.trial_status import FATAL_ERROR, TrialStatus, error_reason
from search.space_file import Space

TRIAL_COLUMNS = ["rank", "trial_id", "status", "reason", "epochs", "best_epoch"]
COST_COLUMNS = ["param_count", "trial_hours", "accelerator_hours", "cpu_hours", "cost_usd", "best_checkpoint"]


def build_leaderboard(results, space: Space, base_config: dict, usd_per_hour: float | None = None) -> pd.DataFrame:
    """results: a ResultGrid, or a list of them (a grown search: its first experiment's and each growth's);
    usd_per_hour: the price of an accelerator-hour (a CPU-hour on a CPU-only search), for cost_usd."""
    s = space.settings
    grids = results if isinstance(results, (list, tuple)) else [results]
    tune_status = {k: v for grid in grids for k, v in _tune_statuses(grid).items()}
    rows = [_row(result, s, base_config, tune_status, usd_per_hour) for grid in grids for result in grid]
    if not rows:
        return pd.DataFrame(columns=TRIAL_COLUMNS)
    table = pd.DataFrame(rows)
    best = f"best_{s.metric}"
    table["_failed"] = table["status"] == TrialStatus.FAILED.value
    table = table.sort_values(["_failed", best], ascending=[True, s.mode == "min"], na_position="last")
    table = table.drop(columns="_failed").reset_index(drop=True)
    table.insert(0, "rank", range(1, len(table) + 1))
    metric_cols = [c for c in table.columns if c.startswith("best_") and c != "best_epoch" and c != "best_checkpoint"]
    hyper_cols = [c for c in table.columns if c not in TRIAL_COLUMNS + COST_COLUMNS + metric_cols]
    return table[TRIAL_COLUMNS + metric_cols + hyper_cols + COST_COLUMNS]


def _row(result, settings, base_config: dict, tune_status: dict[str, str], usd_per_hour: float | None = None) -> dict:
    metrics = result.metrics or {}
    history = result.metrics_dataframe
    trial_id = metrics.get("trial_id") or _trial_id_from_path(result.path)
    searched = {k: v for k, v in (result.config or {}).items() if k not in base_config or base_config[k] != v}
    row = {"trial_id": trial_id, **searched}
    epochs = int(metrics.get("training_iteration", 0) or 0)
    if metrics.get(FATAL_ERROR):  # its last result is the error report, not an epoch
        epochs = max(epochs - 1, 0)
        if history is not None and FATAL_ERROR in history:
            history = history[history[FATAL_ERROR].isna()]
    elif metrics.get("epoch") is not None:  # the trial's own count: Tune's runs ahead after a checkpoint fallback
        epochs = int(metrics["epoch"])
    row["epochs"] = epochs
    if history is not None and settings.metric in history and history[settings.metric].notna().any():
        best_idx = history[settings.metric].idxmax() if settings.mode == "max" else history[settings.metric].idxmin()
        best_row = history.loc[best_idx]
        row[f"best_{settings.metric}"] = float(best_row[settings.metric])
        for key in ("val_acc", "val_macro_f1", "val_top5_acc", "val_loss"):
            if key in history and key != settings.metric:
                row[f"best_{key}"] = float(best_row[key])  # at the best epoch, not each key's own best
        counter = "epoch" if "epoch" in best_row and pd.notna(best_row["epoch"]) else "training_iteration"
        row["best_epoch"] = int(best_row[counter])
    else:
        row[f"best_{settings.metric}"] = float("nan")
        row["best_epoch"] = 0
    status, reason = trial_outcome(result, epochs, settings.max_epochs, tune_status.get(trial_id))
    row["status"], row["reason"] = status.value, reason
    row["param_count"] = metrics.get("param_count")
    hours = float(metrics.get("time_total_s", 0.0) or 0.0) / 3600
    row["trial_hours"] = round(hours, 5)
    row["accelerator_hours"] = round(hours * settings.gpus_per_trial, 5)
    row["cpu_hours"] = round(hours * settings.cpus_per_trial, 5)  # what a CPU-only search spends
    spent = row["accelerator_hours"] if settings.gpus_per_trial else row["cpu_hours"]
    row["cost_usd"] = round(spent * usd_per_hour, 4) if usd_per_hour is not None else float("nan")
    best = _best_checkpoint(result, settings)
    row["best_checkpoint"] = best
    return row


def trial_outcome(result, epochs: int, max_epochs: int, tune_status: str | None) -> tuple[TrialStatus, str]:
    """(status, reason). Tune marks a trial's last result `done` only when the trial really ended (returned, or
    ASHA stopped it); after Ctrl-C Tune stops the running trials as TERMINATED too, so status alone would call
    them finished."""
    metrics = result.metrics or {}
    if metrics.get(FATAL_ERROR):
        return TrialStatus.FAILED, str(metrics[FATAL_ERROR])
    if result.error is not None:
        return TrialStatus.FAILED, error_reason(result.error)
    if not metrics.get("done"):
        if epochs == 0 and tune_status in (None, "PENDING"):
            return TrialStatus.NOT_STARTED, ""
        return TrialStatus.INTERRUPTED, f"the search stopped after epoch {epochs}; --resume continues it"
    if epochs >= max_epochs:
        return TrialStatus.COMPLETED, ""
    return TrialStatus.STOPPED_EARLY, f"stopped by ASHA at epoch {epochs}"


def _tune_statuses(results) -> dict[str, str]:
    """Tune's own status per trial id (PENDING, RUNNING, TERMINATED, ...), from the experiment's saved state
    (tune.ExperimentAnalysis; the ResultGrid has no public accessor). A trial with no result and no status
    counts as not started."""
    if not len(results):
        return {}
    try:
        analysis = tune.ExperimentAnalysis(results.experiment_path, storage_filesystem=results.filesystem)
    except Exception:  # no saved state yet (a search stopped before Tune's first snapshot)
        return {}
    return {trial.trial_id: trial.status for trial in analysis.trials}


def _best_checkpoint(result, settings) -> str:
    candidates = result.best_checkpoints or []
    if not candidates:
        return result.checkpoint.path if result.checkpoint else ""
    pick = max if settings.mode == "max" else min
    checkpoint, _ = pick(candidates, key=lambda pair: pair[1].get(settings.metric, float("nan")))
    return checkpoint.path


def _trial_id_from_path(path: str) -> str:
    return str(path).rstrip("/").rsplit("/", 1)[-1]


def to_markdown(table: pd.DataFrame) -> str:
    return table.drop(columns=["best_checkpoint"], errors="ignore").to_markdown(index=False, floatfmt=".4g")
