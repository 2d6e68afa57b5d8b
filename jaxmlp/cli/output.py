"""What the command prints, and how: tables and rows on stdout, notes on stderr, JSON for
scripts, a progress bar on a terminal, and the one-line user error."""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import signal
import sys
import threading
from typing import Any

PROG = "jaxmlp"
EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


class CliError(Exception):
    """A user-facing error: printed as one line, exit status 2."""


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


class EpochProgress:
    """The progress hook of [`jaxmlp.fit`][]: a bar per epoch, on one rich progress display.

    Called from the runtime's callback thread as ``(epoch, steps done, steps in the epoch)``.
    """

    def __init__(self, progress, epochs: int):
        self.progress, self.epochs = progress, epochs
        self.task, self.epoch = None, None

    def finish(self) -> None:
        if self.task is not None:
            self.progress.remove_task(self.task)
            self.task = None

    def __call__(self, epoch: int, done: int, total: int) -> None:
        if epoch != self.epoch:
            self.finish()
            self.epoch = epoch
            self.task = self.progress.add_task(f"epoch {epoch}/{self.epochs}", total=total)
        if self.task is not None:
            self.progress.update(self.task, completed=done, total=total)


@contextlib.contextmanager
def progress_bar(enabled: bool, epochs: int):
    """A transient rich progress bar on stderr (an
    [`EpochProgress`][jaxmlp.cli.output.EpochProgress]), or None when disabled or not a terminal."""
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
        yield EpochProgress(progress, epochs)


class StopRequest:
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


def epoch_header(private: bool = False) -> str:
    """The training table's header; DP-SGD runs get an epsilon column."""
    header = (
        f"{'epoch':>5}  {'train loss':>10}  {'train acc':>9}  {'val loss':>8}  "
        f"{'val acc':>7}  {'seconds':>7}"
    )
    return header + (f"  {'epsilon':>8}" if private else "")


def epoch_row(record: dict[str, Any]) -> str:
    """One row of the training table for a record of [`jaxmlp.fit`][]'s history."""
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
    ) + (f"  {record['epsilon']:8.3f}" if "epsilon" in record else "")
