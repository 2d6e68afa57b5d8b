"""The comparison table (the texts' figures beside ours) built from the result files.

``python -m experiments.report`` prints Markdown for experiments/README.md; rows whose result
file is missing say so.
"""

from __future__ import annotations

import json

from experiments.common import RESULTS


def _load(name):
    """A result file by name, relative to experiments/results (e.g. ``h100/records_mnist``)."""
    path = RESULTS / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def _pm(summary, scale=100, digits=2):
    if summary["n"] == 1:
        return f"{summary['mean'] * scale:.{digits}f}"
    return (
        f"{summary['mean'] * scale:.{digits}f} +- {summary['std'] * scale:.{digits}f} "
        f"(n={summary['n']})"
    )


def rows():
    out = []
    cmd = "`python -m experiments.{}`"

    r = _load("mxnet_scratch")
    if r:
        losses = " ".join(f"{h['loss']:.3f}" for h in r["runs"][0]["history"])
        out.append(
            (
                "MXNet scratch MLP",
                "average training loss per epoch (seed 0)",
                "printed curve (no figure fixed)",
                losses,
                cmd.format("mxnet_scratch"),
            )
        )
        out.append(
            (
                "MXNet scratch MLP",
                "test accuracy after 10 epochs, %",
                "not given",
                _pm(r["test_accuracy"]),
                cmd.format("mxnet_scratch"),
            )
        )

    r = _load("pytorch_ch4")
    if r:
        text = r["tables"].get("text", {})
        for row, reported in r["reported"].items():
            if row in text:
                run = r["runs"][text[row]]
                ours = f"{run['test_correct']}"
                if row == "base":
                    seeds = [
                        r["runs"][text[k]]["test_correct"] for k in text if k.startswith("base")
                    ]
                    ours = (
                        f"{run['test_correct']} (loss {run['test_loss']:.4f}; seeds: "
                        f"{', '.join(map(str, seeds))})"
                    )
                shown = "about 8100 (81 %)" if row == "fashion_mnist" else f"{reported}"
                if row == "base":
                    shown = "9057 (loss 0.3345)"
                out.append(
                    (
                        "PyTorch ch. 4",
                        f"{row}: correct of 10000",
                        shown,
                        ours,
                        cmd.format("pytorch_ch4"),
                    )
                )
        if "standardized" in text:
            run = r["runs"][text["standardized"]]
            out.append(
                (
                    "PyTorch ch. 4",
                    "standardized inputs (0.1307, 0.3081)",
                    "not given",
                    f"{run['test_correct']}",
                    cmd.format("pytorch_ch4"),
                )
            )

    r = _load("raschka")
    if r:
        f, rep = r["final"], r["reported"]
        for key in ("train_accuracy", "validation_accuracy", "test_accuracy"):
            out.append(
                (
                    "Raschka NeuralNetMLP",
                    f"{key.replace('_', ' ')}, %",
                    f"{rep[key] * 100:.2f}",
                    f"{f[key] * 100:.2f}",
                    cmd.format("raschka"),
                )
            )
        proof = r["translation_proof"]
        out.append(
            (
                "Raschka NeuralNetMLP",
                "NumPy port vs jaxmlp, largest parameter difference, 20 steps",
                "(translation proof)",
                f"{max(proof['float64']['max_abs_difference']):.1e} (float64), "
                f"{max(proof['float32']['max_abs_difference']):.1e} (float32)",
                cmd.format("raschka"),
            )
        )

    r = _load("d2l_softmax")
    if r:
        out.append(
            (
                "d2l softmax regression",
                "Fashion-MNIST test accuracy after 5 epochs, %",
                "82.1 (scratch), 84.0 (Gluon)",
                _pm(r["test_accuracy"], digits=1),
                cmd.format("d2l_softmax"),
            )
        )

    r = _load("dlfs")
    if r:
        if "two_layer_net" in r:
            h = r["two_layer_net"]["history"][-1]
            out.append(
                (
                    "deep-learning-from-scratch",
                    "TwoLayerNet train / test accuracy, %",
                    "about 98 / 97",
                    f"{h['train_accuracy'] * 100:.2f} / {h['test_accuracy'] * 100:.2f}",
                    cmd.format("dlfs"),
                )
            )
        g = r["gradient_check"]
        book = r["reported"]["grad_check"]
        for label, dtype, key in (
            (
                "backprop vs numerical, book's loss (+1e-7 in the log), float64",
                "float64",
                "backprop vs numerical (book's loss with +1e-7)",
            ),
            ("backprop vs numerical, float64", "float64", "backprop vs numerical"),
            ("backprop vs numerical, float32", "float32", "backprop vs numerical"),
            ("autodiff vs backprop, float64", "float64", "autodiff vs backprop"),
        ):
            values = g[dtype][key]
            shown = ", ".join(f"{k} {v:.1e}" for k, v in book.items()) if "book" in label else "-"
            out.append(
                (
                    "deep-learning-from-scratch",
                    f"grad check: {label}",
                    shown,
                    ", ".join(f"{k} {v:.1e}" for k, v in values.items()),
                    cmd.format("dlfs"),
                )
            )
        if "optimizer_comparison" in r:
            for name, o in r["optimizer_comparison"].items():
                reported = r["reported"]["loss_at_1900"].get(name)
                out.append(
                    (
                        "deep-learning-from-scratch",
                        f"{name}: minibatch loss at iteration 1900",
                        f"{reported:.3f}" if reported is not None else "not reported",
                        f"{o['loss_at_1900_seed0']:.3f} (seed 0); {_pm(o['loss_at_1900'], 1, 3)}",
                        cmd.format("dlfs"),
                    )
                )

    r = _load("multimodel")
    if r:
        for case in ("seeds", "learning_rates"):
            c = r[case]
            out.append(
                (
                    "many models at once",
                    f"{case}: {c['models']} models, run seconds",
                    "sequential loop",
                    f"{c['sequential']['run_seconds']:.1f} (loop) vs "
                    f"{c['vmapped']['run_seconds']:.1f} (vmap)",
                    cmd.format("multimodel"),
                )
            )

    for task in ("mnist", "mnist_vat", "mnist_augment", "fashion"):
        for suffix in ("", "_all"):
            for folder, machine in (("h100/", "H100"), ("", "2-core CPU")):
                r = _load(f"{folder}records_{task}{suffix}")
                if not r:
                    continue
                c = r["config"]
                options = (
                    f"{' --epochs ' + str(c['epochs']) if c['epochs'] != c['task_default_epochs'] else ''}"  # noqa: E501
                    f"{' --seeds ' + str(len(c['seeds'])) if len(c['seeds']) != 3 else ''}"
                    f"{' --all-train' if suffix else ''}"
                )
                out.append(
                    (
                        "records",
                        f"{task}: test accuracy, % ({c['epochs']} epochs, "
                        f"784-{c['sizes'][1]}-{c['sizes'][2]}-10, trained on {c['train']}; "
                        f"{machine}, {r['wall_seconds']:.0f} s)",
                        f"target {r['target'] * 100:.1f}",
                        _pm(r["test_accuracy"]),
                        f"`python -m experiments.records --task {task}{options}`",
                    )
                )
    r = _load("dp_abadi_reproduce")
    if r:
        for name, row in r["rows"].items():
            paper = row["paper"]
            out.append(
                (
                    "Abadi et al. 2016 (DP-SGD)",
                    f"{name} (sigma {paper['sigma']:g}, PCA sigma {paper['sigma_pca']:g}, "
                    f"{row['epochs']} epochs): test accuracy, % at epsilon (delta 1e-5)",
                    f"{paper['accuracy'] * 100:.0f} at {paper['epsilon']:g}",
                    f"{_pm(row['test_accuracy'])} at {row['epsilon_paper_accounting']:.2f} "
                    f"(paper's accounting); RDP {row['epsilon_rdp']:.2f}, PLD "
                    f"{row['epsilon_pld']:.2f}",
                    "`python -m experiments.dp_abadi --part reproduce`",
                )
            )
    r = _load("dp_abadi_final")
    if r:
        for epsilon, row in r["rows"].items():
            recipe = row["recipe"]
            inputs = f"DP-PCA {recipe['pca']}" if recipe.get("pca") else "pixels"
            out.append(
                (
                    "DP-SGD, best plain MLP",
                    f"test accuracy at epsilon {float(epsilon):g} (delta 1e-5), % ({inputs}, "
                    f"{recipe['activation']} {'-'.join(map(str, recipe['hidden']))}, lot "
                    f"{recipe['lot']}, {recipe['epochs']} epochs)",
                    {"1.0": "90 at 0.5, 95 at 2", "2.0": "95", "8.0": "97"}.get(epsilon, "-"),
                    _pm(row["test_accuracy"]),
                    "`python -m experiments.dp_abadi --part final`",
                )
            )
    return out


