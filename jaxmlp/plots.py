"""PNG figures of a training run, drawn with matplotlib's non-interactive Agg backend.

Each function writes one file through `jaxmlp._files.atomic_write` (a temporary file
renamed into place), so a figure is never left half-written, and returns its path.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from jaxmlp._files import atomic_write


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: str | os.PathLike[str]) -> Path:
    try:
        return atomic_write(
            path, lambda f: fig.savefig(f, dpi=110, format="png"), make_parents=False
        )
    finally:
        _pyplot().close(fig)


def plot_history(history: Sequence[dict[str, Any]], path: str | os.PathLike[str]) -> Path:
    """Loss and accuracy per epoch, training and (when recorded) validation, side by side.

    ``history``: one record per epoch with ``epoch``, ``loss``, ``train_accuracy`` and
    optionally ``validation_loss`` / ``validation_accuracy`` (accuracies as fractions).
    """
    plt = _pyplot()
    epochs = [r["epoch"] for r in history]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    ax_loss.plot(epochs, [r["loss"] for r in history], "o-", label="train")
    ax_acc.plot(epochs, [100 * r["train_accuracy"] for r in history], "o-", label="train")
    if history and "validation_loss" in history[0]:
        ax_loss.plot(epochs, [r["validation_loss"] for r in history], "s-", label="validation")
        ax_acc.plot(
            epochs, [100 * r["validation_accuracy"] for r in history], "s-", label="validation"
        )
    ax_loss.set(title="Loss", xlabel="epoch", ylabel="loss (mean per example)")
    ax_acc.set(title="Accuracy", xlabel="epoch", ylabel="accuracy (%)")
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        ax.legend()
        ax.xaxis.get_major_locator().set_params(integer=True)
    fig.subplots_adjust(left=0.08, right=0.98, bottom=0.13, top=0.9, wspace=0.25)
    return _save(fig, path)


def plot_misclassified(
    images: np.ndarray,
    true: np.ndarray,
    pred: np.ndarray,
    path: str | os.PathLike[str],
    class_names: Sequence[str],
    *,
    limit: int = 25,
) -> Path:
    """The first ``limit`` misclassified images in a 5-column grid, titled "true/predicted".

    ``images``: (n, 784) or (n, 28, 28) in any scale (each is shown with its own range);
    ``true``, ``pred``: (n,) class ids. Images with ``true == pred`` are skipped.
    """
    plt = _pyplot()
    wrong = np.flatnonzero(np.asarray(true) != np.asarray(pred))[:limit]
    columns = 5
    rows = max(1, -(-len(wrong) // columns))
    side = int(round(np.sqrt(np.asarray(images[0]).size)))
    # One image holding the whole grid (with a gap for each title) draws far faster than
    # one axes per digit.
    cell_w, cell_h = side + 4, side + 12
    canvas = np.zeros((rows * cell_h, columns * cell_w))
    fig, ax = plt.subplots(figsize=(columns * 1.5, rows * 1.6 + 0.4))
    for slot, index in enumerate(wrong):
        r, c = divmod(slot, columns)
        image = np.asarray(images[index], np.float64).reshape(side, side)
        low, high = image.min(), image.max()
        image = (image - low) / (high - low) if high > low else image * 0
        top, left = r * cell_h + 10, c * cell_w + 2
        canvas[top : top + side, left : left + side] = image
        ax.text(
            left + side / 2,
            top - 2,
            f"{class_names[int(true[index])]}/{class_names[int(pred[index])]}",
            ha="center",
            va="bottom",
            fontsize=9,
        )
    ax.imshow(canvas, cmap="Greys", interpolation="nearest", vmin=0, vmax=1)
    ax.axis("off")
    title = (
        "first misclassified test images (true/predicted)"
        if len(wrong)
        else "no misclassified test images"
    )
    ax.set_title(title, fontsize=10)
    fig.subplots_adjust(left=0.02, right=0.98, bottom=0.02, top=0.92)
    return _save(fig, path)


def plot_confusion(
    matrix: np.ndarray, class_names: Sequence[str], path: str | os.PathLike[str]
) -> Path:
    """Confusion matrix (rows: true class, columns: predicted class) with counts in the cells."""
    plt = _pyplot()
    matrix = np.asarray(matrix)
    n = matrix.shape[0]
    fig, ax = plt.subplots(figsize=(1.0 + 0.62 * n, 0.8 + 0.58 * n))
    # Log-like colour scale: the diagonal dwarfs the errors, which are what one looks for.
    shown = np.log1p(matrix)
    ax.imshow(shown, cmap="Blues")
    threshold = shown.max() / 2 if shown.size else 0
    for i in range(n):
        for j in range(n):
            ax.text(
                j,
                i,
                str(int(matrix[i, j])),
                ha="center",
                va="center",
                fontsize=7,
                color="white" if shown[i, j] > threshold else "black",
            )
    labels = [str(c) for c in class_names]
    short = max(len(label) for label in labels) > 3
    ax.set_xticks(
        range(n), labels, rotation=45 if short else 0, ha="right" if short else "center", fontsize=8
    )
    ax.set_yticks(range(n), labels, fontsize=8)
    ax.set(
        xlabel="predicted",
        ylabel="true",
        title=f"Confusion matrix ({int(np.trace(matrix))}/{int(matrix.sum())} correct)",
    )
    fig.subplots_adjust(
        left=0.2 if short else 0.12, right=0.97, bottom=0.2 if short else 0.1, top=0.93
    )
    return _save(fig, path)


def plot_sweep(
    rows: Sequence[dict[str, Any]],
    keys: Sequence[str],
    path: str | os.PathLike[str],
    *,
    monitor: str = "validation_accuracy",
    log_keys: Sequence[str] = (),
) -> Path:
    """A sweep's results: for each swept key, every configuration's best ``monitor`` value
    against its value of the key (a log axis for ``log_keys``; categories side by side), and
    the validation accuracy of every configuration per epoch.

    ``rows``: one per configuration with the keys' values, ``best_<monitor>`` and ``history``
    (its per-epoch records).
    """
    plt = _pyplot()
    panels = len(keys) + 1
    fig, axes = plt.subplots(1, panels, figsize=(4.2 * panels, 3.8), squeeze=False)
    axes = axes[0]
    percent = monitor == "validation_accuracy"
    best = [r[f"best_{monitor}"] for r in rows]
    scale = 100.0 if percent else 1.0
    label = "best validation accuracy (%)" if percent else "best validation loss"
    for ax, key in zip(axes, keys, strict=False):
        values = [r[key] for r in rows]
        if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
            x = values
            if key in log_keys:
                ax.set_xscale("log")
        else:
            names = list(dict.fromkeys(str(v) for v in values))
            x = [names.index(str(v)) for v in values]
            ax.set_xticks(range(len(names)), names)
        ax.scatter(x, [scale * b for b in best], alpha=0.75)
        ax.set(xlabel=key, ylabel=label)
        ax.grid(alpha=0.3)
    curves = axes[-1]
    for row in rows:
        epochs = [r["epoch"] for r in row["history"]]
        curves.plot(epochs, [100 * r["validation_accuracy"] for r in row["history"]], alpha=0.5)
    curves.set(title="every configuration", xlabel="epoch", ylabel="validation accuracy (%)")
    curves.grid(alpha=0.3)
    curves.xaxis.get_major_locator().set_params(integer=True)
    fig.tight_layout()
    return _save(fig, path)
