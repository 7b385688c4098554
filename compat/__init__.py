"""The only place where this project reaches into private names of Ray and Optuna (DEVELOPERS.md).

Each module declares the versions it was tested with. A feature that needs one of them calls its `check()`
from the search plan, so a version outside that range is refused in one message before any trial runs,
never silently worked around. The standard driver profile needs none of them except `--address auto`
(compat/ray_internals.running_cluster_address); tests/test_private_names.py fails if a private name of Ray,
Optuna or timm appears anywhere else. timm needs no compat module: the project uses its public API only.
"""
