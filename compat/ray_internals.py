"""Private names of Ray, each used by one opt-in feature, with the upstream change that would remove it.

Tested with Ray 2.60.0 (TESTED). Every function here checks the version first (`check`), and the search plan
calls `check` for driver_profile "large" before anything starts.

  name                                             used by                         would go with
  ray._private.services.get_ray_address_from_      --address auto in the plan's    a public "find the running
    environment                                    preflight (resolve, then probe)  cluster" call: ray#28008
  ray.train._internal.session.get_session()        report_in_background (large):   a public "was this trial
    .stop_event                                    a trial stopped between reports  stopped?" in ray.tune;
                                                   ends within a batch              no upstream issue found
  the session ends a stopped trial's tune.report   report_in_background: the        the same
    with SystemExit; a trial thread that exits     reporting thread and the
    with SystemExit(0) ends cleanly                trainable's end
  ray.tune.registry._global_registry               the registry cache (large):      a Tune setting to resolve
                                                   five GCS reads per trial start   the trainable once per
                                                   answered once per search         experiment; cf. ray#15504
  the search generator's saved state              a --resume of a search its      a Tune way to continue an
    (search_gen_state-*.json: a pickled dict,      budget ended (search/spend.py): experiment a Stopper ended
    "finished" set by a Stopper's stop_all)        reopen_search()                 (stop_all finishes the search
                                                                                   for good); no upstream issue found
  Trial.storage.storage_filesystem                 every search: a retried trial's  Tune's loggers not replacing a
                                                   result.json and progress.csv     fresher local result.json with the
                                                   pushed to storage before Tune    remote copy at a trial's restart
                                                   restarts it: push_trial_logs()   (ray#38598 added that copy); no
                                                                                   upstream issue found
  ASHAScheduler._brackets[i]._rungs                a grown search (search/growth.py):  a public way to give ASHA the
    ((milestone, {trial id: value}), top rung      the new experiment's rungs start    results of trials it did not
    first)                                         from the earlier trials' values     run; no upstream issue found

Measurement only (benchmarks/, never a search): the methods of Tune's controller loop the driver's phase clock
times (tune_loop_methods), and the internal types that build a synthetic experiment state (experiment_state_types).
"""
from __future__ import annotations

from contextlib import contextmanager

from compat.versions import CompatError, require

TESTED = ("2.60.0",)
__all__ = ["CompatError", "TESTED", "check", "running_cluster_address", "trial_stop_event", "is_stop_signal",
           "end_stopped_trial", "trainable_lookups_cached", "reopen_search", "push_trial_logs", "seed_asha_rungs", "tune_loop_methods", "experiment_state_types"]


def check(feature: str, instead: str = "Use driver_profile 'standard'") -> None:
    require("ray", TESTED, feature, instead)


def running_cluster_address() -> str:
    """The GCS address `ray.init(address="auto")` would join (RAY_ADDRESS, the running cluster's address file,
    or a running GCS process), without joining it; ConnectionError when there is none."""
    check("--address auto", "Give the cluster head's HOST:PORT")
    from ray._private.services import get_ray_address_from_environment

    return get_ray_address_from_environment("auto", None)


def trial_stop_event():
    """This trial's stop event (Tune makes a new one per trial, also on a reused actor), or None when the
    trial runs outside Tune's session. Set when Tune stops the trial between reports (experiment end, Ctrl-C)."""
    check("report_in_background")
    from ray.train._internal.session import get_session

    return getattr(get_session(), "stop_event", None)


def is_stop_signal(exc: BaseException) -> bool:
    """Tune's session ends the tune.report call of a trial the scheduler stops by raising SystemExit."""
    return isinstance(exc, SystemExit)


def end_stopped_trial() -> None:
    """End a trial function as Tune's own report ends a stopped trial's thread: its runner takes SystemExit(0)
    as a clean end. Returning instead would make Tune's function wrapper report once more and wait for an answer
    a stopped trial never gets (a reused actor would hang)."""
    raise SystemExit(0)


