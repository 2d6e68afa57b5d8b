"""The command's persistent compilation cache and the provenance of a run directory."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import jax
import pytest
from cli_support import small_run

from jaxmlp.cli import compilation

pytestmark = [pytest.mark.data, pytest.mark.xdist_group("compilation_cache")]


def _train(tmp_path, name: str, *extra: str, cache: str | None) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env.pop("JAXMLP_COMPILATION_CACHE", None)
    if cache is not None:
        env["JAXMLP_COMPILATION_CACHE"] = cache
    argv = ["train", "--runs-dir", str(tmp_path / "runs"), "--name", name, *small_run(16)]
    return subprocess.run(
        [sys.executable, "-m", "jaxmlp", *argv, "--epochs", "1", "--no-plots", "--json", *extra],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )


def _entries(directory) -> set[str]:
    return {p.name for p in directory.iterdir()} if directory.is_dir() else set()


def test_a_second_identical_run_compiles_nothing(needs_data, tmp_path):
    cache = tmp_path / "xla"
    first = _train(tmp_path, "first", cache=str(cache))
    assert first.returncode == 0, first.stderr
    written = _entries(cache)
    assert written, "the first run stored no compiled program"
    second = _train(tmp_path, "second", cache=str(cache))
    assert second.returncode == 0, second.stderr
    assert _entries(cache) == written  # every program came from the cache
    history = lambda run: json.loads((tmp_path / "runs" / run / "history.json").read_text())
    strip = lambda records: [
        {k: v for k, v in r.items() if k not in ("seconds", "compile_seconds")} for r in records
    ]
    assert strip(history("first")) == strip(history("second"))


@pytest.mark.parametrize("how", ["variable", "flag"])
def test_the_cache_can_be_turned_off(needs_data, tmp_path, how):
    cache = tmp_path / "xla"
    if how == "variable":
        result = _train(tmp_path, "off", cache="0")
        assert not cache.exists()
    else:
        result = _train(tmp_path, "off", "--no-compilation-cache", cache=str(cache))
        assert not cache.exists()
    assert result.returncode == 0, result.stderr


def test_the_cache_lives_in_the_user_cache_unless_moved(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.delenv("JAXMLP_COMPILATION_CACHE", raising=False)
    assert compilation.cache_location() == tmp_path / "jaxmlp" / "xla"
    monkeypatch.setenv("JAXMLP_COMPILATION_CACHE", str(tmp_path / "elsewhere"))
    assert compilation.cache_location() == tmp_path / "elsewhere"
    for off in ("0", "off", "No", "false"):
        monkeypatch.setenv("JAXMLP_COMPILATION_CACHE", off)
        assert compilation.cache_location() is None
    assert compilation.cache_location(enabled=False) is None


def test_a_run_directory_records_what_it_was_computed_with(needs_data, tmp_path):
    result = _train(tmp_path, "prov", cache="0")
    assert result.returncode == 0, result.stderr
    (start,) = json.loads((tmp_path / "runs" / "prov" / "provenance.json").read_text())["starts"]
    from importlib import metadata

    for package in ("jaxmlp", "jax", "jaxlib", "optax"):
        assert start["versions"][package] == metadata.version(package)
    assert start["device_kind"] == jax.devices()[0].device_kind
    assert start["device_count"] == len(jax.devices())
    assert start["command"][:4] == ["jaxmlp", "train", "--runs-dir", str(tmp_path / "runs")]
    resumed = _train(tmp_path, "prov", "--resume", cache="0")
    assert resumed.returncode == 0, resumed.stderr
    starts = json.loads((tmp_path / "runs" / "prov" / "provenance.json").read_text())["starts"]
    assert len(starts) == 2 and "--resume" in starts[1]["command"]
