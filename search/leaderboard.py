"""One row per trial from a Ray Tune ResultGrid: rank, hyperparameters, best metrics, how it ended, cost."""
from __future__ import annotations

import pandas as pd

from search.space_file import Space

TRIAL_COLUMNS = ["rank", "trial_id", "ended", "epochs", "best_epoch"]
COST_COLUMNS = ["param_count", "trial_hours", "accelerator_hours", "best_checkpoint"]


def build_leaderboard(results, space: Space, base_config: dict) -> pd.DataFrame:
    s = space.settings
    rows = [_row(result, s, base_config) for result in results]
    if not rows:
        return pd.DataFrame(columns=TRIAL_COLUMNS)
    table = pd.DataFrame(rows)
    best = f"best_{s.metric}"
    table["_failed"] = table["ended"].str.startswith("error")
    table = table.sort_values(["_failed", best], ascending=[True, s.mode == "min"], na_position="last")
    table = table.drop(columns="_failed").reset_index(drop=True)
    table.insert(0, "rank", range(1, len(table) + 1))
    metric_cols = [c for c in table.columns if c.startswith("best_") and c != "best_epoch" and c != "best_checkpoint"]
    hyper_cols = [c for c in table.columns if c not in TRIAL_COLUMNS + COST_COLUMNS + metric_cols]
    return table[TRIAL_COLUMNS + metric_cols + hyper_cols + COST_COLUMNS]


def _row(result, settings, base_config: dict) -> dict:
    metrics = result.metrics or {}
    history = result.metrics_dataframe
    trial_id = metrics.get("trial_id") or _trial_id_from_path(result.path)
    searched = {k: v for k, v in (result.config or {}).items() if k not in base_config or base_config[k] != v}
    row = {"trial_id": trial_id, **searched}
    epochs = int(metrics.get("training_iteration", 0) or 0)
    row["epochs"] = epochs
    if history is not None and settings.metric in history:
        best_idx = history[settings.metric].idxmax() if settings.mode == "max" else history[settings.metric].idxmin()
        best_row = history.loc[best_idx]
        row[f"best_{settings.metric}"] = float(best_row[settings.metric])
        for key in ("val_acc", "val_macro_f1", "val_top5_acc", "val_loss"):
            if key in history and key != settings.metric:
                row[f"best_{key}"] = float(best_row[key])  # at the best epoch, not each key's own best
        row["best_epoch"] = int(best_row["training_iteration"])
    else:
        row[f"best_{settings.metric}"] = float("nan")
        row["best_epoch"] = 0
    row["ended"] = _ended(result, epochs, settings.max_epochs)
    row["param_count"] = metrics.get("param_count")
    hours = float(metrics.get("time_total_s", 0.0) or 0.0) / 3600
    row["trial_hours"] = round(hours, 5)
    row["accelerator_hours"] = round(hours * settings.gpus_per_trial, 5)
    best = _best_checkpoint(result, settings)
    row["best_checkpoint"] = best
    return row


def _ended(result, epochs: int, max_epochs: int) -> str:
    if result.error is not None:
        return f"error: {error_reason(result.error)}"
    if epochs >= max_epochs:
        return "completed"
    if epochs == 0:
        return "not started"
    return f"stopped by ASHA at epoch {epochs}"


def error_reason(error: BaseException) -> str:
    """The root cause in one line: 'NonFiniteLossError: loss is nan at epoch 2' rather than Ray's wrapper."""
    cause = error
    while getattr(cause, "cause", None) is not None:  # RayTaskError -> the user's exception
        cause = cause.cause
    text = str(cause).strip().splitlines()
    last = next((line for line in reversed(text) if line.strip()), type(cause).__name__)
    name = type(cause).__name__
    return last if last.startswith(name) or ":" in last.split(" ")[0] else f"{name}: {last}"


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
