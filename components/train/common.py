"""What both frameworks' training loops share: the LR schedule, checkpoint bookkeeping, early
stopping on the validation split, and the test-split reports (confusion matrix, per-class
precision and recall, as plots)."""

from __future__ import annotations

import hashlib
import json
import math
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from components.atomic import write_json
from components.html_report import legend_beside
from components.run_files import CHECKPOINTS
from components.spec import TaskSpec, TrainingSpec


def learning_rate(cfg: TrainingSpec, step: int, total_steps: int, steps_per_epoch: int) -> float:
    """The LR at optimizer step ``step`` (0-based): linear warm-up, then constant, cosine to zero, or
    one-cycle (a cosine rise from lr/25 to lr over the warm-up, or 30% of training without one, then a
    cosine fall to lr/25e4, as torch's OneCycleLR)."""
    peak = cfg.learning_rate
    warmup = min(int(cfg.warmup_epochs * steps_per_epoch), max(total_steps - 1, 0))
    if cfg.schedule == "onecycle":
        rise = warmup or max(int(0.3 * total_steps), 1)
        if step < rise:
            return _cosine(peak / 25, peak, step / rise)
        return _cosine(peak, peak / 25e4, (step - rise) / max(total_steps - rise, 1))
    if step < warmup:
        return peak * (step + 1) / warmup
    if cfg.schedule == "cosine":
        return _cosine(peak, 0.0, (step - warmup) / max(total_steps - warmup, 1))
    return peak


def _cosine(start: float, end: float, progress: float) -> float:
    return end + (start - end) * 0.5 * (1 + math.cos(math.pi * min(max(progress, 0.0), 1.0)))


def precision_note(precision: str, on_gpu: bool) -> str | None:
    """What to tell a user who trains in mixed precision on a CPU that has no bf16 instructions."""
    from components.machine import cpu_has_bf16

    if precision != "mixed" or on_gpu or cpu_has_bf16():
        return None
    return ("mixed precision on a CPU without bf16 instructions (neither AVX512-BF16 nor AMX-BF16): bf16 is emulated "
            "and slower than fp32 (make bench: PyTorch 0.42x on digits; Keras 0.1x on shapes resnet, which Relay "
            "brings to fp32's speed with XLA); set training.precision: fp32 to train faster on this machine")


@dataclass
class TrainState:
    """Where a training stands after its last finished epoch; saved with every checkpoint."""

    fingerprint: str
    epochs_done: int = 0
    best_accuracy: float = -1.0
    best_epoch: int = -1
    history: list[dict] = field(default_factory=list)
    resumed_from: int | None = None

    def record(self, epoch: int, metrics: dict) -> bool:
        """Add one epoch's metrics; return whether its validation accuracy is the best so far."""
        self.history.append({"epoch": epoch + 1, **metrics})
        self.epochs_done = epoch + 1
        if metrics["val_accuracy"] > self.best_accuracy:
            self.best_accuracy, self.best_epoch = metrics["val_accuracy"], epoch + 1
            return True
        return False

    def should_stop(self, patience: int | None) -> bool:
        return patience is not None and self.epochs_done - self.best_epoch >= patience


def fingerprint(spec: TaskSpec, data_version: str) -> str:
    """What a checkpoint must match to be resumed: the model, training, input and data version."""
    keys = {"model": spec.model.model_dump(), "training": spec.training.model_dump(),
            "input": spec.input.model_dump(), "framework": spec.framework, "data": data_version}
    return hashlib.sha256(json.dumps(keys, sort_keys=True, default=str).encode()).hexdigest()[:16]


