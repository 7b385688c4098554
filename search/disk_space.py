"""Will the checkpoints fit? The plan compares the bytes it can estimate with the free space where they go.

A checkpoint holds the weights (model.pt: 4 bytes a parameter, twice with EMA) and the training state
(train_state.pt: the optimizer's two AdamW moments, 8 bytes a parameter); Tune keeps each trial's best
`keep_checkpoints` plus its latest. So a search needs at most about

    num_samples x (keep_checkpoints + 1) x bytes per checkpoint of its largest model

(ASHA stops most trials before they write all of them: the figure is an upper bound, stated as one). The plan
refuses a storage without room even at the smallest model's size and warns below the largest's. Cloud
storage is not measured (a bucket has no free space to ask about). What fills up later anyway (a disk shared
with other jobs) ends in one message through search/run.py.
"""
from __future__ import annotations

import errno
import shutil
import sys
from pathlib import Path

from core.errors import UserError

BYTES_PER_PARAM = 4 + 8  # fp32 weights + AdamW's exp_avg and exp_avg_sq
FULL_DISK_ERRNOS = (errno.ENOSPC, errno.EDQUOT)


def checkpoint_bytes(space, max_params: int) -> int:
    s = space.settings
    per_param = BYTES_PER_PARAM + (4 if s.trial.get("ema") else 0)
    return s.num_samples * (s.keep_checkpoints + 1) * per_param * int(max_params)


def check_free_space(space, storage_path: Path | None, min_params: int | None, max_params: int | None = None,
                     warn=None) -> None:
    """Refuses a local storage without room for the checkpoints even if every trial sampled the smallest model
    (it cannot succeed); warns when it lacks room for the largest (it may fill up). A cloud storage (None) is not
    measured."""
    if storage_path is None or not min_params:
        return
    max_params = max_params or min_params
    where = existing_parent(Path(storage_path))
    free = shutil.disk_usage(where).free
    s = space.settings
    kept = s.num_samples * (s.keep_checkpoints + 1)
    least, most = checkpoint_bytes(space, min_params), checkpoint_bytes(space, max_params)
    if least > free:
        raise UserError(
            f"--storage {storage_path}: its disk has {gb(free)} free, but the checkpoints need at least {gb(least)} "
            f"({s.num_samples} trials x {s.keep_checkpoints + 1} kept checkpoints x {gb(least // kept)} for the "
            f"smallest model, {min_params / 1e6:.1f}M parameters). Free space under {where}, pass --storage on a "
            "larger disk (or s3://...), or lower num_samples / keep_checkpoints.")
    if most > free:
        (warn or (lambda text: print(f"warning: {text}", file=sys.stderr)))(
            f"--storage {storage_path}: its disk has {gb(free)} free; the checkpoints take up to {gb(most)} if "
            f"every trial sampled the largest model ({max_params / 1e6:.1f}M parameters). A full disk mid-search "
            "ends it with the --resume command; more room avoids that.")


def existing_parent(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def gb(n: int) -> str:
    return f"{n / 1e9:.2f} GB" if n >= 1e8 else f"{n / 1e6:.1f} MB"


def full_disk_error(err: BaseException) -> OSError | None:
    """The ENOSPC/EDQUOT OSError behind err (itself, or its cause or context), if any."""
    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if isinstance(err, OSError) and err.errno in FULL_DISK_ERRNOS:
            return err
        if "No space left on device" in str(err) or "Disk quota exceeded" in str(err):
            return err if isinstance(err, OSError) else OSError(errno.ENOSPC, str(err).strip().splitlines()[-1])
        err = err.__cause__ or err.__context__
    return None
