"""Where the torch work of the ensemble runs: one Ray task per call, with the trials' resources (a GPU when
the trials had GPUs), or in this process when no Ray is up. Torch-free: the task bodies import
ensemble.scoring inside the worker, so the driver never loads torch.

A user error inside a task comes back as {"error": message} and is raised here as an EnsembleError, so
it still ends in one clear message rather than a remote traceback.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from ensemble.candidates import EnsembleError
from trainable.errors import UserError


def _score(*args) -> dict:
    from ensemble.scoring import score_candidate

    return _user_errors_as_values(score_candidate, *args)


def _lists(*args) -> dict:
    from ensemble.scoring import dataset_lists

    return _user_errors_as_values(dataset_lists, *args)


def _user_errors_as_values(fn, *args) -> dict:
    try:
        return fn(*args)
    except UserError as err:
        return {"error": str(err)}


@dataclass(frozen=True)
class Resources:
    """What each task asks Ray for: the search's cpus_per_trial / gpus_per_trial."""

    num_cpus: float = 1.0
    num_gpus: float = 0.0

    @classmethod
    def of_run(cls, run_dir: Path) -> "Resources":
        """The trials' resources, from the space file the run recorded (results/<name>/space.py)."""
        space_file = Path(run_dir) / "space.py"
        if not space_file.is_file():
            return cls()
        from search.space_file import load_space  # no torch: the driver's own module

        try:
            settings = load_space(space_file).settings
        except UserError:
            return cls()
        return cls(settings.cpus_per_trial, settings.gpus_per_trial)


class Runner:
    """Maps the scoring functions over their arguments: Ray tasks when Ray is up, else in-process."""

    def __init__(self, resources: Resources | None = None, use_ray: bool | None = None):
        self.resources = resources or Resources()
        self.use_ray = ray_is_up() if use_ray is None else use_ray

    def score(self, calls: list[tuple]) -> list[dict]:
        return self._map(_score, calls)

    def lists(self, calls: list[tuple]) -> list[dict]:
        return self._map(_lists, calls, num_gpus=0.0)  # indexing a dataset needs no GPU

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
