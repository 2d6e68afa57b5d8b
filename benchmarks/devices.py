"""Data-parallel training throughput against the number of devices.

    python -m benchmarks.devices [--counts 1 2 4 8] [--out benchmarks/results]

Each device count runs in a child process of its own, because the number of (virtual) CPU
devices is fixed when JAX starts (``jaxmlp.sharding.set_cpu_device_count``). A child trains a
784-256-10 MLP with Adam on synthetic MNIST-shaped data, data-parallel over a
``jaxmlp.sharding.data_parallel_mesh`` of that many devices, and reports examples per second of
whole epochs after the compile. Virtual CPU devices share the machine's cores, so on CPU this
measures the cost of the partitioned program and its all-reduce, not a speed-up; on a GPU
machine every local GPU is one real device and the GPU row is added.

Writes ``devices-<host>-<date>.json`` and ``.md`` into ``--out``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

CHILD_TIMEOUT = 300


def child(platform_name: str, count: int, args: argparse.Namespace) -> dict[str, Any]:
    """Runs in the child process: train on ``count`` devices and time it."""
    from jaxmlp import sharding

    if platform_name == "cpu":
        sharding.set_cpu_device_count(count)
    import jax
    import numpy as np

    import jaxmlp

    devices = jax.devices()[:count]
    if len(devices) < count:
        raise SystemExit(f"only {len(devices)} {platform_name} devices, asked for {count}")
    mesh = sharding.data_parallel_mesh(devices)
    rng = np.random.default_rng(0)
    images = rng.uniform(size=(args.examples, 784)).astype(np.float32)
    labels = rng.integers(0, 10, args.examples).astype(np.int32)
    state = jaxmlp.create_train_state(
        jax.random.key(0), (784, args.hidden, 10), jaxmlp.optimizer("adam", 1e-3)
    )
    state, images, labels = sharding.replicate((state, images, labels), mesh)

    began = time.perf_counter()
    state, metrics = jaxmlp.train_epoch(state, images, labels, batch_size=args.batch, mesh=mesh)
    jax.block_until_ready(metrics)
    first = time.perf_counter() - began
    seconds = []
    for _ in range(args.epochs):
        began = time.perf_counter()
        state, metrics = jaxmlp.train_epoch(state, images, labels, batch_size=args.batch, mesh=mesh)
        jax.block_until_ready(metrics)
        seconds.append(time.perf_counter() - began)
    best = min(seconds)
    return {
        "platform": platform_name,
        "devices": count,
        "device_kind": devices[0].device_kind,
        "examples_per_epoch": args.examples,
        "batch_size": args.batch,
        "per_device_batch": args.batch // count,
        "first_epoch_seconds": first,
        "epoch_seconds": seconds,
        "examples_per_second": args.examples / best,
        "final_loss": float(metrics["loss"]),
    }


def _run_child(platform_name: str, count: int, args: argparse.Namespace) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    env["JAX_PLATFORMS"] = platform_name
    command = [
        sys.executable,
        "-m",
        "benchmarks.devices",
        "--child",
        platform_name,
        str(count),
        "--examples",
        str(args.examples),
        "--batch",
        str(args.batch),
        "--epochs",
        str(args.epochs),
        "--hidden",
        str(args.hidden),
    ]
    try:
        done = subprocess.run(
            command,
            capture_output=True,
            text=True,
            env=env,
            timeout=CHILD_TIMEOUT,
            cwd=Path(__file__).resolve().parent.parent,
        )
    except subprocess.TimeoutExpired:
        return {"platform": platform_name, "devices": count, "error": "timed out"}
    if done.returncode != 0:
        lines = (done.stderr or done.stdout).strip().splitlines() or ["no output"]
        return {"platform": platform_name, "devices": count, "error": lines[-1]}
    return json.loads(done.stdout.strip().splitlines()[-1])


def _gpu_count() -> int:
    """Local GPUs, asked in a child so that this process never starts JAX."""
    probe = (
        "import jax\ntry:\n    print(len(jax.devices('gpu')))\nexcept RuntimeError:\n    print(0)\n"
    )
    try:
        done = subprocess.run(
            [sys.executable, "-c", probe], capture_output=True, text=True, timeout=120
        )
        return int(done.stdout.strip().splitlines()[-1]) if done.returncode == 0 else 0
    except (subprocess.TimeoutExpired, ValueError, IndexError):
        return 0


def markdown(report: dict[str, Any]) -> str:
    rows = report["results"]
    base = {
        r["platform"]: r["examples_per_second"]
        for r in rows
        if r.get("devices") == 1 and "examples_per_second" in r
    }
    lines = [
        f"# Data-parallel throughput against device count ({report['host']}, {report['date']})",
        "",
        f"784-{report['hidden']}-10 MLP, Adam, {report['examples']:,} synthetic examples per "
        f"epoch, global batch {report['batch']}; best of {report['epochs']} epochs after the "
        f"compile. CPU devices are virtual: they share the machine's {report['cpu_count']} "
        "cores.",
        "",
        "| platform | devices | per-device batch | examples/s | vs 1 device | first epoch (s) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['platform']} | {r['devices']} | - | error: {r['error']} | - | - |")
            continue
        ratio = r["examples_per_second"] / base[r["platform"]] if r["platform"] in base else 1.0
        lines.append(
            f"| {r['platform']} ({r['device_kind']}) | {r['devices']} | "
            f"{r['per_device_batch']} | {r['examples_per_second']:,.0f} | "
            f"{ratio:.2f}x | {r['first_epoch_seconds']:.2f} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.devices", description=__doc__.split("\n")[0]
    )
    parser.add_argument(
        "--counts", type=int, nargs="+", default=[1, 2, 4, 8], help="virtual CPU device counts"
    )
    parser.add_argument("--examples", type=int, default=16384, help="examples per epoch")
    parser.add_argument("--batch", type=int, default=512, help="global batch size")
    parser.add_argument("--epochs", type=int, default=3, help="timed epochs per count")
    parser.add_argument("--hidden", type=int, default=256, help="hidden units")
    parser.add_argument("--out", default="benchmarks/results", help="output folder")
    parser.add_argument("--no-gpu", action="store_true", help="skip the GPU row")
    parser.add_argument("--child", nargs=2, metavar=("PLATFORM", "COUNT"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child[0], int(args.child[1]), args)))
        return 0
    for count in args.counts:
        if count < 1 or args.batch % count:
            parser.error(f"--batch {args.batch} must be a multiple of every count ({count})")

    results = []
    for count in args.counts:
        result = _run_child("cpu", count, args)
        results.append(result)
        print(json.dumps(result), flush=True)
    gpus = 0 if args.no_gpu else _gpu_count()
    if gpus:
        for count in sorted({1, gpus}):
            result = _run_child("cuda", count, args)
            results.append(result)
            print(json.dumps(result), flush=True)
    today = datetime.date.today().isoformat()
    host = socket.gethostname().split(".")[0] or "host"
    report = {
        "host": host,
        "date": today,
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "examples": args.examples,
        "batch": args.batch,
        "epochs": args.epochs,
        "hidden": args.hidden,
        "results": results,
    }
    from jaxmlp._files import atomic_write, write_json

    stem = Path(args.out) / f"devices-{host}-{today}"
    write_json(stem.with_suffix(".json"), report)
    atomic_write(stem.with_suffix(".md"), lambda f: f.write(markdown(report).encode("utf-8")))
    print(markdown(report))
    print(f"wrote {stem}.json and {stem}.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