class Checkpoints:
    """``<run>/train.checkpoints/``: ``state.json`` and the checkpoints of the last and the best epoch.

    It lives outside the step's atomic output directory, so a killed training (an Airflow retry of the
    same run) resumes from its last epoch; it is removed once the trained model is published.
    """

    STATE = "state.json"

    def __init__(self, out_dir: Path, spec: TaskSpec, data_version: str, suffix: str):
        self.dir = out_dir.parent / CHECKPOINTS
        self.fingerprint = fingerprint(spec, data_version)
        self.suffix = suffix

    def resume(self) -> TrainState | None:
        path = self.dir / self.STATE
        if not path.is_file():
            return None
        state = TrainState(**json.loads(path.read_text()))
        if state.fingerprint != self.fingerprint:
            shutil.rmtree(self.dir)  # another configuration's checkpoint: start over
            return None
        return state

    def fresh(self) -> TrainState:
        shutil.rmtree(self.dir, ignore_errors=True)
        self.dir.mkdir(parents=True)
        return TrainState(self.fingerprint)

    def save_state(self, state: TrainState) -> None:
        """Commit an epoch: written after its files, so a kill at any point leaves a state whose files
        exist; files of other epochs are removed only after it."""
        write_json(self.dir / self.STATE, asdict(state))
        keep = {self.last(state).name, self.best(state).name}
        for stale in self.dir.glob("epoch-*"):
            if stale.name not in keep:
                stale.unlink()

    def last(self, state: TrainState, epochs_done: int | None = None) -> Path:
        """The full checkpoint (weights and optimizer) after ``epochs_done`` (default: the state's) epochs."""
        return self.dir / f"epoch-{epochs_done if epochs_done is not None else state.epochs_done}{self.suffix}"

    def best(self, state: TrainState) -> Path:
        """The weights of the best epoch so far (its full checkpoint)."""
        return self.last(state, state.best_epoch)

    def remove(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)


def write_test_reports(out_dir: Path, labels: np.ndarray, predictions: np.ndarray, classes: list[str], live) -> dict:
    """The test split's confusion matrix and per-class precision and recall: JSON, dvclive plot data
    and PNG plots. Returns the per-class table."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from components.class_metrics import class_metrics, plot_confusion

    matrix, per_class = class_metrics(labels, predictions, classes)
    precision = [row["precision"] for row in per_class.values()]
    recall = [row["recall"] for row in per_class.values()]
    live.log_sklearn_plot("confusion_matrix", [classes[i] for i in labels], [classes[i] for i in predictions],
                          name="test/confusion_matrix.json")

    size = max(4.0, 0.45 * len(classes) + 2)
    fig, ax = plt.subplots(figsize=(size, size))
    plot_confusion(ax, matrix, classes, "test split: confusion matrix")
    fig.tight_layout()
    fig.savefig(out_dir / "confusion_matrix.png", dpi=100)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(max(5.0, 0.6 * len(classes) + 2), 3.5))
    x = np.arange(len(classes))
    ax.bar(x - 0.2, precision, 0.4, label="precision")
    ax.bar(x + 0.2, recall, 0.4, label="recall")
    ax.set(xticks=x, xticklabels=classes, ylim=(0, 1.05), title="test split: per-class precision and recall")
    plt.setp(ax.get_xticklabels(), rotation=45, ha="right")
    legend_beside(ax)
    fig.tight_layout()
    fig.savefig(out_dir / "per_class.png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    write_json(out_dir / "per_class.json", {"per_class": per_class, "confusion_matrix": matrix.tolist(),
                                            "classes": classes})
    return per_class


def publish_common(tmp: Path, spec: TaskSpec, arch, prep, splits: dict, state: TrainState, log, test: tuple,
                   seconds: float, fine_tune: dict | None, framework_metrics: dict) -> None:
    """Write what every trained model carries into ``tmp`` (the step's temp output): architecture,
    preprocessing, test reports, dvclive logs and metrics.json (the framework adds its own fields).
    ``test`` is (accuracy, true labels, predicted labels) on the test split."""
    from components.run_files import METRICS, PREPROCESSING

    test_accuracy, truth, predicted = test
    arch.save(tmp)
    write_json(tmp / PREPROCESSING, prep.to_dict())
    write_test_reports(tmp, truth, predicted, spec.dataset.classes, log.live)
    log.copy_to(tmp)
    trained_epochs = state.epochs_done - (state.resumed_from or 0)
    write_json(tmp / METRICS, {
        "model": arch.name, "precision": spec.training.precision,
        "precision_note": precision_note(spec.training.precision, framework_metrics.get("device") not in (None, "cpu")),
        "epochs": state.epochs_done,
        "best_epoch": state.best_epoch, "train_seconds": seconds,
        "samples_per_second": trained_epochs * len(splits["train"]) / seconds if trained_epochs else None,
        "val_accuracy": state.best_accuracy, "test_accuracy": test_accuracy,
        "train_images": len(splits["train"]), "val_images": len(splits["val"]), "test_images": len(splits["test"]),
        "history": state.history, "resumed_from_epoch": state.resumed_from,
        "fine_tuned_from": spec.model.checkpoint if fine_tune else None, "fine_tune": fine_tune,
        **framework_metrics,
    })