@contextmanager
def trainable_lookups_cached():
    """While the block runs, Ray's registry answers each trainable lookup from memory after its first read.

    Ray Tune 2.60 looks a trial's trainable up in Ray's registry at every trial start (the name when the Trial is
    created, then the class for the trial's resources and again for its actor, checking the name before each
    fetch): five round trips to the GCS and two unpickles, a third of the driver's time per trial start
    (docs/scale.md), for a value that does not change during the search. The registry's two reads of the
    trainable category (`get`, and `contains` once it said yes) are answered from the first; a write
    (`register`, `unregister`) forgets them. Ray returns the same class object each time (cloudpickle keeps the
    one it made), so the cached answer is the one Ray would have given. All is put back when the block ends."""
    check("the registry cache of driver_profile 'large'")
    from ray.tune import registry as ray_registry

    registry = ray_registry._global_registry
    reads, writes = ("get", "contains"), ("register", "unregister")
    if not all(callable(getattr(registry, name, None)) for name in reads + writes):
        raise CompatError("Ray's trainable registry changed shape; the registry cache cannot be used with this "
                          "Ray. Use driver_profile 'standard'.")
    read, present = {}, set()  # trainable name -> its class; names the registry was found to hold

    def get(category, key):
        if category != ray_registry.TRAINABLE_CLASS:
            return type(registry).get(registry, category, key)
        if key not in read:
            read[key] = type(registry).get(registry, category, key)
        return read[key]

    def contains(category, key):
        if category != ray_registry.TRAINABLE_CLASS:
            return type(registry).contains(registry, category, key)
        if key not in present:
            if not type(registry).contains(registry, category, key):
                return False
            present.add(key)
        return True

    def forgetting(name):
        def write(*args, **kwargs):
            read.clear()
            present.clear()
            return getattr(type(registry), name)(registry, *args, **kwargs)
        return write

    patched = {"get": get, "contains": contains, **{name: forgetting(name) for name in writes}}
    shadowed = {name: registry.__dict__[name] for name in patched if name in registry.__dict__}
    registry.__dict__.update(patched)  # instance attributes: they shadow the class's methods
    try:
        yield
    finally:
        for name in patched:
            if registry.__dict__.get(name) is patched[name]:
                del registry.__dict__[name]
        registry.__dict__.update(shadowed)


def tune_loop_methods(searcher_class) -> list[tuple]:
    """(owner, method name, phase) of every step of Tune's controller loop that the driver's phase clock times
    (benchmarks/tools/driver_phases.py): a phase name, or (when the call returned something true, else)."""
    check("the driver's phase clock", "Measure with Ray 2.60.0")
    import ray
    from ray.air.execution._internal.actor_manager import RayActorManager
    from ray.tune.execution.tune_controller import TuneController
    from ray.tune.experiment import trial as trial_module
    from ray.tune.search import ConcurrencyLimiter

    return [
        (TuneController, "step", "loop"),
        (RayActorManager, "next", ("dispatch", "scan")),  # True: it handled an event
        (ray, "wait", "idle"),
        (TuneController, "_maybe_update_trial_queue", "scan"),
        (TuneController, "_update_trial_queue", ("create", "scan")),  # True: it added a trial
        (ConcurrencyLimiter, "suggest", "suggest"),
        (searcher_class, "suggest", "suggest"),
        (TuneController, "_maybe_add_actors", "scan"),
        (TuneController, "_schedule_trial_actor", "start"),
        (TuneController, "_maybe_reuse_cached_actor", "start"),
        (TuneController, "_actor_started", "start"),
        (trial_module, "validate_trainable", "registry"),  # Trial looks its trainable up in Ray's registry
        (trial_module, "get_trainable_cls", "registry"),
        (TuneController, "_schedule_trial_reset", "start"),
        (TuneController, "_on_trial_reset", "start"),
        (TuneController, "_on_training_result", "result"),
        (TuneController, "_on_saving_result", "checkpoint"),
        (TuneController, "stop_trial", "end"),
        (TuneController, "_schedule_trial_stop", "end"),
        (TuneController, "_actor_stopped", "end"),
        (TuneController, "checkpoint", "snapshot"),
    ]


def experiment_state_types():
    """(the training result a trial records a checkpoint with, Tune's storage context): what
    benchmarks/archive/experiment_state_cost.py builds a synthetic 4,096-trial experiment state from."""
    check("the experiment-state benchmark", "Measure with Ray 2.60.0")
    from ray.train._internal.session import _TrainingResult
    from ray.train._internal.storage import StorageContext

    return _TrainingResult, StorageContext


