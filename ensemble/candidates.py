"""Which trials are candidates, and what the driver knows of each: leaderboard.csv -> the qualifying rows ->
Candidates (logits on val and test, computed by worker/scoring.py in a task), cached in ensemble_cache/.

Driver side: numpy, pandas, pyarrow; no torch (the logits cache is .npz + JSON, not torch.save).
"""
from __future__ import annotations

import io
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from core.atomic import write_bytes
from core.errors import EnsembleError
from core.files import ENSEMBLE_CACHE_DIR, LEADERBOARD_CSV
from core.inference import Inference, data_settings
from core.storage import Location
from core.trial_status import TrialStatus

_CACHE_VERSION = 2  # 2: .npz, written by the driver from a scoring task's payload


@dataclass
class Candidate:
    trial_id: str
    checkpoint: str
    config: dict
    classes: list[str]
    param_count: int
    val_samples: list[tuple[str, int]]
    val_logits: np.ndarray
    test_files: list[str]
    test_logits: np.ndarray
    data_root: str    # the dataset folder the lists come from
    scored_on: dict   # where the logits were computed: node_id (None outside Ray), pid, device

    @classmethod
    def from_payload(cls, payload: dict) -> "Candidate":
        """A scoring task's payload (JSON-able fields + two arrays) as a Candidate."""
        fields = {k: payload[k] for k in cls.__dataclass_fields__}
        fields["val_samples"] = [tuple(s) for s in fields["val_samples"]]
        return cls(**fields)


# ------------------------------------------------------------------------------------ leaderboard

def read_leaderboard(run_dir: Path) -> pd.DataFrame:
    path = run_dir / LEADERBOARD_CSV
    if not path.is_file():
        raise EnsembleError(f"No leaderboard at {path}. Give a search's results folder (results/<name>), "
                            "after the search has finished or been interrupted.")
    # Ids and paths stay text: a trial id like "12345678" must not become a number.
    try:
        table = pd.read_csv(path, dtype={"trial_id": str, "best_checkpoint": str, "status": str, "reason": str})
        missing = {"trial_id", "status"} - set(table.columns)
    except (ValueError, UnicodeDecodeError) as err:  # empty (a full disk, before writes were atomic) or damaged
        missing = f"{type(err).__name__}"
    if missing:
        raise EnsembleError(f"{path} is empty or damaged ({missing if isinstance(missing, str) else 'no ' + ', '.join(sorted(missing))}). "
                            f"The search rebuilds it from Tune's state: python search/run.py --name {run_dir.name} "
                            "--resume (with its --storage).")
    return table.fillna({"best_checkpoint": "", "reason": ""})


def qualifying_trials(table: pd.DataFrame, top_k: int, min_epochs: int | None) -> tuple[pd.DataFrame, int]:
    """The top_k best-ranked trials that completed or were stopped early and ran >= min_epochs (default: the
    most any ran, i.e. the trials ASHA let finish); returns them and the min_epochs used."""
    ran = table[table["status"].map(lambda status: TrialStatus(status).trained)]
    if ran.empty:
        counts = ", ".join(f"{n} {status}" for status, n in table["status"].value_counts().items())
        raise EnsembleError(f"No finished trials: none of the {len(table)} trial(s) in the leaderboard completed or "
                            f"was stopped early ({counts}; reasons in leaderboard.md), so there is nothing to ensemble.")
    most = int(ran["epochs"].max())
    need = most if min_epochs is None else min_epochs
    qualified = ran[ran["epochs"] >= need].sort_values("rank")
    if qualified.empty:
        raise EnsembleError(f"No trial ran at least {need} epochs (the most any ran is {most}); "
                            f"lower --min-epochs.")
    return qualified.head(top_k), need


def check_same_validation(candidates: list[Candidate]) -> None:
    """Logits can only be combined image by image if every member saw the same images, same labels."""
    first = candidates[0]
    for other in candidates[1:]:
        if other.classes != first.classes:
            raise EnsembleError(f"Trials {first.trial_id} and {other.trial_id} have different class lists "
                                f"({first.classes[:5]}... vs {other.classes[:5]}...); they cannot be ensembled.")
        if other.val_samples != first.val_samples:
            raise EnsembleError(
                f"Trials {first.trial_id} and {other.trial_id} were validated on different images (different "
                f"data, val_fraction, seed or min_image_side: {data_settings(first.config)} vs "
                f"{data_settings(other.config)}); an ensemble chosen on val needs one shared val set.")


# ------------------------------------------------------------------------------------ logits cache

def cache_file(run_dir: Path, trial_id: str, location: Location, inference: Inference) -> Path:
    return run_dir / ENSEMBLE_CACHE_DIR / f"{trial_id}-{location.name}-{inference.tag}.npz"


def read_cache(path: Path, stamp: list[int]) -> Candidate | None:
    try:
        with np.load(path, allow_pickle=False) as stored:
            meta = json.loads(str(stored["meta"]))
            if meta.pop("version") != _CACHE_VERSION or meta.pop("stamp") != stamp:
                return None  # the checkpoint was rewritten since
            return Candidate.from_payload({**meta, "val_logits": stored["val_logits"],
                                           "test_logits": stored["test_logits"]})
    except Exception:  # absent or damaged cache: recompute
        return None


def write_cache(path: Path, candidate: Candidate, stamp: list[int]) -> None:
    fields = asdict(candidate)
    arrays = {k: np.asarray(fields.pop(k), dtype=np.float32) for k in ("val_logits", "test_logits")}
    buffer = io.BytesIO()
    np.savez(buffer, meta=np.array(json.dumps({"version": _CACHE_VERSION, "stamp": stamp, **fields})), **arrays)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_bytes(path, buffer.getvalue())  # atomic, unique temp name: an interrupted run leaves no half entry
