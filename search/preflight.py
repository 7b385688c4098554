"""Mistakes that would make every trial fail, or hang the driver, caught once by the plan (also under --dry-run).

    check_destination(storage, name, address)   before anything reads or writes the storage or joins Ray
    check_trials(space, index, data)             after the space and the data are checked

Each raises a UserError saying what is wrong, where, and how to fix it. Nothing here writes a file. The driver
stays torch-free: the storage is probed in a child process (core/storage_probe.py, so a store that never
answers costs a timeout, not a hang) and pretrained weights in another (trainable/weights_check.py).
"""
from __future__ import annotations

import os
import socket
import subprocess
from pathlib import Path

import optuna

from compat import ray_internals
from core.config import TrialConfig
from core.data import DatasetIndex
from core.errors import UserError
from core.metrics import TOP5_MIN_CLASSES
from core.storage import StorageURI
from search.child_checks import check_weights
from search.space_file import Space, extremes, sample_params

ADDRESS_TIMEOUT_S = 5
NAME_MAX_BYTES = 200     # a path component is at most 255 bytes; Ray adds suffixes to some names
SAMPLES = 64             # as check_space: seeded random configs, plus every categorical choice and range end


class PreflightError(UserError):
    pass


# ----------------------------------------------------------------------------- where the run goes

def check_destination(storage: StorageURI, name: str | None, address: str | None) -> None:
    _check_name(name)
    if storage.is_cloud:
        _check_cloud_storage(storage.value)
    else:
        _check_local_storage(storage.local_path)
    _check_address(address)


def _check_name(name: str | None) -> None:
    if name is None:
        return
    if "\x00" in name or not name.isprintable():
        raise PreflightError(f"--name {name!r} holds a control character; use letters, digits, '-', '_' and '.'.")
    if len(name.encode()) > NAME_MAX_BYTES:
        raise PreflightError(f"--name is {len(name.encode())} bytes long, but a folder name here must be at most "
                             f"{NAME_MAX_BYTES}; pick a shorter --name.")


def _check_local_storage(path: Path) -> None:
    if path.exists() and not path.is_dir():
        raise PreflightError(f"--storage {path} is a file, not a folder. Give a folder (it is created if missing), "
                             "e.g. --storage results.")
    existing = next(p for p in (path, *path.parents) if p.exists())
    if not existing.is_dir():
        raise PreflightError(f"--storage {path} cannot be created: {existing} is a file. Give a folder path whose "
                             "parents are folders, e.g. --storage results.")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise PreflightError(f"--storage {path}: {existing} is not writable by this user. Give a folder you can "
                             "write to, e.g. --storage results.")


def _check_cloud_storage(storage: str) -> None:
    from core.storage_probe import check_cloud_storage  # shared with python -m ensemble / predict

    check_cloud_storage(storage)


def _check_address(address: str | None) -> None:
    """A cluster that does not answer must fail in seconds: ray.init would wait minutes for its GCS."""
    from_env = not address and os.environ.get("RAY_ADDRESS")
    given = address or os.environ.get("RAY_ADDRESS") or ""
    flag = f"RAY_ADDRESS={given} (from the environment)" if from_env else f"--address {given}"
    if given in ("", "local"):
        return
    target = given
    if given == "auto":
        try:
            target = ray_internals.running_cluster_address()
        except ray_internals.CompatError as err:
            raise PreflightError(f"{flag}: {err} Give the head's HOST:PORT instead of auto.") from None
        except ConnectionError:
            raise PreflightError(f"{flag}: no Ray cluster is running on this machine. Start one (`ray start --head` "
                                 "or `ray up cluster.yaml`), pass its head's HOST:PORT, or leave --address out to "
                                 "start Ray here.") from None
    hostport = target[len("ray://"):] if target.startswith("ray://") else target
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise PreflightError(f"{flag} is not an address: give HOST:PORT of the cluster's head (GCS port, default "
                             "6379), ray://HOST:PORT for Ray Client, or auto.")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=ADDRESS_TIMEOUT_S).close()
    except OSError as err:
        why = "no answer" if isinstance(err, TimeoutError) else (err.strerror or type(err).__name__)
        raise PreflightError(f"{flag}: no Ray cluster answers at {hostport} ({why} within {ADDRESS_TIMEOUT_S} s). "
                             "Is the cluster up (`ray status` on its head)? Check the host and port, or leave "
                             "--address out to start Ray here.") from None
    if not _speaks_grpc(hostport):
        raise PreflightError(f"{flag}: something listens at {hostport}, but it is not a Ray head (no gRPC answer "
                             f"within {ADDRESS_TIMEOUT_S} s). Give the head's GCS port (default 6379), or "
                             "ray://HOST:10001 for Ray Client.")


def _speaks_grpc(hostport: str) -> bool:
    """Ray's GCS (and Ray Client) are gRPC servers: a channel becomes ready only after the server's HTTP/2
    handshake, so a port held by anything else times out here instead of hanging ray.init for minutes."""
    import grpc

    channel = grpc.insecure_channel(hostport)
    try:
        grpc.channel_ready_future(channel).result(timeout=ADDRESS_TIMEOUT_S)
        return True
    except grpc.FutureTimeoutError:
        return False
    finally:
        channel.close()


# ----------------------------------------------------------------------------- what every trial needs

class WeightsUnavailable(PreflightError):
    """Pretrained weights this machine cannot have (not cached, no internet): --no-pretrained fixes it."""


def check_trials(space: Space, index: DatasetIndex, data: str) -> None:
    _check_metric(space, index)
    configs = candidate_configs(space, data)
    _check_batch_size(space, index, configs)
    _check_weights(space, index, configs)


