"""``jaxmlp predict RUN IMAGE...``: classify digit images drawn by hand."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from jaxmlp.cli import runs
from jaxmlp.cli.output import EXIT_OK, CliError, Output


def cmd_predict(args: argparse.Namespace, out: Output) -> int:
    import jaxmlp
    from jaxmlp import data, images

    if args.top < 1:
        raise CliError(f"--top {args.top} is invalid; expected K >= 1")
    # Read every image before loading the model, so a bad file fails fast.
    digits = [images.load_digit(path, invert=args.invert) for path in args.images]
    run_dir, config, chosen = runs.load_for_inference(
        args.run, args.runs_dir, out, epoch=args.epoch
    )
    # On stderr: stdout is one line per image.
    out.note(f"{run_dir}: checkpoint of epoch {chosen.epoch} ({chosen.why})")
    class_names = data.DATASETS[config.dataset].class_names
    dtype = np.float64 if config.dtype == "float64" else np.float32
    batch = data.normalize_images(
        np.stack(digits).reshape(len(digits), -1), config.normalize, config.dataset, dtype=dtype
    )
    probabilities = jaxmlp.probabilities(chosen.state, batch)
    if args.save_input:
        from PIL import Image

        folder = Path(args.save_input)
        folder.mkdir(parents=True, exist_ok=True)
        for path, digit in zip(args.images, digits, strict=True):
            Image.fromarray(digit).save(folder / f"{Path(path).stem}_28x28.png")
    results = []
    top = min(args.top, len(class_names))
    for path, p in zip(args.images, probabilities, strict=True):
        order = np.argsort(-p, kind="stable")[:top]
        results.append(
            {
                "image": str(path),
                "predicted": int(order[0]),
                "label": class_names[int(order[0])],
                "top": [
                    {"class": int(c), "label": class_names[int(c)], "probability": float(p[c])}
                    for c in order
                ],
            }
        )
    out.emit(
        {
            "run_dir": str(run_dir),
            "epoch": chosen.epoch,
            "epoch_choice": chosen.choice,
            "predictions": results,
        }
    )
    width = max(len(str(r["image"])) for r in results)
    kind = "score" if config.output == "sigmoid" else "probability"
    for r in results:
        ranked = "  ".join(f"{t['label']}: {100 * t['probability']:.2f}%" for t in r["top"])
        out.result(f"{r['image']:<{width}}  predicted {r['label']}   top-{top} {kind}: {ranked}")
    return EXIT_OK
