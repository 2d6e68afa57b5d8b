"""Training logs for dashboards: [`TensorBoardLogger`][jaxmlp.loggers.TensorBoardLogger] writes
[`jaxmlp.fit`][]'s per-epoch records as TensorBoard event files.

The events are written with ``tensorboardX`` (the protocol buffers and the file format, without
TensorFlow or PyTorch); read them with ``tensorboard --logdir PARENT``, which shows every folder
under ``PARENT`` that holds event files as one run.
"""

from __future__ import annotations

import numbers
import os
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import jax
import optax

from jaxmlp.optimizers import plateau_scale
from jaxmlp.training import TrainState

TAGS = {
    "loss": "train/loss",
    "train_accuracy": "train/accuracy",
    "validation_loss": "validation/loss",
    "validation_accuracy": "validation/accuracy",
    "epsilon": "privacy/epsilon",
    "seconds": "seconds",
}
"""Record key -> scalar tag; a key the record lacks (no validation data, no DP noise) is left
out. The learning rate has the tag ``learning_rate``."""

LEARNING_RATE_TAG = "learning_rate"

STEP_TAGS = {"step_loss": "train/step_loss", "step_accuracy": "train/step_accuracy"}
"""Step record key (of [`jaxmlp.fit`][]'s ``on_step``) -> scalar tag, at the global step."""

STEPS_FOLDER = "steps"
"""The sub-folder of ``logdir`` that holds the step scalars: a run of its own in TensorBoard
(``NAME/steps``). One folder is one run, and a resumed writer hides the run's events at and
after its first step (``purge_step``), so step numbers and epoch numbers cannot share one."""

FLUSH_SECONDS = 1
"""tensorboardX writes events from a thread of its own, and its ``flush()`` writes out only what
that thread has taken from its queue, so the thread itself flushes about once a second: an
epoch's events are on disk about a second after the epoch."""

HParam = str | bool | float
_PLAIN = (str, bool, numbers.Real)


class TensorBoardLogger:
    """``fit``'s ``on_epoch_end`` that writes each epoch's record as TensorBoard scalars.

    Use it as ``jaxmlp.fit(..., on_epoch_end=logger)`` (it never stops training), or call
    ``logger(state, record)`` from a loop of your own; close it when done, or use it as a
    context manager::

        with jaxmlp.loggers.TensorBoardLogger("runs/wide", hparams={"hidden": "[1024]"}) as log:
            state, history = jaxmlp.fit(..., on_epoch_end=log)

    Step scalars: ``fit(..., on_step=log.on_step, log_every_steps=50)`` also writes
    ``train/step_loss`` and ``train/step_accuracy`` ([`STEP_TAGS`][jaxmlp.loggers.STEP_TAGS]) every
    50 optimizer steps, at the global step number, into ``logdir/steps``
    ([`STEPS_FOLDER`][jaxmlp.loggers.STEPS_FOLDER]).

    Each record becomes the scalars of [`TAGS`][jaxmlp.loggers.TAGS] (``train/loss``,
    ``train/accuracy``, ``validation/loss``, ``validation/accuracy``, ``privacy/epsilon``,
    ``seconds``; those the record has) and ``learning_rate``, at global step = the record's
    ``epoch``. The writer is flushed after every epoch, so a dashboard follows a running job.

    Args:
        logdir: the folder of this run's event files, created at the first epoch written (a
            logger that writes nothing leaves nothing behind). A later logger of the same folder
            adds a file to the same run, as a resumed run does; events that folder already holds at
            or after the first epoch this logger writes (from a run that crashed after logging
            them) are hidden by TensorBoard (tensorboardX's ``purge_step``).
        hparams: the run's hyperparameters for TensorBoard's HParams dashboard: a dict of str,
            bool and numbers; a list or tuple is written as a string (``"[512, 256]"``) and a None
            value is left out. They are written as the hparams plugin's session start with the
            first epoch (so a running or interrupted run is listed too) and its session end at
            [`close`][jaxmlp.loggers.TensorBoardLogger.close]. There the metrics columns are the
            run's scalars, their last value (TensorBoard infers them; no experiment summary is
            written, which would fix the columns to those of the one run it came from).
        learning_rate: the learning rate the optimizer was built with: a number, or a schedule
            (a function of the optimizer step count, as [`jaxmlp.schedule`][] and optax return).
            The ``learning_rate`` scalar is the rate of the epoch's last optimizer step,
            ``learning_rate(state.step - 1)``. Without it, the one ``optax.inject_hyperparams``
            learning rate in ``state.opt_state`` is written (the same value); without either, the
            scalar is left out: an optax optimizer keeps its schedule in a closure, out of reach.
            A [`jaxmlp.optimizers.reduce_on_plateau`][] in the optimizer state multiplies it by
            the scale it has reached.
    """

    def __init__(
        self,
        logdir: str | os.PathLike,
        *,
        hparams: Mapping[str, Any] | None = None,
        learning_rate: float | Callable[[Any], Any] | None = None,
    ):
        if not isinstance(logdir, str | os.PathLike) or not os.fspath(logdir):
            raise TypeError(f"logdir must be a folder path (a str or Path), got {logdir!r}")
        if learning_rate is not None and not callable(learning_rate):
            if isinstance(learning_rate, bool) or not isinstance(learning_rate, numbers.Real):
                raise TypeError(
                    "learning_rate must be a number or a schedule (a function of the step "
                    f"count, e.g. jaxmlp.schedule('cosine', 1e-3, total_steps)), got "
                    f"{learning_rate!r}"
                )
        self.logdir = Path(logdir)
        self.hparams = _plain_hparams(hparams)
        self.learning_rate = learning_rate
        self._writer = None
        self._step_writer = None
        self._lock = threading.Lock()

    def __call__(self, state: TrainState, record: Mapping[str, Any]) -> None:
        if not isinstance(state, TrainState):
            raise TypeError(f"state must be a jaxmlp.TrainState, got {type(state).__name__}")
        epoch = record.get("epoch") if isinstance(record, Mapping) else None
        if isinstance(epoch, bool) or not isinstance(epoch, int):
            raise TypeError(
                f"record must be a per-epoch record of fit (a dict with an int 'epoch'), got "
                f"{record!r}"
            )
        writer = self._open(epoch) if self._writer is None else self._writer
        for key, tag in TAGS.items():
            if key in record:
                writer.add_scalar(tag, float(record[key]), epoch)
        learning_rate = self._learning_rate_of(state)
        if learning_rate is not None:
            writer.add_scalar(LEARNING_RATE_TAG, learning_rate, epoch)
        self.flush()

    def on_step(self, step: int, record: Mapping[str, Any]) -> None:
        """``fit``'s ``on_step``: the step record's scalars
        ([`STEP_TAGS`][jaxmlp.loggers.STEP_TAGS], those it has) at global step ``step``, in
        ``logdir/steps``. Called from the runtime's callback thread; a writer of a continued run
        hides that folder's events at and after its first step."""
        if isinstance(step, bool) or not isinstance(step, numbers.Integral):
            raise TypeError(f"step must be an int (the global optimizer step), got {step!r}")
        if not isinstance(record, Mapping):
            raise TypeError(f"record must be a step record of fit (a dict), got {record!r}")
        with self._lock:
            if self._step_writer is None:
                self._step_writer = _summary_writer(self.logdir / STEPS_FOLDER, int(step))
            for key, tag in STEP_TAGS.items():
                if key in record:
                    self._step_writer.add_scalar(tag, float(record[key]), int(step))

    def _open(self, first_epoch: int):
        from tensorboardX import summary

        self._writer = _summary_writer(self.logdir, first_epoch)
        if self.hparams:
            _, session_start, _ = summary.hparams(self.hparams, {})
            # SummaryWriter opens its file_writer in __init__; only close() sets it to None.
            self._writer.file_writer.add_summary(session_start)  # pyright: ignore[reportOptionalMemberAccess]
        return self._writer

    def _learning_rate_of(self, state: TrainState) -> float | None:
        if self.learning_rate is None:
            rate = _injected_learning_rate(state.opt_state)
        elif callable(self.learning_rate):
            rate = float(self.learning_rate(max(int(state.step) - 1, 0)))
        else:
            rate = float(self.learning_rate)
        # A reduce_on_plateau after the optimizer scales its updates, and so the rate.
        scale = plateau_scale(state.opt_state)
        return rate if rate is None or scale is None else rate * scale

    def flush(self) -> None:
        """Write out the events so far."""
        for writer in (self._writer, self._step_writer):
            if writer is not None:
                writer.flush()

    def close(self) -> None:
        """End the hparams session (with ``hparams``) and close the event file; closing twice,
        or a logger that wrote nothing, is fine."""
        with self._lock:
            if self._step_writer is not None:
                self._step_writer.close()
                self._step_writer = None
        if self._writer is None:
            return
        if self.hparams:
            from tensorboardX import summary

            _, _, session_end = summary.hparams(self.hparams, {})
            # Not closed yet, so its file_writer is open (see _open).
            self._writer.file_writer.add_summary(session_end)  # pyright: ignore[reportOptionalMemberAccess]
        self._writer.close()
        self._writer = None

    def __enter__(self) -> TensorBoardLogger:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


