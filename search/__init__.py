"""The search driver: plan, Ray Tune + Optuna + ASHA, leaderboard, report. No torch (tests/test_layering.py)."""
