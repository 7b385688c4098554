import os
from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[2] / "shared"
TINY100 = SHARED / "datasets" / "tiny100"


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Scan caches and the built-in dataset go to one per-session temp dir, never ~/.cache."""
    monkeypatch.setenv("RESNET_SEARCH_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


requires_tiny100 = pytest.mark.skipif(not TINY100.exists(), reason="../shared/datasets/tiny100 is absent (fresh clone)")