def reopen_search(experiment_path: str) -> bool:
    """Clears the "finished" mark a Stopper's stop_all() leaves in the newest saved search-generator state, so a
    restored Tuner asks its searcher for the trials still to run. True when it was set (and is now cleared)."""
    check("--resume of a search a budget ended", "Start a new search under another --name")
    import pickle

    import pyarrow.fs

    path, _, query = experiment_path.partition("?")
    fs, folder = pyarrow.fs.FileSystem.from_uri(experiment_path if "://" in path else f"file://{path}")
    files = sorted(info.path for info in fs.get_file_info(pyarrow.fs.FileSelector(folder))
                   if info.base_name.startswith("search_gen_state-") and info.base_name.endswith(".json"))
    if not files:
        return False
    with fs.open_input_file(files[-1]) as f:
        state = pickle.loads(f.read())
    if not state.get("finished") or state.get("counter", 0) >= state.get("total_samples", 0):
        return False
    state["finished"] = False
    # Whole or not at all: the same temporary-name-then-move Tune itself uses for this file.
    tmp = files[-1].rsplit("/", 1)[0] + "/tmp-reopen-" + files[-1].rsplit("/", 1)[1]
    with fs.open_output_stream(tmp) as f:
        f.write(pickle.dumps(state))
    fs.move(tmp, files[-1])
    return True


TRIAL_LOG_FILES = ("result.json", "progress.csv")  # ray.tune.result's EXPR_RESULT_FILE, EXPR_PROGRESS_FILE


def push_trial_logs(trial) -> bool:
    """Copies a trial's result.json and progress.csv from the driver's staging folder to the run's storage now.

    Why: when Tune restarts a failed trial from its checkpoint, its JSON and CSV loggers first replace the driver's
    local copy of those files with the one in storage (LoggerCallback._restore_from_remote, on every trial start
    with a checkpoint). Storage holds only what the driver last synced (every few seconds to minutes), so the
    epochs reported since were dropped from the trial's logs: seen in the chaos soak, epoch 1 of a trial whose node
    was killed right after it. Pushed first, the copy Tune downloads is the current one. Called from a public
    callback (Callback.on_trial_recover); a Ray other than TESTED skips it (Tune's behaviour, unchanged)."""
    import ray

    if ray.__version__ not in TESTED:
        return False
    from pathlib import Path

    import pyarrow.fs

    local, remote = getattr(trial, "local_path", None), getattr(trial, "path", None)
    filesystem = getattr(getattr(trial, "storage", None), "storage_filesystem", None)
    if not local or not remote or filesystem is None:
        return False
    pushed = False
    for name in TRIAL_LOG_FILES:
        source, target = Path(local, name), f"{remote.rstrip('/')}/{name}"
        if not source.is_file():
            continue
        if isinstance(filesystem, pyarrow.fs.LocalFileSystem) and Path(target).resolve() == source.resolve():
            continue  # the same file: nothing to push (and a copy onto itself would empty it)
        pyarrow.fs.copy_files(str(source), target, destination_filesystem=filesystem)
        pushed = True
    return pushed


def seed_asha_rungs(scheduler, histories: dict[str, dict[int, float]], maximize: bool) -> int:
    """Records in a new ASHAScheduler the value each earlier trial had at each rung, as Tune's ASHA records its own
    trials' (the first result at or past the rung's epoch, signed by the mode), so that the grown search's trials
    are cut against every trial the search has run, not only each other. histories: trial id -> {epoch: metric}.
    Returns the values recorded."""
    check("a grown search's ASHA rungs", "Grow it without them (the new trials' rungs then start empty)")
    sign = 1.0 if maximize else -1.0
    brackets = getattr(scheduler, "_brackets", None)
    if not brackets or not all(isinstance(getattr(b, "_rungs", None), list) for b in brackets):
        raise CompatError("Ray's ASHAScheduler changed shape; the grown search's rungs cannot be seeded.")
    recorded = 0
    for bracket in brackets:
        for milestone, values in bracket._rungs:
            for trial_id, history in histories.items():
                reached = sorted(epoch for epoch in history if epoch >= milestone)
                value = history[reached[0]] if reached else None
                if value is not None and value == value:  # not NaN
                    values[trial_id] = sign * float(value)
                    recorded += 1
    return recorded
