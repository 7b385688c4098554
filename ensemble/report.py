"""What the ensemble leaves for people: per-class scores, the worst classes, the confusion matrix (PNG and
TensorBoard), prediction CSVs and the printed summary. Driver side: no torch."""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pandas as pd

from core.atomic import write_bytes, write_text
from core.data import shown
from core.files import CONFUSION_PNG

TENSORBOARD_DIR = "ensemble"
WORST_SHOWN = 10


def per_class_table(labels: np.ndarray, pred: np.ndarray, classes: list[str]) -> pd.DataFrame:
    from sklearn.metrics import precision_recall_fscore_support

    precision, recall, f1, support = precision_recall_fscore_support(
        labels, pred, labels=np.arange(len(classes)), zero_division=0)
    return pd.DataFrame({"class": classes, "precision": precision, "recall": recall, "f1": f1,
                         "support": support.astype(int)})


def worst_classes(per_class: pd.DataFrame, n: int = WORST_SHOWN) -> pd.DataFrame:
    # Classes without val images have nothing to judge them by.
    judged = per_class[per_class["support"] > 0]
    return judged.sort_values(["f1", "recall", "class"], kind="stable").head(n).reset_index(drop=True)


def write_predictions(path: Path, files, pred: np.ndarray, classes: list[str], say=print) -> None:
    # shown(): a file or class name that is not valid UTF-8 (Linux allows any bytes) is written with \xNN
    # escapes; written raw, the CSV's UTF-8 encoder would fail after every trial had trained.
    table = pd.DataFrame({"image_name": [shown(Path(f).stem) for f in files],
                          "pred_label": [shown(classes[i]) for i in pred]})
    repeated = table["image_name"][table["image_name"].duplicated()].unique()
    if len(repeated):
        say(f"Warning: {len(repeated)} image name(s) occur more than once with different extensions "
            f"(first: {', '.join(repeated[:5])}); prediction.csv has one row per file.")
    write_text(path, table.to_csv(index=False))  # whole or not at all: an earlier prediction stays until then


def plot_confusion(run_dir: Path, labels, pred, classes: list[str], selection) -> None:
    """confusion_matrix.png, and the same figure plus the headline scores in TensorBoard."""
    from matplotlib.figure import Figure  # no pyplot: no global figure state, no display needed
    from sklearn.metrics import confusion_matrix

    matrix = confusion_matrix(labels, pred, labels=np.arange(len(classes)), normalize="true")
    side = min(4 + 0.12 * len(classes), 20)
    fig = Figure(figsize=(side, side), layout="constrained")
    ax = fig.add_subplot()
    image = ax.imshow(matrix, cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(image, ax=ax, shrink=0.8, label="fraction of the true class")
    if len(classes) <= 30:  # beyond that, tick labels overlap into noise
        ax.set_xticks(range(len(classes)), classes, rotation=90)
        ax.set_yticks(range(len(classes)), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"{selection.strategy} ensemble on val (rows normalised)")
    png = io.BytesIO()
    fig.savefig(png, format="png", dpi=100)
    write_bytes(run_dir / CONFUSION_PNG, png.getvalue())

    earlier = list((run_dir / TENSORBOARD_DIR).glob("events.out.tfevents.*"))
    scores = selection.strategies[selection.strategy]
    _write_tensorboard(run_dir / TENSORBOARD_DIR, "ensemble/confusion_matrix_val", (run_dir / CONFUSION_PNG),
                       {f"ensemble/{basis}_{key}": scores[basis][key]
                        for basis in ("val", "cv") if basis in scores for key in ("acc", "macro_f1")})
    for old in earlier:  # only once the new one is written: TensorBoard shows the current ensemble, not each attempt
        old.unlink(missing_ok=True)


def _write_tensorboard(logdir: Path, image_tag: str, png: Path, scalars: dict[str, float]) -> None:
    """One event file with the PNG and the scalars (tensorboardX, loaded without torch in the driver)."""
    import matplotlib.image

    from core.torch_free import import_tensorboardx_without_torch

    import_tensorboardx_without_torch()
    from tensorboardX import SummaryWriter

    with SummaryWriter(str(logdir)) as writer:
        writer.add_image(image_tag, matplotlib.image.imread(png)[..., :3], dataformats="HWC")
        for tag, value in scalars.items():
            writer.add_scalar(tag, float(value), global_step=0)


def summary(manifest: dict) -> str:
    members = pd.DataFrame(manifest["scores"]["members"]).set_index("trial_id")
    members["params_m"] = members.pop("param_count") / 1e6
    rows = {name: {"members": s["members"], "params_m": s["params"] / 1e6,
                   **{f"val_{k}": s["val"][k] for k in ("acc", "macro_f1")},
                   **{f"cv_{k}": s["cv"][k] for k in ("acc", "macro_f1") if "cv" in s}}
            for name, s in manifest["scores"]["strategies"].items()}
    chosen = ", ".join(f"{m['trial_id']} ({m['backbone']}, weight {m['weight']:.2f})" for m in manifest["members"])
    worst = ", ".join(f"{w['class']} (F1 {w['f1']:.2f})" for w in manifest["worst_classes"])
    return "\n".join([
        f"Candidates on {manifest['val_images']} val images (val_acc, val_macro_f1 alone):",
        members[["params_m", "acc", "macro_f1"]].to_string(float_format="%.4f"),
        f"Strategies (val: fitted and scored on all of val; cv: out-of-fold; chosen by "
        f"{manifest['selection']['picked_by']}):",
        pd.DataFrame.from_dict(rows, orient="index").to_string(float_format="%.4f"),
        f"Ensemble: {manifest['strategy']} of {len(manifest['members'])} member(s), "
        f"{manifest['param_total'] / 1e6:.2f}M of {manifest['budget_m']:g}M parameters: {chosen}.",
        f"Worst classes on val: {worst}.",
    ])


