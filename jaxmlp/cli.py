"""The jaxmlp command: train, evaluate, predict and inspect MLPs from the shell.

Subcommands::

    jaxmlp train [options]            train; the run directory keeps config, history,
                                      checkpoints and plots (runs/<name>/)
    jaxmlp evaluate RUN               test loss and accuracy, per-class precision/recall/F1,
                                      confusion matrix
    jaxmlp predict RUN IMAGE...       classify user-drawn digit images (PNG/JPEG)
    jaxmlp summary [RUN] [options]    layers, output shapes and parameter counts
    jaxmlp data [status|fetch]        where the datasets are and whether they verify; fetch them

Exit status: 0 success; 1 training diverged (non-finite loss) or an internal error; 2 an error
in the arguments, a file or the data (one line on stderr; ``--debug`` shows the traceback);
130 interrupted (Ctrl-C; the last completed epoch's checkpoint is kept).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import re
import shutil
import signal
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from jaxmlp import config as cfglib
from jaxmlp.config import RunConfig

PROG = "jaxmlp"
EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130

CONFIG_FILE = "config.json"
HISTORY_FILE = "history.json"
METRICS_FILE = "metrics.json"
CHECKPOINT_DIR = "checkpoints"
QUARANTINE_DIR = "checkpoints-unreadable"
PLOT_FILES = {
    "history": "history.png",
    "misclassified": "misclassified.png",
    "confusion": "confusion.png",
}

_GROUP_TITLES = {
    "data": "data",
    "model": "model",
    "reg": "regularisation",
    "opt": "optimisation",
    "run": "checkpoints",
}
_MODEL_FIELDS = ("dataset", "hidden", "activation", "output", "dropout", "input_dropout", "dtype")


class CliError(Exception):
    """A user-facing error: printed as one line, exit status 2."""


# --------------------------------------------------------------------------------------------
# Argument parsing


class _Parser(argparse.ArgumentParser):
    """argparse that reports a usage error in one line (and exit status 2)."""

    def error(self, message: str):
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Every option's help ends with its default (unless the help already states it)."""

    def __init__(self, prog: str):
        super().__init__(prog, max_help_position=34, width=100)

    def _get_help_string(self, action):
        if "(default:" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _optional(base: type):
    """argparse type for ``X | None`` fields: ``none`` means unset."""

    def parse(text: str):
        if text.lower() in ("none", "null", ""):
            return None
        return base(text)

    parse.__name__ = base.__name__
    return parse


def _add_config_option(group, name: str, *, suppress: bool) -> None:
    field = cfglib.FIELDS[name]
    base, optional = cfglib.field_kind(name)
    meta = field.metadata
    kwargs: dict[str, Any] = {
        "help": meta["help"],
        "default": argparse.SUPPRESS if suppress else field.default,
        "dest": name,
    }
    if meta["metavar"]:
        kwargs["metavar"] = meta["metavar"]
    if base is tuple:
        kwargs.update(nargs="*", type=int)
        if not suppress:
            kwargs["default"] = list(field.default)
    else:
        kwargs["type"] = _optional(base) if optional else base
    if meta["choices"]:
        kwargs["choices"] = meta["choices"]
        kwargs.pop("metavar", None)
    group.add_argument(_flag(name), **kwargs)


def _common() -> argparse.ArgumentParser:
    common = _Parser(add_help=False)
    common.add_argument("--debug", action="store_true", help="show the full traceback of an error")
    return common


