"""The parameter budget (<= 100M by the task's rules), as arithmetic: no torch, so the search driver can check it.

Counting a backbone's parameters needs timm and torch; the driver gets the counts from a child process
(`trainable.param_counts`) and checks them here.
"""
from __future__ import annotations

from core.config import TrialConfig
from core.errors import UserError


class ModelError(UserError):
    pass


def check_budget(cfg: TrialConfig, n_params: int) -> None:
    budget = int(cfg.param_budget_m * 1e6)
    if n_params > budget:
        raise ModelError(
            f"{cfg.backbone} with a {cfg.head} head has {n_params / 1e6:.2f}M parameters, over the budget of "
            f"{cfg.param_budget_m:g}M (param_budget_m). Choose a smaller backbone or raise the budget."
        )
