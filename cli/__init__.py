"""resnet-search: one console command over the project's entry points (cli/main.py)."""
