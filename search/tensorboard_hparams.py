"""Ray's TensorBoard logger, with HParams that compare every trial.

Ray's TBXLoggerCallback writes, per trial, an HParams *experiment* summary listing only that trial's
hyperparameters, and nothing at all for a trial that failed before its first result. TensorBoard's
HParams plugin takes the first experiment summary it finds as the definition for all runs, so
conditional hyperparameters of other trials (mixup alpha, MLP width) vanish from its table.

Here each trial writes only its session start (its hyperparameters) and session end (success, or
failure for an errored trial, or one that reported a fatal_error). With no experiment summary, TensorBoard
builds the experiment from the union of all sessions: every trial, every hyperparameter, every metric.

Curves are stepped by the trial's epoch, each epoch of a report that holds several (report_epochs) at its own.
"""
from __future__ import annotations

import sys
from concurrent.futures import ThreadPoolExecutor

from ray.tune.logger import TBXLoggerCallback
from ray.tune.result import TIMESTEPS_TOTAL
from ray.tune.utils import flatten_dict

from trainable.report_policy import expand
from trainable.trial_status import FATAL_ERROR


def import_tensorboardx_without_torch() -> None:
    """tensorboardX imports torch whenever it is installed, only to accept torch tensors as values; the driver
    logs plain floats, and torch would cost it ~500 MB and seconds of start-up (BENCHMARKS.md, Scale). Load
    tensorboardX once with torch hidden; torch stays importable for everything else."""
    if "torch" in sys.modules or "tensorboardX.writer" in sys.modules:
        return
    sys.modules["torch"] = None  # `import torch` raises ImportError, which tensorboardX handles
    try:
        import tensorboardX.writer  # noqa: F401
    finally:
        del sys.modules["torch"]


FLUSH_S = 10  # TensorBoard shows a running trial's curves at most this late


class HParamsLoggerCallback(TBXLoggerCallback):
    """Also: Tune flushes (and fsyncs) each trial's event file after every result, serially in the driver's
    loop: ~10 ms a result, a third of the driver's per-result time at 32 trials (BENCHMARKS.md, Scale). Here
    the writers' own background thread flushes every FLUSH_S seconds, and a trial's file is flushed when it ends.
    Closing it (a last flush and fsync, ~10 ms a trial) happens on a thread of its own, off the driver's loop;
    the experiment's end, Ctrl-C included, waits for every file to be closed.
    A trial's event file is opened at its first result, not at its start as Tune does: opening it (a file and
    the writer's thread, ~2 ms) would otherwise be paid once per trial in a row in the first wave of starts,
    which the whole cluster waits on (BENCHMARKS.md, "A trial start at half the cost")."""

    _closer: ThreadPoolExecutor | None = None  # started at the first trial's end; never pickled (Tune pickles callbacks)

    def __getstate__(self):
        return {**self.__dict__, "_closer": None, "_unopened": set()}

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        base = self._summary_writer_cls

        class BackgroundFlushWriter(base):
            def __init__(self, logdir, flush_secs=FLUSH_S, **kw):
                super().__init__(logdir, flush_secs=FLUSH_S, **kw)

            def flush(self):  # called by Tune after every result; close() still flushes
                pass

        self._summary_writer_cls = BackgroundFlushWriter
        self._unopened = set()  # trials started whose event file is not open yet

    def log_trial_start(self, trial):
        stale = self._trial_writer.pop(trial, None)  # a trial started again after a failure: a new file, as Tune
        if stale is not None:
            stale.close()
        self._unopened.add(trial)

    def _open(self, trial) -> None:
        self._unopened.discard(trial)
        super().log_trial_start(trial)

    def log_trial_result(self, iteration: int, trial, result: dict):
        if trial not in self._trial_writer:
            self._open(trial)
        # Every epoch at its own step: the epochs a trial reported in one go (report_epochs,
        # trainable/report_policy.py) first, then the result. Tune would step by training_iteration, which
        # counts reports, not epochs; its logger steps by timesteps_total when a result has one.
        for row in expand(result):
            epoch = row.get("epoch")
            stepped = {**row, TIMESTEPS_TOTAL: epoch} if epoch else row
            super().log_trial_result(iteration, trial, {"training_iteration": result["training_iteration"], **stepped})

    def log_trial_end(self, trial, failed: bool = False):
        if trial in self._unopened:  # it ended before its first result: its session is still written
            self._open(trial)
        writer = self._trial_writer.pop(trial, None)
        self._trial_result.pop(trial, None)
        if writer is None:
            return
        params = {k: v for k, v in flatten_dict(trial.evaluated_params or {}).items()
                  if isinstance(v, (str, bool, int, float))}
        failed = failed or bool((trial.last_result or {}).get(FATAL_ERROR))  # a config/data error, not retried
        for summary in _session_summaries(params, failed):
            writer.file_writer.add_summary(summary)
        if self._closer is None:
            self._closer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tensorboard-close")
        self._closer.submit(writer.close)

    def on_experiment_end(self, trials, **info):
        self.wait_for_closed_files()
        super().on_experiment_end(trials, **info)

    def wait_for_closed_files(self) -> None:
        """Every ended trial's event file closed (complete on disk)."""
        if self._closer is not None:
            self._closer.shutdown(wait=True)
            self._closer = None


def _session_summaries(params: dict, failed: bool):
    """tensorboardX's session start and end summaries; the end marked as a failure for an errored trial."""
    from tensorboardX.proto.api_pb2 import Status
    from tensorboardX.proto.plugin_hparams_pb2 import HParamsPluginData
    from tensorboardX.summary import hparams

    _, start, end = hparams(hparam_dict=params, metric_dict={})
    if failed:
        plugin = end.value[0].metadata.plugin_data
        data = HParamsPluginData.FromString(plugin.content)
        data.session_end_info.status = Status.Value("STATUS_FAILURE")
        plugin.content = data.SerializeToString()
    return start, end
