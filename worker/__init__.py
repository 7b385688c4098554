"""What runs inside Ray workers: the Tune trainable (a search trial or a refit model) and its sinks, and the
bodies of the ensemble's scoring tasks. Imports Ray at module level and the trial (trainable/: torch) only
inside the functions a worker runs, so the driver can hand these functions to Ray without loading torch."""
