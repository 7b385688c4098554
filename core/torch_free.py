"""Keeping torch out of processes that do not train: the search driver and the ensemble's driver side."""
from __future__ import annotations

import sys


def import_tensorboardx_without_torch() -> None:
    """tensorboardX imports torch whenever it is installed, only to accept torch tensors as values; the driver
    logs plain floats, and torch would cost it ~500 MB and seconds of start-up. Load tensorboardX once with
    torch hidden; torch stays importable for everything else."""
    if "torch" in sys.modules or "tensorboardX.writer" in sys.modules:
        return
    sys.modules["torch"] = None  # `import torch` raises ImportError, which tensorboardX handles
    try:
        import tensorboardX.writer  # noqa: F401
    finally:
        del sys.modules["torch"]
