"""Where the torch work of the ensemble runs: one Ray task per call, with the trials' resources (a GPU when
the trials had GPUs), or in this process when no Ray is up. Torch-free: the task bodies (worker/ensemble_tasks.py)
import torch inside the worker, so the driver never loads it.

A user error inside a task comes back as {"error": message} and is raised here as an EnsembleError, so
it still ends in one clear message rather than a remote traceback.
"""
from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path

from core.errors import EnsembleError
from core.files import PLAN_FILE
from worker import ensemble_tasks


@dataclass(frozen=True)
class Resources:
    """What each task asks Ray for: the search's cpus_per_trial / gpus_per_trial."""

    num_cpus: float = 1.0
    num_gpus: float = 0.0

    @classmethod
    def of_run(cls, run_dir: Path) -> "Resources":
        """The trials' resources, from the plan the search recorded (results/<name>/plan.json)."""
        try:
            settings = json.loads((Path(run_dir) / PLAN_FILE).read_text())["settings"]
            return cls(float(settings["cpus_per_trial"]), float(settings["gpus_per_trial"]))
        except (OSError, ValueError, KeyError, TypeError):
            return cls()


class Runner:
    """Maps the scoring functions over their arguments: Ray tasks when Ray is up, else in-process."""

    def __init__(self, resources: Resources | None = None, use_ray: bool | None = None):
        self.resources = resources or Resources()
        self.use_ray = ray_is_up() if use_ray is None else use_ray

    def score(self, calls: list[tuple]) -> list[dict]:
        return self._map(ensemble_tasks.score, calls)

    def lists(self, calls: list[tuple]) -> list[dict]:
        return self._map(ensemble_tasks.lists, calls, num_gpus=0.0)  # indexing a dataset needs no GPU

    def member_logits(self, calls: list[tuple]) -> list[dict]:
        return self._map(ensemble_tasks.member_logits, calls)

    def _map(self, fn, calls: list[tuple], num_gpus: float | None = None) -> list[dict]:
        if not calls:
            return []
        if self.use_ray:
            import ray

            task = ray.remote(fn).options(num_cpus=self.resources.num_cpus,
                                          num_gpus=self.resources.num_gpus if num_gpus is None else num_gpus)
            results = ray.get([task.remote(*args) for args in calls])  # all in flight at once
        else:
            results = [fn(*args) for args in calls]
        for result in results:
            if "error" in result:
                raise EnsembleError(result["error"])
        return results


def ray_is_up() -> bool:
    ray = sys.modules.get("ray")  # never import Ray just to learn it is not running
    return ray is not None and ray.is_initialized()
