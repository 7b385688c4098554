"""The plan's forecast: what the search will cost, before it runs (core/forecast.py holds the arithmetic).

Seconds per epoch come, in this order, from --epoch-seconds (one number, or BACKBONE=S,...), from a short
calibration of each distinct (backbone, sizes, batch) the space samples on this machine when the trials' kind
of device is here (trainable/epoch_timing.py, in a child process: the driver stays torch-free), else they are
unknown and the forecast is in epochs only. A price per GPU-hour comes from --gpu-hour-usd, or from the GPU
worker types of a Ray cluster file (--cluster-yaml) and core/forecast.py's dated price table.

RESNET_SEARCH_CALIBRATE=0 skips the calibration (the test suite sets it: every plan would pay seconds).
"""
from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

from core import forecast as arithmetic
from core.errors import UserError
from search.child_checks import time_epochs
from search.space_file import Space, sample_space, warm_start_configs

CALIBRATION_BUDGET_S = 60   # the child stops starting configs after this; the rest use the slowest timed
CALIBRATION_BATCHES = 3     # timed batches per config, after one warm-up batch each
SPEED_KEYS = ("backbone", "train_size", "eval_size", "batch_size", "loader")  # what moves an epoch's time most


class ForecastError(UserError):
    pass


def parse_epoch_seconds(given: str | None) -> dict | float | None:
    """--epoch-seconds 12  or  --epoch-seconds resnet50=12,resnet18=4."""
    if given is None:
        return None
    try:
        if "=" not in given:
            value = float(given)
            if value <= 0:
                raise ValueError
            return value
        pairs = dict(part.split("=", 1) for part in given.split(",") if part.strip())
        values = {name.strip(): float(s) for name, s in pairs.items()}
        if not values or min(values.values()) <= 0:
            raise ValueError
        return values
    except ValueError:
        raise ForecastError(f"--epoch-seconds {given!r} is not seconds per epoch: give a positive number "
                            "(e.g. --epoch-seconds 40) or BACKBONE=SECONDS pairs (resnet50=40,resnet18=15).") from None


def gpu_price(gpu_hour_usd: float | None, cluster_yaml: Path | None) -> tuple[float | None, str]:
    if gpu_hour_usd is not None:
        if gpu_hour_usd < 0:
            raise ForecastError(f"--gpu-hour-usd is {gpu_hour_usd}, but a price must be >= 0.")
        return gpu_hour_usd, "--gpu-hour-usd"
    if cluster_yaml is None:
        return None, ""
    import yaml

    try:
        config = yaml.safe_load(Path(cluster_yaml).read_text())
    except (OSError, yaml.YAMLError) as err:
        raise ForecastError(f"--cluster-yaml {cluster_yaml}: cannot be read ({type(err).__name__}: {err}); give "
                            "the Ray cluster file the search runs on (e.g. cluster.yaml).") from None
    types = (config or {}).get("available_node_types") or {}
    priced, unknown = {}, []
    for node in types.values():
        if not (node.get("resources") or {}).get("GPU"):
            continue
        instance = (node.get("node_config") or {}).get("InstanceType", "?")
        price = arithmetic.instance_gpu_price(instance)
        if price is None:
            unknown.append(instance)
        else:
            priced[instance] = price
    if unknown or not priced:
        what = f"instance types {', '.join(sorted(set(unknown)))} are not" if unknown else "no GPU worker type is"
        raise ForecastError(f"--cluster-yaml {cluster_yaml}: {what} in the price table (core/forecast.py, "
                            f"{arithmetic.PRICE_TABLE_DATE}); pass --gpu-hour-usd PRICE instead.")
    # The dearest GPU the autoscaler may start: a forecast should not promise the cheap one.
    instance = max(priced, key=priced.get)
    return priced[instance], f"{instance}, {arithmetic.PRICE_TABLE_DATE}"