def build_parser(*, suppress_config_defaults: bool = False) -> argparse.ArgumentParser:
    """The ``jaxmlp`` argument parser.

    With ``suppress_config_defaults`` the options of :class:`RunConfig` fields get no default,
    so that parsing yields only the options given on the command line.
    """
    suppress = suppress_config_defaults
    parser = _Parser(prog=PROG, description=__doc__.split("\n")[0], formatter_class=_HelpFormatter)
    sub = parser.add_subparsers(
        dest="command", metavar="COMMAND", required=True, parser_class=_Parser
    )
    common = [_common()]

    def add(name: str, help: str, description: str) -> argparse.ArgumentParser:
        return sub.add_parser(
            name, help=help, description=description, parents=common, formatter_class=_HelpFormatter
        )

    train = add(
        "train",
        "train a model; writes runs/<name>/",
        "Train an MLP. The defaults train 784-512-256-10 (ReLU, dropout 0.2) with Adam "
        "and cosine decay for 15 epochs on MNIST. Options override the --config file, "
        "which overrides the defaults. The run directory keeps config.json, "
        "history.json, checkpoints/ (one per epoch, the last few kept), metrics.json "
        "and history.png, misclassified.png, confusion.png.",
    )
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
    run.add_argument("--runs-dir", default="runs", metavar="DIR", help="parent of run directories")
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
    run.add_argument("--no-plots", action="store_true", help="do not draw the PNG figures")
    run.add_argument(
        "--data-parallel",
        action="store_true",
        help="train data-parallel over all local devices (jax.sharding): each "
        "batch is split across them; the batch size must be a multiple of "
        "the device count",
    )
    _add_output_options(run)
    groups = {key: train.add_argument_group(title) for key, title in _GROUP_TITLES.items()}
    for name, field in cfglib.FIELDS.items():
        _add_config_option(groups[field.metadata["group"]], name, suppress=suppress)

    evaluate = add(
        "evaluate",
        "score a trained run on the test set",
        "Test loss and accuracy, per-class precision, recall and F1, and the "
        "confusion matrix of a run's latest checkpoint; also writes "
        "evaluation.json, confusion.png and misclassified.png into the run.",
    )
    _add_run_argument(evaluate)
    evaluate.add_argument(
        "--test-limit",
        type=int,
        default=None,
        metavar="N",
        help="score the first N test examples (default: the run's setting)",
    )
    evaluate.add_argument("--no-plots", action="store_true", help="do not draw the PNG figures")
    _add_output_options(evaluate)

    predict = add(
        "predict",
        "classify digit images with a trained run",
        "Classify images of digits (PNG, JPEG, ...; any size; dark on light or light "
        "on dark). Each is converted to a centred 28x28 grayscale digit like MNIST's, "
        "normalized as in training, and classified.",
    )
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
    _add_output_options(predict)

    summary = add(
        "summary",
        "layers, output shapes and parameter counts",
        "A table of the model's layers with output shapes and parameter counts, for a "
        "trained RUN or for the model the options describe (e.g. --hidden 256 for "
        "784-256-10).",
    )
    summary.add_argument(
        "run",
        nargs="?",
        default=None,
        metavar="RUN",
        help="run name or directory (default: describe the options below)",
    )
    summary.add_argument(
        "--runs-dir", default="runs", metavar="DIR", help="where run names are looked up"
    )
    summary.add_argument(
        "--config",
        metavar="FILE",
        default=None,
        help="TOML or JSON config file to read the model from",
    )
    model = summary.add_argument_group("model")
    for name in _MODEL_FIELDS:
        _add_config_option(model, name, suppress=suppress)
    _add_output_options(summary, quiet=False)

    from jaxmlp.data import _command as data_command

    data = add("data", "show, fetch or prepare the datasets", data_command.DESCRIPTION)
    data_command.add_arguments(data)
    return parser


def _add_run_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "run", metavar="RUN", help="run name (looked up in --runs-dir) or run directory"
    )
    parser.add_argument(
        "--runs-dir", default="runs", metavar="DIR", help="where run names are looked up"
    )


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


# --------------------------------------------------------------------------------------------
# Output


class Output:
    """Where text goes: tables and rows to stdout, notes and warnings to stderr.

    Modes: normal; quiet (only the final result); json (only JSON documents on stdout).
    """

    def __init__(self, args: argparse.Namespace):
        self.json_mode = bool(getattr(args, "json", False))
        self.quiet = bool(getattr(args, "quiet", False)) or self.json_mode
        self.stdout, self.stderr = sys.stdout, sys.stderr

    def line(self, text: str = "") -> None:
        """Normal output (suppressed in quiet and JSON modes)."""
        if not self.quiet:
            print(text, file=self.stdout, flush=True)

    def result(self, text: str) -> None:
        """The final result line (suppressed only in JSON mode)."""
        if not self.json_mode:
            print(text, file=self.stdout, flush=True)

    def note(self, text: str) -> None:
        """Warnings and status a user should see even when quiet; on stderr."""
        print(f"{PROG}: {text}", file=self.stderr, flush=True)

    def emit(self, document: Any) -> None:
        """One JSON document on one line (JSON mode only)."""
        if self.json_mode:
            print(json.dumps(document), file=self.stdout, flush=True)

    def table(self, table) -> None:
        if not self.quiet:
            from rich.console import Console

            Console(
                file=self.stdout,
                width=max(100, shutil.get_terminal_size().columns),
                highlight=False,
            ).print(table)


