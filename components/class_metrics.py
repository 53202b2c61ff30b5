"""Per-class figures of a classifier on a labelled split, and the confusion-matrix plot; shared by the
training report and the gate's champion-versus-challenger report."""

from __future__ import annotations

import numpy as np


def class_metrics(labels: np.ndarray, predictions: np.ndarray, classes: list[str]) -> tuple[np.ndarray, dict]:
    """The confusion matrix (rows: true, columns: predicted) and per class precision, recall and support.

    Plain numpy, the same figures as sklearn's confusion_matrix and precision_recall_fscore_support
    (zero_division=0; tested against them): importing sklearn costs the gate a second.
    """
    n = len(classes)
    labels, predictions = np.asarray(labels, dtype=np.int64), np.asarray(predictions, dtype=np.int64)
    matrix = np.bincount(labels * n + predictions, minlength=n * n).reshape(n, n)
    hits, support, predicted = np.diag(matrix), matrix.sum(axis=1), matrix.sum(axis=0)
    precision = np.divide(hits, predicted, out=np.zeros(n), where=predicted > 0)
    recall = np.divide(hits, support, out=np.zeros(n), where=support > 0)
    per_class = {name: {"precision": float(p), "recall": float(r), "support": int(s)}
                 for name, p, r, s in zip(classes, precision, recall, support)}
    return matrix, per_class


def plot_confusion(ax, matrix: np.ndarray, classes: list[str], title: str) -> None:
    """Draw ``matrix`` on ``ax`` with its counts written in the cells."""
    import matplotlib.pyplot as plt

    indices = list(range(len(classes)))
    ax.imshow(matrix, cmap="Blues")
    ax.set(xticks=indices, yticks=indices, xticklabels=classes, yticklabels=classes, xlabel="predicted",
           ylabel="true", title=title)
    plt.setp(ax.get_xticklabels(), rotation=45, ha="right")
    for (i, j), count in np.ndenumerate(matrix):
        ax.text(j, i, str(count), ha="center", va="center", fontsize=8,
                color="white" if count > matrix.max() / 2 else "black")
