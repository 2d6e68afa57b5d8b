"""What the tests of the ``jaxmlp`` command share: running it in-process, checking its one-line
errors, requiring the real MNIST files, and reading a run directory back."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

from jaxmlp import checkpoints, cli, data
from jaxmlp.cli import config as cfglib
from jaxmlp.cli import runs


def small_run(hidden: int, *extra: str) -> list[str]:
    """Options of a quick ``jaxmlp train`` run: 1000 training, 300 validation and 300 test
    images, batches of 100, one hidden layer of ``hidden`` units; ``extra`` appended."""
    return [
        "--train-limit",
        "1000",
        "--test-limit",
        "300",
        "--validation",
        "300",
        "--batch-size",
        "100",
        "--hidden",
        str(hidden),
        *extra,
    ]


def require_mnist() -> None:
    """Skip the calling test without verified MNIST files, or fail if JAXMLP_REQUIRE_DATA=1."""
    statuses = data.status("mnist")
    if all(s.state == "verified" for s in statuses):
        return
    reason = "official MNIST files not found: " + "; ".join(
        f"{s.filename}: {s.state}" for s in statuses
    )
    if os.environ.get("JAXMLP_REQUIRE_DATA", "") not in ("", "0"):
        pytest.fail(reason)
    pytest.skip(reason)


def run(capsys, *argv) -> tuple[int, str, str]:
    """``jaxmlp ARGV...`` in this process: (exit status, stdout, stderr)."""
    code = cli.main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def train(capsys, run_dir: Path, *argv) -> tuple[int, str, str]:
    """``jaxmlp train`` of the run directory ``run_dir`` (``--runs-dir`` its parent, ``--name``
    its name) with ``argv``: (exit status, stdout, stderr)."""
    return run(capsys, "train", "--runs-dir", run_dir.parent, "--name", run_dir.name, *argv)


def assert_one_line_error(code: int, err: str, *fragments: str, usage: bool = False) -> str:
    """Exit status 2 and one ``jaxmlp: error: ...`` line holding every fragment; returns it.

    ``usage=True`` also accepts argparse's ``jaxmlp SUBCOMMAND: error: ...`` form, which
    option-parsing errors take.
    """
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    prefix = r"jaxmlp( [a-z]+)?: error: " if usage else r"jaxmlp: error: "
    assert re.match(prefix, lines[0]), err
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]


def restore_final(run_dir: Path) -> checkpoints.Restored:
    """The newest good checkpoint of a run, restored into a state built from its config."""
    config = cfglib.load(run_dir / "config.json")
    target = runs.build_state(config, runs.train_size(config))
    return checkpoints.restore_latest(run_dir / "checkpoints", target)


def history_epochs(run_dir: Path) -> list[int]:
    """The epochs recorded in a run's history.json (none if it has not been written)."""
    path = run_dir / "history.json"
    if not path.exists():
        return []
    return [r["epoch"] for r in json.loads(path.read_text())]