# --------------------------------------------------------------------------------------------
# Files


def _write_json(path: Path, document: Any) -> None:
    """Write JSON atomically: a temporary file in the same folder, fsynced, renamed over."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(document, f, indent=1)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise CliError(f"cannot write {path}: {e.strerror or e}") from e


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CliError(f"{path}: not found") from None
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CliError(f"{path}: cannot read ({e})") from None


def resolve_run(run: str, runs_dir: str) -> Path:
    """A run directory from a name (under ``runs_dir``) or a path."""
    for candidate in (Path(run), Path(runs_dir) / run):
        if (candidate / CONFIG_FILE).is_file():
            return candidate
    raise CliError(
        f"no run {run!r}: neither {Path(run) / CONFIG_FILE} nor "
        f"{Path(runs_dir) / run / CONFIG_FILE} exists (train one with "
        f"`{PROG} train --name {Path(run).name}`)"
    )


def read_run_config(run_dir: Path) -> RunConfig:
    """The effective config saved in a run directory."""
    try:
        return cfglib.load(run_dir / CONFIG_FILE)
    except cfglib.ConfigError as e:
        raise CliError(f"the run's saved config is invalid: {e}") from None


# --------------------------------------------------------------------------------------------
# Building blocks shared by the subcommands


def train_size(config: RunConfig) -> int:
    """Number of training examples a config trains on (without loading the data)."""
    from jaxmlp import data

    total = data.DATASETS[config.dataset].files["train_labels"].shape[0]
    available = total - config.validation
    if available < 1:
        raise CliError(
            f"validation={config.validation} leaves no training examples "
            f"({config.dataset} has {total}); expected validation < {total}"
        )
    return min(available, config.train_limit or available)


def _dtype(config: RunConfig):
    import jax
    import jax.numpy as jnp

    if config.dtype == "float64":
        # float64 arrays need x64 mode, which must be on before any array is created.
        jax.config.update("jax_enable_x64", True)
        return jnp.float64
    return jnp.float32


def build_state(config: RunConfig, n_train: int):
    """A fresh TrainState for ``config``; it fixes the shapes a checkpoint must have.

    The learning-rate schedule spans ``epochs * ceil(n_train / batch_size)`` steps.
    """
    import jax

    import jaxmlp

    steps_per_epoch = math.ceil(n_train / config.batch_size)
    learning_rate = jaxmlp.schedule(
        config.schedule,
        config.learning_rate,
        config.epochs * steps_per_epoch,
        warmup_steps=config.warmup_steps,
        final_fraction=config.final_lr_fraction,
        decay_rate=config.decay_rate,
    )
    optimizer = jaxmlp.optimizer(
        config.optimizer, learning_rate, **config.optimizer_hyperparameters()
    )
    return jaxmlp.create_train_state(
        jax.random.key(config.seed),
        config.layer_sizes,
        optimizer,
        init=config.init,
        scale=config.init_scale,
        dtype=_dtype(config),
        options=build_state_options(config),
    )


def load_data(config: RunConfig, *, test_limit: int | None = None):
    """(dataset, train, validation, test) with the config's normalization, hold-out and limits.

    ``train``, ``validation``, ``test`` are ``(images (n, 784), labels (n,))`` numpy pairs;
    ``validation`` is None when the config holds out nothing.
    """
    from jaxmlp import data

    dtype = np.float64 if config.dtype == "float64" else np.float32
    ds = data.load(
        config.dataset,
        data_dir=config.data_dir,
        normalize=config.normalize,
        validation=config.validation,
        dtype=dtype,
    )
    n_train = train_size(config)
    train = (ds.train.images[:n_train], ds.train.labels[:n_train])
    validation = (ds.validation.images, ds.validation.labels) if ds.validation else None
    limit = test_limit if test_limit is not None else config.test_limit
    test = (ds.test.images[:limit], ds.test.labels[:limit])
    return ds, train, validation, test


def restore_run(
    run_dir: Path, config: RunConfig, out: Output, *, target=None, quarantine: bool = False
):
    """The latest good checkpoint of a run (a ``checkpoints.Restored``), or None.

    ``target``: a fresh state of ``config`` (built here when not given).
    """
    from jaxmlp import checkpoints

    if target is None:
        target = build_state(config, train_size(config))

    def skipped(epoch: int, reason: str) -> None:
        out.note(
            f"warning: checkpoint of epoch {epoch} is unreadable ({reason}); "
            "falling back to the previous one"
        )

    return checkpoints.restore_latest(
        run_dir / CHECKPOINT_DIR,
        target,
        on_skip=skipped,
        quarantine=run_dir / QUARANTINE_DIR if quarantine else None,
    )


def _probabilities(config: RunConfig, params, images) -> np.ndarray:
    """Class probabilities (n, classes): softmax of the logits, or independent sigmoids."""
    import jax
    import jax.numpy as jnp

    import jaxmlp

    logits = jaxmlp.forward(params, jnp.asarray(images), activation=config.activation)
    if config.output == "sigmoid":
        return np.asarray(jax.nn.sigmoid(logits))
    return np.asarray(jax.nn.softmax(logits, axis=-1))


def confusion_matrix(true: np.ndarray, pred: np.ndarray, n_classes: int) -> np.ndarray:
    """(n_classes, n_classes) int64 counts; rows are true classes, columns predictions."""
    matrix = np.zeros((n_classes, n_classes), np.int64)
    np.add.at(matrix, (np.asarray(true), np.asarray(pred)), 1)
    return matrix


def per_class_metrics(matrix: np.ndarray) -> dict[str, np.ndarray]:
    """Precision, recall, F1 and support per class from a confusion matrix (0 where undefined)."""
    hits = np.diag(matrix).astype(np.float64)
    predicted, actual = matrix.sum(axis=0), matrix.sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(predicted > 0, hits / predicted, 0.0)
        recall = np.where(actual > 0, hits / actual, 0.0)
        f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
    return {"precision": precision, "recall": recall, "f1": f1, "support": actual}


def score_test_set(
    config: RunConfig,
    params,
    test,
    class_names,
    run_dir: Path | None,
    *,
    plots: bool,
    out: Output | None = None,
) -> dict[str, Any]:
    """Test loss/accuracy, confusion matrix and per-class metrics; optionally the two plots
    (a run directory that cannot be written to gets the scores and a warning, not an error)."""
    import jaxmlp

    images, labels = test
    options = build_state_options(config)
    scores = jaxmlp.evaluate(params, images, labels, options=options)
    pred = jaxmlp.predict(params, images, activation=config.activation)
    matrix = confusion_matrix(labels, pred, len(class_names))
    metrics = per_class_metrics(matrix)
    if plots and run_dir is not None:
        from jaxmlp import plots as plotlib

        try:
            plotlib.plot_confusion(matrix, class_names, run_dir / PLOT_FILES["confusion"])
            plotlib.plot_misclassified(
                images, labels, pred, run_dir / PLOT_FILES["misclassified"], class_names
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


def build_state_options(config: RunConfig):
    import jaxmlp

    return jaxmlp.ModelOptions(
        activation=config.activation,
        output=config.output,
        l2=config.l2,
        dropout_rate=config.dropout,
        input_dropout_rate=config.input_dropout,
        max_norm=config.max_norm,
        augment_shift=config.augment_shift,
        augment_rotate=config.augment_rotate,
        augment_scale=config.augment_scale,
        adversarial_epsilon=config.adversarial_epsilon,
        adversarial_weight=config.adversarial_weight,
        vat_epsilon=config.vat_epsilon,
        vat_weight=config.vat_weight,
        gradient=config.gradient,
    )


# --------------------------------------------------------------------------------------------
# train


_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def _train_config(args: argparse.Namespace, argv: Sequence[str]) -> tuple[RunConfig, dict, str]:
    """(config, explicitly given values, run name) from defaults < --config file < options."""
    explicit_ns = build_parser(suppress_config_defaults=True).parse_args(argv)
    explicit = {k: v for k, v in vars(explicit_ns).items() if k in cfglib.FIELDS}
    file_values: dict[str, Any] = {}
    if args.config:
        file_values = {cfglib.normalize_key(k): v for k, v in cfglib.read_file(args.config).items()}
    name = args.name or file_values.pop("name", None)
    runs_dir = file_values.pop("runs_dir", None)
    if runs_dir is not None and args.runs_dir == "runs":
        args.runs_dir = str(runs_dir)
    base = cfglib.from_mapping(file_values, source=args.config) if file_values else RunConfig()
    config = cfglib.from_mapping(explicit, base=base, source="")
    requested = {**file_values, **explicit}
    # Optimizer hyperparameters are checked by name against the optax constructor, early.
    import jaxmlp

    jaxmlp.optimizer(config.optimizer, config.learning_rate, **config.optimizer_hyperparameters())
    name = name or config.dataset
    if not isinstance(name, str) or not _NAME.match(name):
        raise CliError(f"--name {name!r} is invalid; use letters, digits, '.', '_' and '-'")
    return config, requested, name


def _differences(a: dict, b: dict, keys) -> list[str]:
    return [f"{k}: {a[k]!r} in the run, {b[k]!r} now" for k in keys if a[k] != b[k]]


def _prepare_run_dir(
    args, config: RunConfig, requested: dict, run_dir: Path, out: Output
) -> RunConfig:
    """Check the run directory against the config and return the config to train with."""
    saved_path = run_dir / CONFIG_FILE
    exists = run_dir.exists() and any(run_dir.iterdir())
    if args.resume and args.overwrite:
        raise CliError("--resume and --overwrite contradict each other; choose one")
    if exists and not saved_path.is_file():
        raise CliError(
            f"{run_dir} exists and is not a {PROG} run directory (no {CONFIG_FILE}); "
            "choose another --name or --runs-dir"
        )
    if exists and args.overwrite:
        shutil.rmtree(run_dir)
        exists = False
    if not exists:
        if args.resume:
            raise CliError(
                f"nothing to resume: {run_dir} does not exist (train it first, without --resume)"
            )
        return config
    saved = read_run_config(run_dir)
    if args.resume:
        # The saved config rules; only values given now that do not change results, and a
        # larger number of epochs, are taken over.
        merged = cfglib.from_mapping(requested, base=saved, source="")
        keys = [k for k in saved.result_fields() if k != "epochs"]
        changed = _differences(saved.to_dict(), merged.to_dict(), keys)
        if changed:
            raise CliError(
                f"--resume continues {run_dir} with its saved config, but "
                f"{'; '.join(changed)}; drop those options or train a new --name"
            )
        return merged
    changed = _differences(saved.to_dict(), config.to_dict(), saved.result_fields())
    if changed:
        raise CliError(
            f"{run_dir} exists with a different config ({'; '.join(changed[:3])}"
            f"{'; ...' if len(changed) > 3 else ''}); add --resume to continue it, "
            "or choose a new --name, or --overwrite it"
        )
    out.line(f"{run_dir} exists with the same config: continuing it")
    return config


class _ProgressHook:
    """Progress callback for ``train_epoch``: one object per run, so the epoch compiles once.

    Called from the runtime's callback thread with (steps done, steps in the epoch).
    """

    def __init__(self, progress):
        self.progress = progress
        self.task = None

    def start(self, epoch: int, epochs: int, steps: int) -> None:
        self.task = self.progress.add_task(f"epoch {epoch}/{epochs}", total=steps)

    def finish(self) -> None:
        if self.task is not None:
            self.progress.remove_task(self.task)
            self.task = None

    def __call__(self, done, total) -> None:
        task = self.task
        if task is not None:
            self.progress.update(task, completed=int(done), total=int(total))


@contextlib.contextmanager
def _progress_bar(enabled: bool):
    """A transient rich progress bar on stderr, or None when disabled or not a terminal."""
    if not enabled or not sys.stderr.isatty():
        yield None
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("steps"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        transient=True,
    )
    with progress:
        yield _ProgressHook(progress)


class _StopRequest:
    """First Ctrl-C: finish (and checkpoint) the current epoch, then stop. Second: abort now."""

    def __init__(self, out: Output):
        self.out = out
        self.requested = False
        self._previous = None

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        self.out.note(
            "interrupt: stopping after this epoch's checkpoint (Ctrl-C again to abort now)"
        )

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
        return False


_HEADER = (
    f"{'epoch':>5}  {'train loss':>10}  {'train acc':>9}  {'val loss':>8}  "
    f"{'val acc':>7}  {'seconds':>7}"
)


def _row(record: dict[str, Any]) -> str:
    val_loss = f"{record['validation_loss']:8.4f}" if "validation_loss" in record else f"{'-':>8}"
    val_acc = (
        f"{100 * record['validation_accuracy']:6.2f}%"
        if "validation_accuracy" in record
        else f"{'-':>7}"
    )
    return (
        f"{record['epoch']:>5}  {record['loss']:10.4f}  "
        f"{100 * record['train_accuracy']:8.2f}%  {val_loss}  {val_acc}  "
        f"{record['seconds']:7.1f}"
    )


def cmd_train(args: argparse.Namespace, argv: Sequence[str], out: Output) -> int:
    import jax

    import jaxmlp
    from jaxmlp import checkpoints, training

    config, requested, name = _train_config(args, argv)
    run_dir = Path(args.runs_dir) / name
    config = _prepare_run_dir(args, config, requested, run_dir, out)
    n_train = train_size(config)
    if config.batch_size > n_train:
        raise CliError(
            f"batch_size={config.batch_size} is larger than the {n_train} training "
            f"examples; expected batch_size <= {n_train}"
        )
    mesh = None
    if args.data_parallel:
        from jaxmlp import sharding

        mesh = sharding.data_parallel_mesh(jax.local_devices())
        if config.batch_size % mesh.size:
            raise CliError(
                f"--batch-size {config.batch_size} does not divide over the "
                f"{mesh.size} devices of --data-parallel; use a multiple of "
                f"{mesh.size}"
            )
    # Everything that can be checked without data is checked before loading it.
    state = build_state(config, n_train)
    ds, (x_train, y_train), validation, test = load_data(config)

    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise CliError(f"cannot create {run_dir}: {e.strerror or e}") from e
    _write_json(run_dir / CONFIG_FILE, config.to_dict())

    history: list[dict[str, Any]] = []
    start_epoch = 0
    restored = restore_run(run_dir, config, out, target=state, quarantine=True)
    if restored is not None:
        state = restored.state
        start_epoch = restored.epoch
        history = [r for r in restored.meta.get("history", []) if r["epoch"] <= start_epoch]
        out.line(f"resuming {run_dir} from the checkpoint of epoch {start_epoch}")
    if mesh is not None:
        out.line(sharding.describe(mesh))
        state, x_train, y_train = sharding.replicate((state, x_train, y_train), mesh)
    # history.json always matches the checkpoint it continues from: no gap, no repeat.
    _write_json(run_dir / HISTORY_FILE, history)

    steps = math.ceil(n_train / config.batch_size)
    n_val = len(validation[1]) if validation else 0
    out.line(
        f"{PROG} train: {'-'.join(map(str, config.layer_sizes))} {config.activation} MLP "
        f"({jaxmlp.parameter_count(config.layer_sizes):,} parameters), {config.optimizer} "
        f"lr {config.learning_rate:g} {config.schedule}, batch {config.batch_size}, "
        f"{config.epochs} epochs"
    )
    out.line(
        f"data: {ds.name} {n_train:,} train / {n_val:,} validation / {len(test[1]):,} test "
        f"({config.normalize}); run directory: {run_dir}"
    )
    if start_epoch < config.epochs:
        out.line(_HEADER)
    for record in history:
        out.line(_row(record))

    status = EXIT_OK
    with _progress_bar(not out.quiet) as hook, _StopRequest(out) as stop:
        for epoch in range(start_epoch + 1, config.epochs + 1):
            if hook is not None:
                hook.start(epoch, config.epochs, steps)
            began = time.perf_counter()
            state, metrics = training.train_epoch(
                state,
                x_train,
                y_train,
                batch_size=config.batch_size,
                progress=hook,
                progress_every=max(1, steps // 50),
                mesh=mesh,
            )
            metrics = jax.device_get(metrics)
            if hook is not None:
                hook.finish()
            bad_step = int(metrics["diverged_at_step"])
            if bad_step >= 0:
                kept = (
                    f"the last good checkpoint (epoch {epoch - 1}) is intact"
                    if epoch > 1
                    else "no checkpoint was saved"
                )
                out.note(
                    f"error: the loss or its gradient became non-finite at epoch {epoch}, "
                    f"step {bad_step + 1} of {steps} (global step "
                    f"{(epoch - 1) * steps + bad_step + 1}); training stopped, {kept}; "
                    "try a lower learning rate than "
                    f"{config.learning_rate:g} (e.g. --learning-rate "
                    f"{config.learning_rate / 10:g})"
                )
                out.emit({"event": "diverged", "epoch": epoch, "step": bad_step + 1})
                return EXIT_FAILED
            record: dict[str, Any] = {
                "epoch": epoch,
                "loss": float(metrics["loss"]),
                "train_accuracy": float(metrics["train_accuracy"]),
            }
            if validation is not None:
                scores = jaxmlp.evaluate(state.params, *validation, options=state.options)
                record["validation_loss"] = scores["loss"]
                record["validation_accuracy"] = scores["accuracy"]
            record["seconds"] = time.perf_counter() - began
            history.append(record)
            # Checkpoint first, then history.json: after a crash between the two, resuming
            # rebuilds history.json from the history stored inside the checkpoint.
            checkpoints.save(
                run_dir / CHECKPOINT_DIR,
                epoch,
                state,
                meta={"history": history, "config": config.to_dict()},
                keep=config.keep_checkpoints,
            )
            _write_json(run_dir / HISTORY_FILE, history)
            out.line(_row(record))
            out.emit({"event": "epoch", **record})
            if stop.requested and epoch < config.epochs:
                out.note(
                    f"interrupted: stopped after epoch {epoch}, checkpoint saved; continue "
                    f"with `{PROG} train --name {name} --runs-dir {args.runs_dir} "
                    "--resume`"
                )
                status = EXIT_INTERRUPTED
                break
    if status != EXIT_OK:
        return status

    if not history:
        raise CliError(f"{run_dir} has no completed epoch")
    scores = score_test_set(
        config, state.params, test, ds.class_names, run_dir, plots=not args.no_plots
    )
    if not args.no_plots:
        from jaxmlp import plots as plotlib

        plotlib.plot_history(history, run_dir / PLOT_FILES["history"])
    train_seconds = sum(r["seconds"] for r in history)
    summary = {
        "run_dir": str(run_dir),
        "epochs": config.epochs,
        "test_loss": scores["test_loss"],
        "test_accuracy": scores["test_accuracy"],
        "test_correct": scores["correct"],
        "test_count": scores["count"],
        "train_seconds": train_seconds,
        "plots": [] if args.no_plots else [str(run_dir / f) for f in PLOT_FILES.values()],
        "checkpoint": str(run_dir / CHECKPOINT_DIR / str(config.epochs)),
    }
    _write_json(run_dir / METRICS_FILE, summary)
    out.result(
        f"test accuracy {100 * scores['test_accuracy']:.2f}% ({scores['correct']}/"
        f"{scores['count']}), test loss {scores['test_loss']:.4f}; {config.epochs} epochs "
        f"in {train_seconds:.1f} s; run directory {run_dir}"
    )
    if not args.no_plots:
        out.line("plots: " + ", ".join(summary["plots"]))
    out.emit({"event": "done", **summary})
    return EXIT_OK


# --------------------------------------------------------------------------------------------
# evaluate


def _load_for_inference(args, out: Output):
    run_dir = resolve_run(args.run, args.runs_dir)
    config = read_run_config(run_dir)
    restored = restore_run(run_dir, config, out)
    if restored is None:
        raise CliError(
            f"{run_dir} has no checkpoint yet (train it with `{PROG} train --name "
            f"{run_dir.name} --runs-dir {run_dir.parent}`)"
        )
    return run_dir, config, restored


def cmd_evaluate(args: argparse.Namespace, out: Output) -> int:
    from rich.table import Table

    if args.test_limit is not None and args.test_limit < 1:
        raise CliError(f"--test-limit {args.test_limit} is invalid; expected N >= 1")
    run_dir, config, restored = _load_for_inference(args, out)
    ds, _, _, test = load_data(config, test_limit=args.test_limit)
    scores = score_test_set(
        config,
        restored.state.params,
        test,
        ds.class_names,
        run_dir,
        plots=not args.no_plots,
        out=out,
    )
    scores = {"run_dir": str(run_dir), "epoch": restored.epoch, **scores}
    with contextlib.suppress(CliError):  # a read-only run can still be evaluated
        _write_json(run_dir / "evaluation.json", scores)
    out.emit(scores)
    out.line(
        f"{run_dir} (checkpoint of epoch {restored.epoch}), {ds.name} test set, "
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

    short = [str(i) for i in range(len(ds.class_names))]
    matrix = Table(title="Confusion matrix (rows: true, columns: predicted)", title_justify="left")
    matrix.add_column("true\\pred")
    for label in short:
        matrix.add_column(label, justify="right")
    for i, row in enumerate(scores["confusion_matrix"]):
        label = short[i] if ds.class_names[i] == short[i] else f"{i} {ds.class_names[i]}"
        matrix.add_row(
            label, *(f"[bold]{v}[/bold]" if i == j else str(v) for j, v in enumerate(row))
        )
    out.table(matrix)
    if not args.no_plots:
        out.line(
            "plots: "
            + ", ".join(str(run_dir / PLOT_FILES[k]) for k in ("confusion", "misclassified"))
        )
    out.result(
        f"test accuracy {100 * scores['test_accuracy']:.2f}% ({scores['correct']}/"
        f"{scores['count']}), test loss {scores['test_loss']:.4f}, macro F1 "
        f"{scores['macro_f1']:.4f}"
    )
    return EXIT_OK


# --------------------------------------------------------------------------------------------
# predict


def cmd_predict(args: argparse.Namespace, out: Output) -> int:
    from jaxmlp import data, images

    if args.top < 1:
        raise CliError(f"--top {args.top} is invalid; expected K >= 1")
    # Read every image before loading the model, so a bad file fails fast.
    digits = [images.load_digit(path, invert=args.invert) for path in args.images]
    run_dir, config, restored = _load_for_inference(args, out)
    class_names = data.DATASETS[config.dataset].class_names
    dtype = np.float64 if config.dtype == "float64" else np.float32
    batch = data.normalize_images(
        np.stack(digits).reshape(len(digits), -1), config.normalize, config.dataset, dtype=dtype
    )
    probabilities = _probabilities(config, restored.state.params, batch)
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
    out.emit({"run_dir": str(run_dir), "epoch": restored.epoch, "predictions": results})
    width = max(len(str(r["image"])) for r in results)
    kind = "score" if config.output == "sigmoid" else "probability"
    for r in results:
        ranked = "  ".join(f"{t['label']}: {100 * t['probability']:.2f}%" for t in r["top"])
        out.result(f"{r['image']:<{width}}  predicted {r['label']}   top-{top} {kind}: {ranked}")
    return EXIT_OK


# --------------------------------------------------------------------------------------------
# summary


_LAYER_NAMES = {"relu": "ReLU", "sigmoid": "Sigmoid", "tanh": "Tanh", "identity": "Identity"}


def model_rows(config: RunConfig) -> list[tuple[str, str, int]]:
    """(layer, output shape, parameter count) rows of the model a config describes."""
    sizes = config.layer_sizes
    rows = [("Input", f"(batch, {sizes[0]})", 0)]
    if config.input_dropout:
        rows.append((f"Dropout(p={config.input_dropout:g})", f"(batch, {sizes[0]})", 0))
    for index, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True), start=1):
        last = index == len(sizes) - 1
        rows.append((f"Dense-{index}", f"(batch, {n_out})", n_in * n_out + n_out))
        if not last:
            rows.append((_LAYER_NAMES[config.activation], f"(batch, {n_out})", 0))
            if config.dropout:
                rows.append((f"Dropout(p={config.dropout:g})", f"(batch, {n_out})", 0))
    rows.append((config.output.capitalize(), f"(batch, {sizes[-1]})", 0))
    return rows


def cmd_summary(args: argparse.Namespace, argv: Sequence[str], out: Output) -> int:
    from rich.table import Table

    import jaxmlp

    explicit_ns = build_parser(suppress_config_defaults=True).parse_args(argv)
    explicit = {k: v for k, v in vars(explicit_ns).items() if k in cfglib.FIELDS}
    if args.run is not None:
        base = read_run_config(resolve_run(args.run, args.runs_dir))
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


# --------------------------------------------------------------------------------------------
# data


def cmd_data(args: argparse.Namespace, out: Output) -> int:
    from jaxmlp.data import _command as data_command

    return data_command.run(args)


# --------------------------------------------------------------------------------------------
# main


def _error_line(error: BaseException) -> str:
    from jaxmlp import data

    lines = str(error).strip().splitlines() or [type(error).__name__]
    text = lines[0]
    if isinstance(error, data.DataNotFoundError):
        text += f" (run `{PROG} data fetch` to get it, or `{PROG} data` to see where {PROG} looks)"
    elif len(lines) > 1:
        text += " ..." if len(text) > 60 else " " + " ".join(s.strip() for s in lines[1:3])
    return text


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``jaxmlp`` command with ``argv`` (default ``sys.argv[1:]``); return the exit
    status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # --help, or a usage error already printed in one line
        return int(e.code or 0)
    out = Output(args)
    from jaxmlp import checkpoints, data, images

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
        if args.command == "train":
            return cmd_train(args, argv, out)
        if args.command == "evaluate":
            return cmd_evaluate(args, out)
        if args.command == "predict":
            return cmd_predict(args, out)
        if args.command == "summary":
            return cmd_summary(args, argv, out)
        return cmd_data(args, out)
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


if __name__ == "__main__":
    sys.exit(main())
