"""Data-parallel training over several CPU devices and several processes gives the parameters
of the single-device run.

The device count must be fixed before JAX starts, so each run is a child process
(tests/helpers_distributed.py). The two-process run joins two children over 127.0.0.1 with
``jax.distributed.initialize`` and gloo collectives, each child driving two CPU devices: one
global mesh of four devices. Every child has a hard timeout, so a hang fails instead of blocking.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

HELPER = Path(__file__).with_name("helpers_distributed.py")
TIMEOUT = 180  # seconds per child; the runs take 10-40 s on a loaded 2-core machine
# Float tolerance: the sharded step sums each device's partial gradients, in another order.
TOLERANCE = 1e-6

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("distributed")]


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    # CPU on purpose, even where a GPU is present: the test is about virtual CPU devices.
    env.update(JAX_PLATFORMS="cpu", PYTHONUNBUFFERED="1")
    return env


def _start(*args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, str(HELPER), *map(str, args)],
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _finish(processes: list[subprocess.Popen]) -> list[str]:
    """Wait for all children; on a timeout or failure kill them all and fail with their output."""
    outputs: list[str] = []
    try:
        for process in processes:
            out, _ = process.communicate(timeout=TIMEOUT)
            outputs.append(out)
    except subprocess.TimeoutExpired:
        for process in processes:
            process.kill()
        logs = [process.communicate()[0] for process in processes]
        pytest.fail(
            f"a child process did not finish within {TIMEOUT} s:\n"
            + "\n---\n".join(log[-2000:] for log in logs)
        )
    for process, out in zip(processes, outputs, strict=True):
        assert process.returncode == 0, out[-3000:]
    return outputs


def _report(output: str) -> dict:
    return json.loads(output.strip().splitlines()[-1])


def _max_difference(a, b) -> float:
    assert sorted(a.files) == sorted(b.files)
    return max(float(np.max(np.abs(a[k] - b[k]))) for k in a.files)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_sharded_over_virtual_devices_matches_one_device(tmp_path):
    out = tmp_path / "compare.json"
    _finish([_start("compare", "--devices", 4, "--out", out)])
    report = json.loads(out.read_text())
    print("max |sharded - single device| after 2 epochs:", report["max_abs_diff"])
    assert report["devices"] == 4 and report["epochs"] == [1, 2]
    assert set(report["max_abs_diff"]) == {"2", "4"}
    for difference in report["max_abs_diff"].values():
        assert difference < TOLERANCE


def test_two_processes_train_together_like_one(tmp_path):
    port = _free_port()
    workers = [
        _start(
            "worker",
            "--process-id",
            i,
            "--num-processes",
            2,
            "--port",
            port,
            "--devices",
            2,
            "--out",
            tmp_path / f"worker{i}.npz",
        )
        for i in range(2)
    ]
    single = _start("single", "--devices", 1, "--out", tmp_path / "single.npz")
    outputs = _finish([*workers, single])
    reports = [_report(out) for out in outputs[:2]]
    for i, report in enumerate(reports):
        assert report["process"] == i and report["processes"] == 2
        assert report["local_devices"] == 2 and report["global_devices"] == 4
        assert report["mesh"] == "data-parallel over 4 devices (cpu) in 2 processes"
    first, second, alone = (
        np.load(tmp_path / f"{name}.npz") for name in ("worker0", "worker1", "single")
    )
    # Both processes hold the same replicated parameters, bit for bit ...
    assert _max_difference(first, second) == 0.0
    # ... and they are those of the one-device run.
    difference = _max_difference(first, alone)
    print(f"max |two processes - one device| after 2 epochs: {difference:.3g}")
    assert difference < TOLERANCE


def test_device_count_benchmark_runs_and_writes_its_report(tmp_path):
    root = Path(__file__).resolve().parent.parent
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks.devices",
            "--counts",
            "1",
            "2",
            "--examples",
            "1024",
            "--batch",
            "128",
            "--epochs",
            "1",
            "--hidden",
            "32",
            "--no-gpu",
            "--out",
            str(tmp_path),
        ],
        cwd=root,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    (report_file,) = tmp_path.glob("devices-*.json")
    report = json.loads(report_file.read_text())
    assert [r["devices"] for r in report["results"]] == [1, 2]
    assert all(r["examples_per_second"] > 0 for r in report["results"])
    assert "| cpu (cpu) | 2 | 64 |" in report_file.with_suffix(".md").read_text()