def candidate_configs(space: Space, data: str) -> list[tuple[dict, dict]]:
    """(trial config, where each suggested key's value came from) for what the space can produce: each
    parameter's every choice and range end (set in a sample that suggests it), seeded samples, and the warm
    starts. Each extreme is set in a whole sampled config (not in the defaults, as check_space does), so a
    range end is seen with the batch size and weights that config would actually run with."""
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=space.settings.seed))
    sampled, distributions = [], {}
    for i in range(SAMPLES):
        trial = study.ask()
        params = sample_params(space, trial)
        sampled.append((space.trial_config(params, data), dict.fromkeys(params, f"sampled config #{i}")))
        distributions.update(trial.distributions)
        study.tell(trial, 0.0)
    at_extremes = []
    for name, dist in distributions.items():
        host = next(((cfg, origins) for cfg, origins in sampled if name in origins), None)
        if host:
            at_extremes += [({**host[0], name: value}, {**host[1], name: f"parameter {name!r} = {value!r}"})
                            for value in extremes(dist)]
    warm = [(space.trial_config(dict(point), data), dict.fromkeys(point, f"WARM_STARTS[{k}]"))
            for k, point in enumerate(space.warm_starts)]
    return at_extremes + sampled + warm


def _value(cfg: dict, key: str):
    return cfg[key] if key in cfg else TrialConfig.__dataclass_fields__[key].default


def _origin(space: Space, origins: dict, key: str) -> str:
    """Where a config's value of `key` came from: define() or a warm start, SETTINGS, or the default."""
    if key in origins:
        return origins[key]
    return "SETTINGS['trial']" if key in space.settings.trial else f"the default {key}"


def _naming_first(configs: list, key: str) -> list:
    """The configs whose `key` is a parameter's own choice or range end first: the message then names it."""
    return sorted(configs, key=lambda c: not c[1].get(key, "").startswith(f"parameter {key!r}"))


def _check_metric(space: Space, index: DatasetIndex) -> None:
    metric, n = space.settings.metric, len(index.classes)
    if metric == "val_top5_acc" and n < TOP5_MIN_CLASSES:
        raise PreflightError(f"{space.path}: SETTINGS metric 'val_top5_acc' is reported only with more than 5 "
                             f"classes, but {index.root} has {n}. Use metric 'val_acc' or 'val_macro_f1'.")


def train_images(index: DatasetIndex, val_fraction: float) -> int:
    """How many training images a trial with this val_fraction gets (core/data.py's per-class hold-out)."""
    if not index.val_is_holdout:
        return len(index.train)
    per_class = [0] * len(index.classes)
    for _, label in index.train + index.val:
        per_class[label] += 1
    return sum(n - min(n - 1, max(1, round(n * val_fraction))) for n in per_class)


def _check_batch_size(space: Space, index: DatasetIndex, configs: list) -> None:
    for cfg, origins in _naming_first(configs, "batch_size"):
        batch, fraction = _value(cfg, "batch_size"), _value(cfg, "val_fraction")
        available = train_images(index, fraction)
        if batch > available:
            holdout = f" after the {fraction:g} val hold-out" if index.val_is_holdout else ""
            where = _origin(space, origins, "batch_size")
            raise PreflightError(
                f"{space.path}: {where}: batch_size {batch} is larger than the {available} training images of "
                f"{index.root}{holdout}, so every trial would fail. Use batch_size <= {available} (in SETTINGS"
                "['trial'] or define()), or more training images.")


def _check_weights(space: Space, index: DatasetIndex, configs: list) -> None:
    """Each distinct (backbone, weights) once: files first (cheap, no torch), then loading, in a child process."""
    first_use: dict[tuple[str, str], str] = {}
    for cfg, origins in _naming_first(configs, "weights_file"):
        weights_file = _value(cfg, "weights_file")
        if _value(cfg, "pretrained") or weights_file:
            key = "weights_file" if weights_file else "pretrained"
            first_use.setdefault((_value(cfg, "backbone"), weights_file), _origin(space, origins, key))
    for (_, weights_file), where in first_use.items():
        if weights_file:
            _check_weights_path(space, where, weights_file)
    if not first_use:
        return
    keys = list(first_use)
    try:
        answers = check_weights([{"backbone": b, "weights_file": w, "num_classes": len(index.classes)}
                                  for b, w in keys])
    except (RuntimeError, subprocess.TimeoutExpired) as err:
        raise PreflightError(f"{space.path}: could not check the pretrained weights ({str(err).splitlines()[0]}). "
                             "Run `python -m trainable --help-config` to see whether torch and timm import, "
                             "or set pretrained: False.") from None
    for key, answer in zip(keys, answers):
        if "error" in answer:
            error = WeightsUnavailable if answer.get("unavailable") else PreflightError
            raise error(f"{space.path}: {first_use[key]}: {answer['error']}")


def _check_weights_path(space: Space, where: str, weights_file: str) -> None:
    path = Path(weights_file)
    problem = None
    if not path.is_absolute():
        problem = (f"is a relative path, but trials run in their own folders. Give an absolute path"
                   f"{f', e.g. {path.absolute()}' if path.exists() else ''}")
    elif not path.exists():
        problem = "does not exist. Fix the path, or drop weights_file"
    elif not path.is_file():
        problem = "is a folder, not a weights file (.pth/.safetensors). Give the file inside it"
    elif not os.access(path, os.R_OK):
        problem = "cannot be read by this user. Fix its permissions"
    if problem:
        raise PreflightError(f"{space.path}: {where}: weights_file {weights_file} {problem}.")
