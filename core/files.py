"""The names of the files a search, a trial and the ensemble leave behind, in one place (README "Results")."""

# A checkpoint folder (trainable/checkpoint.py writes it)
MODEL_FILE = "model.pt"                # evaluated weights, classes, resolved config, metrics
TRAIN_STATE_FILE = "train_state.pt"    # optimizer, scheduler, RNG states: what an exact resume needs on top

# results/<name>/ of a search
PLAN_FILE = "plan.json"                # the resolved plan --resume continues (search/saved_plan.py)
SPACE_COPY = "space.py"                # the space file as it was run
PROVENANCE_FILE = "provenance.json"    # git commit, package versions, the commands that ran it
LEADERBOARD_CSV = "leaderboard.csv"
LEADERBOARD_MD = "leaderboard.md"
BEST_CONFIG = "best_config.json"
STUDY_FILE = "optuna_study.log"        # the Optuna study (JournalStorage)
REPORT_DIR = "report"                  # what the search learned (search/report.py)
RUN_LOCK = ".run.lock"                 # held by the command that owns the run folder (core/run_lock.py)
RUN_OWNER = ".run.owner.json"          # who holds it: host, pid, start time, command (and a bucket's heartbeat)

# the ensemble stage, in the same folder
ENSEMBLE_MANIFEST = "ensemble.json"
PREDICTIONS = "prediction.csv"
REFIT_PREDICTIONS = "prediction_refit.csv"
PER_CLASS = "per_class.csv"
CONFUSION_PNG = "confusion_matrix.png"
ENSEMBLE_CACHE_DIR = "ensemble_cache"
REFIT_DIR = "refit"