def forecast(space: Space, data: str, *, concurrency: int, epoch_seconds=None, gpu_hour_usd=None,
             cluster_yaml=None, device_here: bool = True) -> dict:
    """The plan's forecast as plan.json stores it: always "epochs", and "cost" when seconds are known."""
    s = space.settings
    epochs = arithmetic.expected_epochs(s.num_samples, s.grace_period, s.max_epochs, s.reduction_factor,
                                        len(space.warm_starts))
    price, price_source = gpu_price(gpu_hour_usd, cluster_yaml)
    record = {"epochs": {"rungs": epochs.rungs, "reaching": [round(r, 2) for r in epochs.reaching],
                         "trial_epochs": round(epochs.trial_epochs, 2), "full_epochs": epochs.full_epochs}}
    sampled, _ = sample_space(space, 64, data)
    warm = warm_start_configs(space, data)
    seconds, start_s, source = _seconds(space, sampled + warm, epoch_seconds, device_here)
    if seconds is None:
        record["unknown_seconds"] = source
        return record

    def mean(configs):
        return sum(seconds[_key(c)] for c in configs) / len(configs) if configs else 0.0

    by_backbone = {}
    for config in sampled + warm:
        by_backbone.setdefault(config["backbone"], seconds[_key(config)])
    # Warm starts are exchangeable with sampled trials in the epoch model: weigh them in by their count.
    n, w = s.num_samples, min(len(warm), s.num_samples)
    epoch_s = ((n - w) * mean(sampled) + sum(seconds[_key(c)] for c in warm[:w])) / n
    cost = arithmetic.cost_forecast(
        epochs, epoch_seconds=epoch_s,
        start_seconds=start_s, source=source, per_trial=s.gpus_per_trial or s.cpus_per_trial,
        accelerator="GPU" if s.gpus_per_trial else "CPU", concurrency=concurrency, usd_per_hour=price,
        price_source=price_source, by_backbone={k: round(v, 2) for k, v in by_backbone.items()})
    record["cost"] = cost.to_dict()
    return record


def table(record: dict) -> str:
    if "cost" in record:
        cost = dict(record["cost"])
        cost.pop("usd", None)
        return arithmetic.CostForecast(**cost).table()
    e = record["epochs"]
    return (f"Forecast: {e['trial_epochs']:.0f} trial-epochs of {e['full_epochs']} without ASHA; seconds per "
            f"epoch unknown ({record.get('unknown_seconds')}): pass --epoch-seconds S for hours and cost.")


def _key(config: dict) -> tuple:
    return tuple(str(config.get(k)) for k in SPEED_KEYS)


def _seconds(space: Space, configs: list[dict], given, device_here: bool):
    """({speed key: seconds per epoch}, start seconds per trial, where they came from), or (None, 0, why)."""
    keys = {_key(c): c for c in configs}
    if isinstance(given, float):
        return {k: given for k in keys}, 0.0, "--epoch-seconds"
    if isinstance(given, dict):
        backbones = sorted({c["backbone"] for c in configs})
        missing = [b for b in backbones if b not in given]
        if missing:
            raise ForecastError(f"--epoch-seconds gives no seconds for {', '.join(missing)}, which the space "
                                f"samples; add {missing[0]}=SECONDS (the space's backbones: {', '.join(backbones)}).")
        return {k: given[c["backbone"]] for k, c in keys.items()}, 0.0, "--epoch-seconds"
    if not device_here:
        return None, 0.0, "the trials' GPUs are not on this machine to time"
    if os.environ.get("RESNET_SEARCH_CALIBRATE", "1") == "0":
        return None, 0.0, "calibration off (RESNET_SEARCH_CALIBRATE=0)"
    s = space.settings
    # The most common configs first: a budget that runs out leaves the rare ones to the slowest timed.
    order = [k for k, _ in Counter(_key(c) for c in configs).most_common()]
    answer = time_epochs({"configs": [keys[k] for k in order], "batches": CALIBRATION_BATCHES,
                          "budget_s": CALIBRATION_BUDGET_S, "threads": int(s.cpus_per_trial) or 1})
    timed = {k: t for k, t in zip(order, answer["timings"]) if "epoch_s" in t}
    if not timed:
        errors = [t["error"] for t in answer["timings"] if "error" in t]
        return None, 0.0, f"calibration failed: {errors[0] if errors else 'nothing timed'}"
    slowest = max(t["epoch_s"] for t in timed.values())
    seconds = {k: timed[k]["epoch_s"] if k in timed else slowest for k in keys}
    start_s = answer["import_s"] + max(t["start_s"] for t in timed.values())
    device = next(iter(timed.values()))["device"]
    return seconds, start_s, f"timed on this machine's {device}, {len(timed)} of {len(keys)} configs"


def plan_forecast(plan, args, saved: dict | None, local_gpus: int) -> dict:
    """The forecast of a checked plan; a resumed search shows the one it started with (no new calibration)."""
    if saved and saved.get("forecast"):
        return saved["forecast"]
    s = plan.space.settings
    if s.max_concurrent:
        concurrency = s.max_concurrent
    elif plan.address:
        concurrency = s.num_samples  # as many as the cluster holds: unknown before Ray is joined
    else:
        fits = int((os.cpu_count() or 1) // s.cpus_per_trial)
        concurrency = min(fits, int(local_gpus // s.gpus_per_trial)) if s.gpus_per_trial else fits
    device_here = not s.gpus_per_trial or (not plan.address and local_gpus >= s.gpus_per_trial)
    return forecast(plan.space, plan.data, concurrency=max(concurrency, 1),
                    epoch_seconds=parse_epoch_seconds(getattr(args, "epoch_seconds", None)),
                    gpu_hour_usd=getattr(args, "gpu_hour_usd", None),
                    cluster_yaml=getattr(args, "cluster_yaml", None), device_here=device_here)
