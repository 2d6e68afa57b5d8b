"""The jaxmlp command: train, evaluate, predict and inspect MLPs from the shell.

Subcommands::

    jaxmlp train [options]            train; the run directory keeps config, history,
                                      checkpoints and plots (runs/<name>/)
    jaxmlp evaluate RUN               test loss and accuracy, per-class precision/recall/F1,
                                      confusion matrix
    jaxmlp predict RUN IMAGE...       classify user-drawn digit images (PNG/JPEG)
    jaxmlp export RUN --format onnx|jax --output FILE
                                      the model as an ONNX or jax.export file
    jaxmlp sweep --name S --grid KEY=V1,V2 [--random N --range KEY=LOW:HIGH[:log]] [options]
                                      train many configurations at once (stacked models);
                                      results.json/csv, a plot and the best run (runs/S/)
    jaxmlp summary [RUN] [options]    layers, output shapes and parameter counts
    jaxmlp data [status|fetch|prepare-tfds] [DATASET...]
                                      where the datasets are and whether they verify; fetch them

Exit status: 0 success; 1 training diverged (non-finite loss) or an internal error; 2 an error
in the arguments, a file or the data (one line on stderr; ``--debug`` shows the traceback);
130 interrupted (Ctrl-C; the last completed epoch's checkpoint is kept).

Modules: ``config`` (the run configuration), ``parser``, ``output``, ``runs`` (run directories,
their lock, what a configuration builds), and one module per command (``train``, ``evaluate``,
``sweep``, ``predict``, ``export``, ``summary``, ``data``).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from jaxmlp.cli.output import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_USAGE, PROG, CliError, Output
from jaxmlp.cli.parser import build_parser, given_config_values

__all__ = ["main"]

COMPILING_COMMANDS = ("train", "sweep", "evaluate", "predict", "export")
"""The commands that compile programs, and so use the persistent compilation cache."""


def _error_line(error: BaseException) -> str:
    from jaxmlp import data

    lines = str(error).strip().splitlines() or [type(error).__name__]
    text = lines[0]
    if isinstance(error, data.DataNotFoundError):
        text += f" (run `{PROG} data fetch` to get it, or `{PROG} data` to see where {PROG} looks)"
    elif len(lines) > 1:
        text += " ..." if len(text) > 60 else " " + " ".join(s.strip() for s in lines[1:3])
    return text


def _run(args: argparse.Namespace, out: Output) -> int:
    """The command ``args.command``, its exit status."""
    if args.command == "train":
        from jaxmlp.cli.train import cmd_train

        return cmd_train(args, given_config_values(args), out)
    if args.command == "sweep":
        from jaxmlp.cli.sweep import cmd_sweep

        return cmd_sweep(args, given_config_values(args), out)
    if args.command == "evaluate":
        from jaxmlp.cli.evaluate import cmd_evaluate

        return cmd_evaluate(args, out)
    if args.command == "predict":
        from jaxmlp.cli.predict import cmd_predict

        return cmd_predict(args, out)
    if args.command == "export":
        from jaxmlp.cli.export import cmd_export

        return cmd_export(args, out)
    if args.command == "summary":
        from jaxmlp.cli.summary import cmd_summary

        return cmd_summary(args, given_config_values(args), out)
    from jaxmlp.cli.data import cmd_data

    return cmd_data(args, out)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``jaxmlp`` command with ``argv`` (default ``sys.argv[1:]``); return the exit
    status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # --help, or a usage error already printed in one line
        return int(e.code or 0)
    args.argv = argv  # recorded in the run directory's provenance
    out = Output(args)
    if args.command in COMPILING_COMMANDS:
        from jaxmlp.cli.compilation import use_compilation_cache

        use_compilation_cache(not getattr(args, "no_compilation_cache", False))
    from jaxmlp import checkpoints, data, images
    from jaxmlp.cli import config as cfglib

    expected = (
        CliError,
        cfglib.ConfigError,
        ValueError,
        TypeError,
        OSError,
        data.DataError,
        checkpoints.CheckpointError,
        images.ImageError,
    )
    try:
        return _run(args, out)
    except KeyboardInterrupt:
        if args.debug:
            raise
        out.note("interrupted")
        return EXIT_INTERRUPTED
    except expected as e:
        if args.debug:
            raise
        print(f"{PROG}: error: {_error_line(e)}", file=sys.stderr, flush=True)
        return EXIT_USAGE
    except Exception as e:
        if args.debug:
            raise
        print(
            f"{PROG}: internal error: {type(e).__name__}: {_error_line(e)} (run with --debug "
            "for the traceback)",
            file=sys.stderr,
            flush=True,
        )
        return EXIT_FAILED
