"""What every process of a search shares, and nothing heavy: the trial config schema, the metric registry,
trial status, the report and checkpoint policies, file names, storage URIs, dataset indexing, errors.

Imports the standard library, numpy, Pillow, scikit-learn, pyarrow and filelock only: never torch, timm,
Ray or Optuna (tests/test_layering.py checks it), so the driver, the trials and the ensemble can all read it.
"""
