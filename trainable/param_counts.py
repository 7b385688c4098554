"""Parameter counts of many (backbone, head) models, in a child process: the search driver stays torch-free
(search/child_checks.py starts it).

    python -m trainable.param_counts < models.json > counts.json

Input: a JSON list of {"backbone", "head", "head_hidden", "num_classes"}; output: a JSON list, in the same
order, of {"params": N} or {"error": "<message>"} (an unknown or non-ResNet backbone). Counts are taken on
the meta device, so no weights are allocated.
"""
from __future__ import annotations

import json
import sys

from core.config import TrialConfig
from trainable.model import ModelError, count_parameters_for


def count(models: list[dict]) -> list[dict]:
    out = []
    for m in models:
        cfg = TrialConfig(backbone=m["backbone"], head=m["head"], head_hidden=m["head_hidden"])
        try:
            out.append({"params": count_parameters_for(cfg, m["num_classes"])})
        except ModelError as err:
            out.append({"error": str(err)})
    return out


if __name__ == "__main__":
    json.dump(count(json.load(sys.stdin)), sys.stdout)
