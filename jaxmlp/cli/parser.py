"""The ``jaxmlp`` argument parser, generated from the run configuration's fields.

Every key of [`RunConfig`][jaxmlp.cli.config.RunConfig] (its own, [`jaxmlp.ModelOptions`][]'s and
[`jaxmlp.OptimizerSettings`][]'s) is an option of ``jaxmlp train``, with the help text and
choices declared on the field, so a flag and a config key never disagree. Those options have no
default in the parsed namespace (``argparse.SUPPRESS``; their help states the run's default):
one parse tells both their values and which of them were given
([`given_config_values`][jaxmlp.cli.parser.given_config_values]).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from jaxmlp.cli import config as cfglib
from jaxmlp.cli import data as data_command
from jaxmlp.cli import export as export_command
from jaxmlp.cli.output import EXIT_USAGE, PROG

DESCRIPTION = "The jaxmlp command: train, evaluate, predict and inspect MLPs from the shell."

_GROUP_TITLES = {
    "data": "data",
    "model": "model",
    "reg": "regularisation",
    "opt": "optimisation",
    "privacy": "differential privacy (DP-SGD)",
    "stop": "early stopping and the best epoch",
    "run": "checkpoints",
}
SUMMARY_FIELDS = (
    "dataset",
    "hidden",
    "activation",
    "output",
    "dropout_rate",
    "input_dropout_rate",
    "dtype",
)
DEFAULT_RUNS_DIR = "runs"
DEFAULT_MAX_STACK = 64
"""``jaxmlp sweep --max-stack``: the most models trained in one stack."""


class Parser(argparse.ArgumentParser):
    """argparse that reports a usage error in one line (and exit status 2), and takes each
    option by its one name only (no prefixes: ``--dropout`` is not ``--dropout-rate``)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, allow_abbrev=False, **kwargs)

    def error(self, message: str):
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Every option's help ends with its default (unless the help already states it)."""

    def __init__(self, prog: str):
        super().__init__(prog, max_help_position=34, width=100)

    def _get_help_string(self, action):
        if "(default:" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _optional(base: type):
    """argparse type for ``X | None`` fields: ``none`` means unset."""

    def parse(text: str):
        if text.lower() in ("none", "null", ""):
            return None
        return base(text)

    parse.__name__ = base.__name__
    return parse


def _with_default(help: str, default: Any) -> str:
    """``help`` ending in the default, as [`HelpFormatter`][jaxmlp.cli.parser.HelpFormatter] writes
    it, for an option whose parsed default is ``argparse.SUPPRESS``."""
    return f"{help} (default: {default})".replace("%", "%%")


def add_config_option(group, name: str) -> None:
    """The option of config key ``name``; absent from the namespace unless given."""
    field = cfglib.FIELDS[name]
    base, optional = cfglib.field_kind(name)
    meta = field.metadata
    default = cfglib.default_value(name)
    kwargs: dict[str, Any] = {
        "help": _with_default(meta["help"], list(default) if base is tuple else default),
        "default": argparse.SUPPRESS,
        "dest": name,
    }
    if meta["metavar"]:
        kwargs["metavar"] = meta["metavar"]
    if base is tuple:
        kwargs.update(nargs="*", type=int)
    else:
        kwargs["type"] = _optional(base) if optional else base
    if meta["choices"]:
        kwargs["choices"] = meta["choices"]
        kwargs.pop("metavar", None)
    group.add_argument(flag(name), **kwargs)


def given_config_values(args: argparse.Namespace) -> dict[str, Any]:
    """The run-configuration keys given on the command line, with their parsed values."""
    return {k: v for k, v in vars(args).items() if k in cfglib.FIELDS}


def _add_compilation_cache_option(parser) -> None:
    parser.add_argument(
        "--no-compilation-cache",
        action="store_true",
        help="compile everything afresh: do not use the persistent compilation cache (by "
        "default in the user cache, $XDG_CACHE_HOME/jaxmlp/xla; JAXMLP_COMPILATION_CACHE=DIR "
        "moves it, =0 turns it off)",
    )