def _summary_writer(logdir: Path, purge_step: int):
    from tensorboardX import SummaryWriter

    return SummaryWriter(
        str(logdir),
        purge_step=purge_step,
        flush_secs=FLUSH_SECONDS,
        # tensorboardX names a file by the second and the host alone, and a second writer
        # of the same second would truncate the first one's file; nanoseconds keep the
        # files apart and in order (TensorBoard reads a folder's files by name).
        filename_suffix=f".{time.time_ns()}.{os.getpid()}",
    )


def _injected_learning_rate(opt_state) -> float | None:
    """The learning rate held by the one ``optax.inject_hyperparams`` state in ``opt_state``
    (the rate its last update used), or None if there is none or more than one."""
    injected = (optax.InjectHyperparamsState, optax.InjectStatefulHyperparamsState)
    found: list[Any] = [  # a scalar array each
        node.hyperparams["learning_rate"]
        for node in jax.tree.leaves(opt_state, is_leaf=lambda node: isinstance(node, injected))
        if isinstance(node, injected) and "learning_rate" in node.hyperparams
    ]
    return float(found[0]) if len(found) == 1 else None


def _plain_hparams(hparams: Mapping[str, Any] | None) -> dict[str, HParam]:
    """``hparams`` as the values TensorBoard takes: sequences as strings, no None values."""
    if hparams is None:
        return {}
    if not isinstance(hparams, Mapping):
        raise TypeError(f"hparams must be a dict of plain values, got {type(hparams).__name__}")
    plain: dict[str, HParam] = {}
    for key, value in hparams.items():
        if not isinstance(key, str):
            raise TypeError(f"hparams keys must be strings, got {key!r}")
        if value is None:
            continue
        if isinstance(value, list | tuple) and all(isinstance(v, _PLAIN) for v in value):
            plain[key] = str(list(value))
        elif isinstance(value, str | bool):
            plain[key] = value
        elif isinstance(value, numbers.Real):
            plain[key] = float(value)
        else:
            raise TypeError(
                f"hparams[{key!r}] is a {type(value).__name__}; give a str, bool, number, None "
                "or a list of them"
            )
    return plain
