"""TensorBoard for a search, in the project's names, on Ray Tune's public LoggerCallback interface.

Per trial (one event file in its folder): every epoch's metrics stepped by the trial's epoch (each epoch of a
report that holds several, report_epochs, at its own step), and at its end one HParams session: the trial's
searched hyperparameters and its `status` (completed, stopped_early, failed), ended as a failure for a failed
trial. Once per search (an event file in the experiment folder): the HParams experiment, listing every
hyperparameter the space can suggest (conditional ones too, with their choices or ranges) and the project's
metrics, `best_<metric>` first. TensorBoard takes that one definition for all trials, so its HParams table has
exactly these columns, and none of Tune's internals (done, timesteps_total, ...).

Event files are flushed by their writers every FLUSH_S seconds (not after every result, as Tune's logger does:
~10 ms of the driver's loop each), closed when the trial ends; the experiment's end, Ctrl-C included, closes all.
tensorboardX is loaded with torch hidden (core/torch_free.py): the driver never imports torch.
"""
from __future__ import annotations

import math
from pathlib import Path

from ray.tune.logger import LoggerCallback

from core import metrics as metric_registry
from core.report_policy import expand
from core.torch_free import import_tensorboardx_without_torch
from core.trial_status import FATAL_ERROR, TrialStatus

FLUSH_S = 10  # TensorBoard shows a running trial's curves at most this late
CURVES = ("train_loss", "val_loss", "val_acc", "val_macro_f1", "val_top5_acc", "lr", "head_lr", "epoch_seconds",
          "train_images_per_s")
STATUS = "status"


def table_metrics(metric: str) -> list[str]:
    """The HParams table's metric columns: the best value of the search metric, then each curve's last."""
    return list(dict.fromkeys([f"best_{metric}", *metric_registry.NAMES, "train_loss", "lr", "epoch"]))


class TrialTensorBoard(LoggerCallback):
    def __init__(self, *, metric: str, max_epochs: int, parameters: dict):
        """parameters: name -> Optuna distribution of every parameter the space can suggest
        (search.space_file.searched_parameters)."""
        import_tensorboardx_without_torch()
        self.metric, self.max_epochs = metric, max_epochs
        self.parameters = dict(parameters)
        self._writers: dict = {}      # trial -> SummaryWriter, opened at its first result
        self._best: dict = {}         # trial -> best value of the search metric so far
        self._last_epoch: dict = {}
        self._experiment_written = False

    def __getstate__(self):  # Tune pickles the run config's callbacks with the experiment: no open files
        return {**self.__dict__, "_writers": {}, "_experiment_written": False}

    def log_trial_start(self, trial):
        if not self._experiment_written:
            self._write_experiment(Path(trial.local_experiment_path))
        stale = self._writers.pop(trial, None)  # a trial started again after a failure: a new file
        if stale is not None:
            stale.close()

    def log_trial_result(self, iteration: int, trial, result: dict):
        writer = self._writer(trial)
        for row in expand(result):
            epoch = row.get("epoch")
            if not epoch:
                continue
            for key in CURVES:
                value = row.get(key)
                if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
                    writer.add_scalar(key, value, global_step=epoch)
            value = row.get(self.metric)
            if isinstance(value, (int, float)) and metric_registry.is_better(self.metric, value, self._best.get(trial)):
                self._best[trial] = value
            if trial in self._best:
                writer.add_scalar(f"best_{self.metric}", self._best[trial], global_step=epoch)
            writer.add_scalar("epoch", epoch, global_step=epoch)
            self._last_epoch[trial] = epoch

    def log_trial_end(self, trial, failed: bool = False):
        writer = self._writer(trial)  # a trial that ended before its first result still gets its session
        status = self._status(trial, failed)
        params = {k: v for k, v in (trial.evaluated_params or {}).items() if isinstance(v, (str, bool, int, float))}
        for summary in session_summaries({**params, STATUS: status.value}, failed=status == TrialStatus.FAILED):
            writer.file_writer.add_summary(summary)
        writer.close()
        for table in (self._writers, self._best, self._last_epoch):
            table.pop(trial, None)

    def on_experiment_end(self, trials, **info):
        for writer in self._writers.values():
            writer.close()
        self._writers.clear()

    def _status(self, trial, failed: bool) -> TrialStatus:
        last = trial.last_result or {}
        if failed or last.get(FATAL_ERROR):
            return TrialStatus.FAILED
        epochs = int(last.get("epoch") or self._last_epoch.get(trial, 0))
        return TrialStatus.COMPLETED if epochs >= self.max_epochs else TrialStatus.STOPPED_EARLY

    def _writer(self, trial):
        if trial not in self._writers:
            from tensorboardX import SummaryWriter

            self._writers[trial] = SummaryWriter(trial.local_path, flush_secs=FLUSH_S)
        return self._writers[trial]

    def _write_experiment(self, folder: Path) -> None:
        from tensorboardX import SummaryWriter

        folder.mkdir(parents=True, exist_ok=True)
        with SummaryWriter(str(folder), flush_secs=FLUSH_S) as writer:
            writer.file_writer.add_summary(experiment_summary(self.parameters, table_metrics(self.metric)))
        self._experiment_written = True


def experiment_summary(parameters: dict, metrics: list[str]):
    """TensorBoard's HParams experiment: every searched parameter with its domain, `status`, and the metrics."""
    import optuna
    from tensorboardX.proto.api_pb2 import DataType, Experiment, HParamInfo, Interval, MetricInfo, MetricName
    from tensorboardX.proto.plugin_hparams_pb2 import HParamsPluginData
    from tensorboardX.proto.summary_pb2 import Summary, SummaryMetadata
    from google.protobuf.struct_pb2 import ListValue

    infos = []
    for name, dist in sorted(parameters.items()):
        if isinstance(dist, optuna.distributions.CategoricalDistribution):
            choices = list(dist.choices)
            kind = _data_type(choices[0])
            domain = ListValue()
            domain.extend([float(c) if kind == "DATA_TYPE_FLOAT64" else c for c in choices])
            infos.append(HParamInfo(name=name, type=DataType.Value(kind), domain_discrete=domain))
        else:
            infos.append(HParamInfo(name=name, type=DataType.Value("DATA_TYPE_FLOAT64"),
                                    domain_interval=Interval(min_value=float(dist.low), max_value=float(dist.high))))
    status = ListValue()
    status.extend([s.value for s in TrialStatus if s.ended])
    infos.append(HParamInfo(name=STATUS, type=DataType.Value("DATA_TYPE_STRING"), domain_discrete=status))
    experiment = Experiment(hparam_infos=infos, metric_infos=[MetricInfo(name=MetricName(tag=m)) for m in metrics])
    content = HParamsPluginData(experiment=experiment, version=0)
    metadata = SummaryMetadata(plugin_data=SummaryMetadata.PluginData(plugin_name="hparams",
                                                                      content=content.SerializeToString()))
    return Summary(value=[Summary.Value(tag="_hparams_/experiment", metadata=metadata)])


def _data_type(value) -> str:
    if isinstance(value, bool):
        return "DATA_TYPE_BOOL"
    if isinstance(value, (int, float)):
        return "DATA_TYPE_FLOAT64"
    return "DATA_TYPE_STRING"


def session_summaries(params: dict, failed: bool):
    """tensorboardX's session start and end summaries; the end marked as a failure for a failed trial."""
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
