"""Classification metrics from predicted and true class ids: the confusion matrix and, from it,
per-class precision, recall and F1 (NumPy, on the host)."""

from __future__ import annotations

import numpy as np


def confusion_matrix(true, predicted, n_classes: int) -> np.ndarray:
    """(n_classes, n_classes) int64 counts; rows are true classes, columns predictions."""
    true, predicted = np.asarray(true), np.asarray(predicted)
    if true.shape != predicted.shape or true.ndim != 1:
        raise ValueError(
            f"true {true.shape} and predicted {predicted.shape} must be class ids of one shape (n,)"
        )
    matrix = np.zeros((n_classes, n_classes), np.int64)
    np.add.at(matrix, (true, predicted), 1)
    return matrix


def per_class_metrics(matrix: np.ndarray) -> dict[str, np.ndarray]:
    """Precision, recall, F1 and support per class from a confusion matrix (0 where undefined):
    precision = hits / predicted, recall = hits / actual, F1 their harmonic mean."""
    matrix = np.asarray(matrix)
    hits = np.diag(matrix).astype(np.float64)
    predicted, actual = matrix.sum(axis=0), matrix.sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(predicted > 0, hits / predicted, 0.0)
        recall = np.where(actual > 0, hits / actual, 0.0)
        f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
    return {"precision": precision, "recall": recall, "f1": f1, "support": actual}