def table() -> str:
    lines = ["| text | quantity | text's figure | ours | command |", "|---|---|---|---|---|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows()]
    return "\n".join(lines)


def pytorch_tables() -> str:
    """One Markdown table per question of the PyTorch book's chapter 4."""
    r = _load("pytorch_ch4")
    if not r:
        return "(pytorch_ch4.json missing)"
    parts = []
    for table, rows_ in r["tables"].items():
        lines = [
            f"**{table}**",
            "",
            "| run | epochs | test correct | test loss | "
            "test acc. per epoch | train acc. (eval mode) | worst class | seconds |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for row, key in rows_.items():
            run = r["runs"][key]
            curve = " ".join(f"{a * 100:.1f}" for a in run["test_accuracy_per_epoch"])
            train = "-" if run["train_accuracy"] is None else f"{run['train_accuracy'] * 100:.2f}"
            lines.append(
                f"| {row} | {run['config']['epochs']} | {run['test_correct']} | "
                f"{run['test_loss']:.4f} | {curve} | {train} | "
                f"{run['worst_class']} ({run['worst_class_accuracy'] * 100:.1f}) | "
                f"{run['seconds']:.0f} |"
            )
        parts.append("\n".join(lines))
    return "\n\n".join(parts)


if __name__ == "__main__":
    print(table())
    print()
    print(pytorch_tables())
