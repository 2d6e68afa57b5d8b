"""``jaxmlp summary [RUN]``: a torchinfo-style table of a model's layers."""

from __future__ import annotations

import argparse

from jaxmlp.cli import config as cfglib
from jaxmlp.cli import runs
from jaxmlp.cli.config import RunConfig
from jaxmlp.cli.output import EXIT_OK, Output

LAYER_NAMES = {"relu": "ReLU", "sigmoid": "Sigmoid", "tanh": "Tanh", "identity": "Identity"}


def model_rows(config: RunConfig) -> list[tuple[str, str, int]]:
    """(layer, output shape, parameter count) rows of the model a config describes."""
    sizes = config.layer_sizes
    rows = [("Input", f"(batch, {sizes[0]})", 0)]
    if config.input_dropout_rate:
        rows.append((f"Dropout(p={config.input_dropout_rate:g})", f"(batch, {sizes[0]})", 0))
    for index, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True), start=1):
        last = index == len(sizes) - 1
        rows.append((f"Dense-{index}", f"(batch, {n_out})", n_in * n_out + n_out))
        if not last:
            rows.append((LAYER_NAMES[config.activation], f"(batch, {n_out})", 0))
            if config.dropout_rate:
                rows.append((f"Dropout(p={config.dropout_rate:g})", f"(batch, {n_out})", 0))
    rows.append((config.output.capitalize(), f"(batch, {sizes[-1]})", 0))
    return rows


def cmd_summary(args: argparse.Namespace, explicit: dict, out: Output) -> int:
    """``explicit``: the config keys given as options (they override the run or the file)."""
    from rich.table import Table

    import jaxmlp

    if args.run is not None:
        base = runs.read_run_config(runs.resolve_run(args.run, args.runs_dir))
    elif args.config:
        base = cfglib.load(args.config)
    else:
        base = RunConfig()
    config = cfglib.from_mapping(explicit, base=base, source="")
    rows = model_rows(config)
    total = sum(count for _, _, count in rows)
    # The table is built from the sizes alone; cross-check against the library's count.
    assert total == jaxmlp.parameter_count(config.layer_sizes)
    bytes_per = 8 if config.dtype == "float64" else 4
    out.emit(
        {
            "layer_sizes": list(config.layer_sizes),
            "layers": [{"layer": n, "output_shape": s, "parameters": c} for n, s, c in rows],
            "total_parameters": total,
            "parameter_bytes": total * bytes_per,
        }
    )
    table = Table(title=f"MLP {'-'.join(map(str, config.layer_sizes))}", title_justify="left")
    table.add_column("Layer (type)")
    table.add_column("Output shape")
    table.add_column("Param #", justify="right")
    for name, shape, count in rows:
        table.add_row(name, shape, f"{count:,}")
    out.table(table)
    out.result(
        f"Total params: {total:,}\nTrainable params: {total:,}\n"
        f"Params size ({config.dtype}): {total * bytes_per / 2**20:.2f} MB"
    )
    return EXIT_OK
