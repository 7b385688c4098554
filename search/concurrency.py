"""How many trials run (and wait) at once: the number Tune gets as max_concurrent_trials.

Ray Tune keeps only ONE trial pending for a custom searcher unless max_concurrent_trials is set
(tune_controller._get_max_pending_trials), so trials would be placed one at a time and an autoscaler
would only ever see one trial's demand. Every pending trial has already been suggested, so the number
must not exceed what the cluster can run either: 64 pending trials on 12 GPUs would make TPE draw 64
configs before a single result came back. Hence, in order:

  1. the space's max_concurrent (or --max-concurrent), when set;
  2. the trials the cluster can hold at full size: on a cluster started by `ray up`, the head node's
     autoscaler config (~/ray_bootstrap_config.yaml, the file Tune itself checks) gives each node type's
     resources and max_workers; otherwise (a fixed cluster, or this machine) the nodes alive now;
  3. never more than num_samples, never less than 1.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

BOOTSTRAP_CONFIG = Path("~/ray_bootstrap_config.yaml")


@dataclass(frozen=True)
class Concurrency:
    trials: int
    reason: str

    def describe(self) -> str:
        return f"{self.trials} trial(s) at once ({self.reason})"


def trials_per_node(resources: dict, cpus_per_trial: float, gpus_per_trial: float) -> int:
    fit = int(resources.get("CPU", 0) // cpus_per_trial)
    if gpus_per_trial:
        fit = min(fit, int(resources.get("GPU", 0) // gpus_per_trial))
    return max(fit, 0)


def autoscaler_capacity(config: dict, cpus_per_trial: float, gpus_per_trial: float) -> int:
    """Trials a `ray up` cluster holds at full size: every worker type at max_workers, within the global cap."""
    types = config.get("available_node_types") or {}
    head = config.get("head_node_type")
    total = trials_per_node((types.get(head) or {}).get("resources") or {}, cpus_per_trial, gpus_per_trial)
    workers_left = config.get("max_workers", float("inf"))
    per_type = sorted(((trials_per_node(t.get("resources") or {}, cpus_per_trial, gpus_per_trial),
                        int(t.get("max_workers", 0))) for name, t in types.items() if name != head), reverse=True)
    for fit, count in per_type:  # the biggest nodes first, as far as the global max_workers allows
        n = min(count, workers_left)
        total += fit * n
        workers_left -= n
    return total


def live_capacity(nodes: list[dict], cpus_per_trial: float, gpus_per_trial: float) -> int:
    """Trials the nodes alive now hold (a trial never spans nodes)."""
    return sum(trials_per_node(n.get("Resources", {}), cpus_per_trial, gpus_per_trial) for n in nodes if n.get("Alive"))


def read_bootstrap(path: Path) -> dict | str:
    """The autoscaler config `ray up` left on the head node, or why it is not used (appended to the reason).

    The file is not the user's to write, but a stale or foreign one must not stop the search: the nodes
    alive now still give a safe concurrency, and the reason says how to set it by hand.
    """
    if not path.exists():
        return ""
    try:
        config = yaml.safe_load(path.read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        return f"; {path} is not a readable autoscaler config ({type(e).__name__}), pass --max-concurrent N"
    if config is None:
        return ""
    if not isinstance(config, dict) or not isinstance(config.get("available_node_types", {}), dict):
        return f"; {path} is not an autoscaler config (no available_node_types mapping), pass --max-concurrent N"
    return config


def resolve_concurrency(settings, *, nodes: list[dict], bootstrap: Path = BOOTSTRAP_CONFIG) -> Concurrency:
    """`nodes` is ray.nodes() of the connected cluster."""
    s = settings
    if s.max_concurrent:
        return Concurrency(min(s.max_concurrent, s.num_samples), "max_concurrent")
    now = live_capacity(nodes, s.cpus_per_trial, s.gpus_per_trial)
    path = bootstrap.expanduser()
    config = read_bootstrap(path)
    if isinstance(config, dict):
        full = autoscaler_capacity(config, s.cpus_per_trial, s.gpus_per_trial)
        n, reason = max(now, full), f"the autoscaling cluster holds {full} at full size ({path}), {now} now"
    else:
        n, reason = now, f"what the cluster's nodes hold{config}"
    if n < 1:
        return Concurrency(1, "no node can hold a trial yet; pass --max-concurrent N for an autoscaling cluster")
    if n > s.num_samples:
        return Concurrency(s.num_samples, f"num_samples; {reason}: {n}")
    return Concurrency(n, reason)
