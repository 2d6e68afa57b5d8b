"""``jaxmlp export RUN --format onnx|jax --output FILE``: a run's model as a file to deploy."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from jaxmlp.cli import runs
from jaxmlp.cli.output import EXIT_OK, CliError, Output

FORMATS = ("onnx", "jax")
_FORMAT_NAMES = {"onnx": "ONNX", "jax": "jax.export"}


def normalization_formula(norm) -> str:
    """What a [`jaxmlp.data.Normalization`][] does to raw pixels ``x`` in 0..255, as a
    formula: ``x / 255``, ``(x / 255 - 0.1307) / 0.3081``, ``x``."""
    if norm.method == "none":
        return "x"
    if norm.mean == 0 and norm.std == 1:
        return "x / 255"
    return f"(x / 255 - {norm.mean}) / {norm.std}"


def run_metadata(run_dir: Path, config, epoch: int) -> dict[str, Any]:
    """What a program running the exported model needs to know, as the ``jaxmlp.*`` keys of
    its metadata: the input's normalization, what the scores are, the classes, the model and
    where it came from."""
    import jaxmlp
    from jaxmlp import data

    norm = data.normalization(config.normalize, config.dataset)
    applies = "softmax" if config.output == "softmax" else "an elementwise sigmoid"
    formula = normalization_formula(norm)
    side = data.IMAGE_SIDE
    return {
        "jaxmlp.version": jaxmlp.__version__,
        "jaxmlp.run": run_dir.name,
        "jaxmlp.epoch": epoch,
        "jaxmlp.dataset": config.dataset,
        "jaxmlp.class_names": list(data.DATASETS[config.dataset].class_names),
        "jaxmlp.layer_sizes": list(config.layer_sizes),
        "jaxmlp.activation": config.activation,
        "jaxmlp.output": config.output,
        "jaxmlp.dtype": config.dtype,
        "jaxmlp.input": (
            f"images: float32 (batch, {config.layer_sizes[0]}), each a {side}x{side} image row by "
            f"row, light on dark as in {config.dataset}, its raw pixels x in 0..255 mapped to "
            f"{formula}"
        ),
        "jaxmlp.scores": (
            f"float32 (batch, {config.layer_sizes[-1]}): the logits; {applies} of them gives "
            "the class probabilities, their argmax the class"
        ),
        "jaxmlp.normalize": norm.method,
        "jaxmlp.normalize.formula": formula,
        "jaxmlp.normalize.mean": norm.mean,
        "jaxmlp.normalize.std": norm.std,
    }


def _check_destination(path: Path, overwrite: bool) -> None:
    if not path.parent.is_dir():
        raise CliError(
            f"cannot write {path}: the folder {path.parent} does not exist (create it first)"
        )
    if path.is_dir():
        raise CliError(f"--output {path} is a directory; expected a file name")
    if path.exists() and not overwrite:
        raise CliError(f"{path} exists; pass --overwrite to replace it, or choose another --output")


def cmd_export(args: argparse.Namespace, out: Output) -> int:
    from jaxmlp import export

    output = Path(args.output)
    sidecar = export.metadata_path(output) if args.format == "jax" else None
    for path in (output, sidecar):
        if path is not None:
            _check_destination(path, args.overwrite)
    run_dir, config, chosen = runs.load_for_inference(
        args.run, args.runs_dir, out, epoch=args.epoch
    )
    metadata = run_metadata(run_dir, config, chosen.epoch)
    params = chosen.state.params
    try:
        if args.format == "onnx":
            model = export.to_onnx(params, activation=config.activation, metadata=metadata)
            export.save_onnx(model, output)
        else:
            exported = export.to_jax_export(params, activation=config.activation)
            metadata["jaxmlp.platforms"] = list(exported.platforms)
            export.save_jax_export(exported, output, metadata=metadata)
    except ImportError as e:  # onnx is not installed; the message says how to install it
        raise CliError(str(e)) from None
    except OSError as e:
        raise CliError(f"cannot write {e.filename or output}: {e.strerror or e}") from e
    sizes = "-".join(map(str, config.layer_sizes))
    document = {
        "run_dir": str(run_dir),
        "epoch": chosen.epoch,
        "epoch_choice": chosen.choice,
        "format": args.format,
        "output": str(output),
        "metadata_file": str(sidecar) if sidecar else None,
        "bytes": output.stat().st_size,
        "metadata": metadata,
    }
    out.emit(document)
    also = f" and its metadata {sidecar}" if sidecar else ""
    out.result(
        f"wrote {output}{also} ({_FORMAT_NAMES[args.format]}, {document['bytes']:,} bytes): "
        f"{run_dir} at epoch {chosen.epoch} ({chosen.why}), {sizes} {config.activation}; "
        "input images "
        f"float32 (batch, {config.layer_sizes[0]}) normalized {config.normalize}: "
        f"{metadata['jaxmlp.normalize.formula']}; output scores (batch, "
        f"{config.layer_sizes[-1]}): the logits ({config.output})"
    )
    return EXIT_OK