def _common() -> Parser:
    common = Parser(add_help=False)
    common.add_argument("--debug", action="store_true", help="show the full traceback of an error")
    return common


def _add_output_options(parser, *, quiet: bool = True) -> None:
    if quiet:
        parser.add_argument(
            "--quiet", "-q", action="store_true", help="print only the final result"
        )
    parser.add_argument(
        "--json",
        action="store_true",
        help="print machine-readable JSON on stdout instead of tables",
    )


def epoch_choice(text: str) -> str | int:
    """``--epoch``: ``best``, ``last`` or an epoch number >= 1."""
    if text in ("best", "last"):
        return text
    try:
        number = int(text)
    except ValueError:
        number = 0
    if number < 1:
        raise argparse.ArgumentTypeError(
            f"invalid value {text!r}; expected best, last or an epoch number >= 1"
        )
    return number


def _add_run_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "run", metavar="RUN", help="run name (looked up in --runs-dir) or run directory"
    )
    parser.add_argument(
        "--runs-dir", default=DEFAULT_RUNS_DIR, metavar="DIR", help="where run names are looked up"
    )
    parser.add_argument(
        "--epoch",
        type=epoch_choice,
        default="best",
        metavar="best|last|N",
        help="the checkpoint to use: the best epoch by the run's --monitor (the last one for a "
        "run without validation data), the last, or epoch N",
    )


def _train_arguments(train: argparse.ArgumentParser) -> None:
    run = train.add_argument_group("run")
    run.add_argument(
        "--config",
        metavar="FILE",
        default=None,
        help="TOML or JSON file with option values (keys as below, e.g. "
        "learning_rate = 0.001; a run's config.json works too)",
    )
    run.add_argument(
        "--name",
        default=None,
        help="run name; the run directory is RUNS_DIR/NAME (default: the dataset's name)",
    )
    run.add_argument(
        "--runs-dir",
        default=argparse.SUPPRESS,
        metavar="DIR",
        help=_with_default("parent of run directories", DEFAULT_RUNS_DIR),
    )
    run.add_argument(
        "--resume",
        action="store_true",
        help="continue the run from its last good checkpoint, with its saved config "
        "(only --epochs may be raised)",
    )
    run.add_argument(
        "--overwrite",
        action="store_true",
        help="delete an existing run directory of this name first",
    )
    run.add_argument(
        "--no-download",
        action="store_true",
        help="never fetch a missing dataset (by default it is fetched and verified, as "
        "`jaxmlp data fetch` does)",
    )
    run.add_argument("--no-plots", action="store_true", help="do not draw the PNG figures")
    run.add_argument(
        "--no-events",
        action="store_true",
        help="do not write TensorBoard events (by default the run directory gets them, so "
        "`tensorboard --logdir RUNS_DIR` shows every run)",
    )
    run.add_argument(
        "--data-parallel",
        action="store_true",
        help="train data-parallel over all local devices (jax.sharding): each "
        "batch is split across them; the batch size must be a multiple of "
        "the device count",
    )
    _add_compilation_cache_option(run)
    _add_output_options(run)
    groups = {key: train.add_argument_group(title) for key, title in _GROUP_TITLES.items()}
    for name, field in cfglib.FIELDS.items():
        add_config_option(groups[field.metadata["group"]], name)


