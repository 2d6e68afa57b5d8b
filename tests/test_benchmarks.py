"""Smoke test of the benchmark suite: ``python -m benchmarks --quick`` runs and writes valid JSON.

It asserts nothing about speed: timings belong to the report, not to a test.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_quick_run_writes_valid_json(tmp_path):
    completed = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick", "--no-torch", "--out", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
        env=dict(os.environ),
    )
    assert completed.returncode == 0, completed.stdout[-2000:] + completed.stderr[-2000:]
    written = list(tmp_path.glob("*-quick.json"))
    assert len(written) == 1
    results = json.loads(written[0].read_text())
    assert set(results["sections"]) == {
        "correctness",
        "gradient_speed",
        "throughput",
        "limit",
        "scaling",
        "privacy",
        "sweep",
    }
    assert results["machine"]["jax"]
    assert list(tmp_path.glob("*-quick.md"))
    assert list(tmp_path.glob("*.png"))


@pytest.mark.slow
def test_only_selects_sections(tmp_path):
    completed = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick", "--only", "limit", "--out", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        env=dict(os.environ),
    )
    assert completed.returncode == 0, completed.stderr[-2000:]
    results = json.loads(next(tmp_path.glob("*-quick.json")).read_text())
    assert list(results["sections"]) == ["limit"]
