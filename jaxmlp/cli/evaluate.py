"""``jaxmlp evaluate RUN``: test loss and accuracy, per-class metrics, the confusion matrix."""

from __future__ import annotations

import argparse
import contextlib
from pathlib import Path
from typing import Any

import numpy as np

from jaxmlp.cli import runs
from jaxmlp.cli.output import EXIT_OK, CliError, Output


def score_test_set(
    state,
    test,
    class_names,
    run_dir: Path | None,
    *,
    plots: bool,
    out: Output | None = None,
) -> dict[str, Any]:
    """Test loss/accuracy, confusion matrix and per-class metrics of a train state; optionally
    the two plots (a run directory that cannot be written to gets the scores and a warning, not
    an error)."""
    import jaxmlp
    from jaxmlp import metrics as metriclib

    images, labels = test
    scores = jaxmlp.evaluate(state, images, labels)
    pred = np.asarray(jaxmlp.predict(state, images))  # already NumPy outside a trace
    matrix = metriclib.confusion_matrix(labels, pred, len(class_names))
    metrics = metriclib.per_class_metrics(matrix)
    if plots and run_dir is not None:
        from jaxmlp import plots as plotlib

        try:
            plotlib.plot_confusion(matrix, class_names, run_dir / runs.PLOT_FILES["confusion"])
            plotlib.plot_misclassified(
                images, labels, pred, run_dir / runs.PLOT_FILES["misclassified"], class_names
            )
        except OSError as e:
            if out is None:
                raise
            out.note(
                f"warning: cannot write the plots into {run_dir} "
                f"({e.strerror or e}); scores follow without them (--no-plots skips them)"
            )
    return {
        "test_loss": scores["loss"],
        "test_accuracy": scores["accuracy"],
        "correct": scores["correct"],
        "count": scores["count"],
        "confusion_matrix": matrix.tolist(),
        "per_class": {
            name: {
                key: (int(values[i]) if key == "support" else float(values[i]))
                for key, values in metrics.items()
            }
            for i, name in enumerate(class_names)
        },
        "macro_f1": float(np.mean(metrics["f1"])),
    }


def cmd_evaluate(args: argparse.Namespace, out: Output) -> int:
    from rich.table import Table

    changes = {"test_limit": args.test_limit} if args.test_limit is not None else None
    run_dir, config, chosen = runs.load_for_inference(
        args.run, args.runs_dir, out, changes=changes, epoch=args.epoch
    )
    ds, _, _, test = runs.load_data(config)
    scores = score_test_set(
        chosen.state, test, ds.class_names, run_dir, plots=not args.no_plots, out=out
    )
    scores = {
        "run_dir": str(run_dir),
        "epoch": chosen.epoch,
        "epoch_choice": chosen.choice,
        **scores,
    }
    with contextlib.suppress(CliError):  # a read-only run can still be evaluated
        runs.write_json(run_dir / runs.EVALUATION_FILE, scores)
    out.emit(scores)
    out.line(
        f"{run_dir} (checkpoint of epoch {chosen.epoch}: {chosen.why}), {ds.name} test set, "
        f"{scores['count']:,} images"
    )
    table = Table(title="Per-class metrics", title_justify="left")
    for column in ("class", "precision", "recall", "F1", "support"):
        table.add_column(column, justify="left" if column == "class" else "right")
    for name, values in scores["per_class"].items():
        table.add_row(
            name,
            f"{values['precision']:.4f}",
            f"{values['recall']:.4f}",
            f"{values['f1']:.4f}",
            f"{values['support']:,}",
        )
    per_class = list(scores["per_class"].values())
    table.add_section()
    table.add_row(
        "macro avg",
        f"{np.mean([v['precision'] for v in per_class]):.4f}",
        f"{np.mean([v['recall'] for v in per_class]):.4f}",
        f"{scores['macro_f1']:.4f}",
        f"{scores['count']:,}",
    )
    out.table(table)
    out.table(_confusion_table(scores["confusion_matrix"], ds.class_names))
    if not args.no_plots:
        out.line(
            "plots: "
            + ", ".join(str(run_dir / runs.PLOT_FILES[k]) for k in ("confusion", "misclassified"))
        )
    out.result(
        f"test accuracy {100 * scores['test_accuracy']:.2f}% ({scores['correct']}/"
        f"{scores['count']}), test loss {scores['test_loss']:.4f}, macro F1 "
        f"{scores['macro_f1']:.4f}"
    )
    return EXIT_OK


def _confusion_table(rows, class_names):
    from rich.table import Table

    short = [str(i) for i in range(len(class_names))]
    matrix = Table(title="Confusion matrix (rows: true, columns: predicted)", title_justify="left")
    matrix.add_column("true\\pred")
    for label in short:
        matrix.add_column(label, justify="right")
    for i, row in enumerate(rows):
        label = short[i] if class_names[i] == short[i] else f"{i} {class_names[i]}"
        matrix.add_row(
            label, *(f"[bold]{v}[/bold]" if i == j else str(v) for j, v in enumerate(row))
        )
    return matrix