def _sweep_arguments(sweep: argparse.ArgumentParser) -> None:
    run = sweep.add_argument_group("sweep")
    run.add_argument("--name", required=True, help="sweep name; it writes into RUNS_DIR/NAME")
    run.add_argument(
        "--runs-dir",
        default=DEFAULT_RUNS_DIR,
        metavar="DIR",
        help="parent of the sweep's directory",
    )
    run.add_argument(
        "--grid",
        action="append",
        default=[],
        metavar="KEY=V1,V2",
        help="a key and its values (repeat for more keys: every combination is trained); a "
        "list value such as hidden is written 512-256",
    )
    run.add_argument(
        "--random",
        type=int,
        default=None,
        metavar="N",
        help="N random configurations (for each grid point) drawn from the --range keys",
    )
    run.add_argument(
        "--range",
        action="append",
        default=[],
        metavar="KEY=LOW:HIGH[:log]",
        help="a numeric key drawn uniformly from [LOW, HIGH] (log-uniformly with :log; "
        "integers for integer keys)",
    )
    run.add_argument(
        "--sweep-seed", type=int, default=0, metavar="SEED", help="seed of the random draws"
    )
    run.add_argument(
        "--max-stack",
        type=int,
        default=DEFAULT_MAX_STACK,
        metavar="N",
        help="most models trained in one stack (fewer when they would not fit in memory)",
    )
    run.add_argument(
        "--config",
        metavar="FILE",
        default=None,
        help="TOML or JSON file with option values (as for train)",
    )
    run.add_argument(
        "--overwrite", action="store_true", help="delete an existing sweep directory first"
    )
    run.add_argument("--no-download", action="store_true", help="never fetch a missing dataset")
    run.add_argument("--no-plots", action="store_true", help="do not draw results.png")
    _add_compilation_cache_option(run)
    _add_output_options(run)
    groups = {key: sweep.add_argument_group(title) for key, title in _GROUP_TITLES.items()}
    for name, field in cfglib.FIELDS.items():
        add_config_option(groups[field.metadata["group"]], name)


def _evaluate_arguments(evaluate: argparse.ArgumentParser) -> None:
    _add_run_argument(evaluate)
    evaluate.add_argument(
        "--test-limit",
        type=int,
        default=None,
        metavar="N",
        help="score the first N test examples (default: the run's setting)",
    )
    evaluate.add_argument("--no-plots", action="store_true", help="do not draw the PNG figures")
    _add_compilation_cache_option(evaluate)
    _add_output_options(evaluate)


def _predict_arguments(predict: argparse.ArgumentParser) -> None:
    _add_run_argument(predict)
    predict.add_argument("images", nargs="+", metavar="IMAGE", help="image files")
    predict.add_argument(
        "--invert",
        choices=("auto", "yes", "no"),
        default="auto",
        help="invert to light-on-dark: auto decides from the image border",
    )
    predict.add_argument(
        "--top", type=int, default=3, metavar="K", help="number of most probable classes shown"
    )
    predict.add_argument(
        "--save-input",
        metavar="DIR",
        default=None,
        help="also write each preprocessed 28x28 input as a PNG into DIR",
    )
    _add_compilation_cache_option(predict)
    _add_output_options(predict)


def _export_arguments(export: argparse.ArgumentParser) -> None:
    _add_run_argument(export)
    export.add_argument(
        "--format",
        required=True,
        default=argparse.SUPPRESS,  # required: no default to show in the help
        choices=export_command.FORMATS,
        help="onnx: an ONNX graph (Gemm and activation operators, opset 17; needs the onnx "
        "package); jax: a serialized jax.export program, with its metadata in FILE.json",
    )
    export.add_argument(
        "--output",
        required=True,
        default=argparse.SUPPRESS,
        metavar="FILE",
        help="the file to write; its folder must exist",
    )
    export.add_argument(
        "--overwrite", action="store_true", help="replace FILE (and FILE.json) if it exists"
    )
    _add_compilation_cache_option(export)
    _add_output_options(export)


def _summary_arguments(summary: argparse.ArgumentParser) -> None:
    summary.add_argument(
        "run",
        nargs="?",
        default=None,
        metavar="RUN",
        help="run name or directory (default: describe the options below)",
    )
    summary.add_argument(
        "--runs-dir", default=DEFAULT_RUNS_DIR, metavar="DIR", help="where run names are looked up"
    )
    summary.add_argument(
        "--config",
        metavar="FILE",
        default=None,
        help="TOML or JSON config file to read the model from",
    )
    model = summary.add_argument_group("model")
    for name in SUMMARY_FIELDS:
        add_config_option(model, name)
    _add_output_options(summary, quiet=False)


# command -> (one line for the command list, its --help description, its arguments)
_COMMANDS: dict[str, tuple[str, str, Callable[[argparse.ArgumentParser], None]]] = {
    "train": (
        "train a model; writes runs/<name>/",
        "Train an MLP. The defaults train 784-512-256-10 (ReLU, dropout 0.2) with Adam "
        "and cosine decay for 15 epochs on MNIST, fetching the dataset first if it is not "
        "there. Options override the --config file, which overrides the defaults. The run "
        "directory keeps config.json, history.json, checkpoints/ (one per epoch, the last few "
        "and the best kept), TensorBoard event files, metrics.json and history.png, "
        "misclassified.png, confusion.png; one process at a time trains it. The test scores "
        "at the end are the best epoch's (by --monitor), as evaluate scores it.",
        _train_arguments,
    ),
    "evaluate": (
        "score a trained run on the test set",
        "Test loss and accuracy, per-class precision, recall and F1, and the "
        "confusion matrix of a run's best epoch (--epoch for another); also writes "
        "evaluation.json, confusion.png and misclassified.png into the run.",
        _evaluate_arguments,
    ),
    "predict": (
        "classify digit images with a trained run",
        "Classify images of digits (PNG, JPEG, ...; any size up to about 89 megapixels; dark "
        "on light or light on dark). Each is converted to a centred 28x28 grayscale digit like "
        "MNIST's, normalized as in training, and classified.",
        _predict_arguments,
    ),
    "export": (
        "write a trained run's model as an ONNX or jax.export file",
        "Write a run's best epoch (the one evaluate scores; --epoch for another) as a file "
        "that runs "
        "without jaxmlp: an ONNX model (onnxruntime, ...) or a serialized jax.export program "
        "(jax.export.deserialize(FILE bytes).call(images)). Its input is images float32 (batch, "
        "784), normalized as in training; its output the class scores (batch, 10): the logits, "
        "before softmax. The normalization, classes, layer sizes, activation, epoch and jaxmlp "
        "version are in the model's metadata (ONNX metadata_props; FILE.json for jax).",
        _export_arguments,
    ),
    "sweep": (
        "train many configurations at once: a grid or a random search",
        (
            "Train every configuration of a grid (--grid KEY=V1,V2,...) and/or of random draws "
            "(--random N with --range KEY=LOW:HIGH[:log]) on top of the train options given. "
            "Configurations that differ only in seed, init, init_scale, l2, dropout rates, the "
            "learning rate or the optimizer's momentum, b1, b2, eps, decay or weight_decay train "
            "together as stacked models in one vmapped program; each result equals the same "
            "configuration trained alone by `jaxmlp train` (to float rounding). Every "
            "configuration trains for --epochs and keeps its best epoch by --monitor. Writes "
            "RUNS_DIR/NAME/results.json, results.csv, results.png and best/, the best "
            "configuration as an ordinary run directory."
        ),
        _sweep_arguments,
    ),
    "summary": (
        "layers, output shapes and parameter counts",
        "A table of the model's layers with output shapes and parameter counts, for a "
        "trained RUN or for the model the options describe (e.g. --hidden 256 for "
        "784-256-10).",
        _summary_arguments,
    ),
    "data": (
        "show, fetch or prepare the datasets",
        data_command.DESCRIPTION,
        data_command.add_arguments,
    ),
}


def build_parser() -> argparse.ArgumentParser:
    """The ``jaxmlp`` argument parser.

    The options of the run configuration and ``train``'s ``--runs-dir`` are in the parsed
    namespace only when given (see [`given_config_values`][jaxmlp.cli.parser.given_config_values]).
    """
    parser = Parser(prog=PROG, description=DESCRIPTION, formatter_class=HelpFormatter)
    sub = parser.add_subparsers(
        dest="command", metavar="COMMAND", required=True, parser_class=Parser
    )
    common = [_common()]
    for name, (summary, description, add_arguments) in _COMMANDS.items():
        add_arguments(
            sub.add_parser(
                name,
                help=summary,
                description=description,
                parents=common,
                formatter_class=HelpFormatter,
            )
        )
    return parser
