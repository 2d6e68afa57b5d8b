"""Helpers shared by the experiments: command line, data, timing, result files and plots."""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

import jaxmlp
import jaxmlp.data
from jaxmlp._files import write_json

RESULTS = Path(__file__).resolve().parent / "results"


def arguments(description: str, extra: Callable[[argparse.ArgumentParser], None] | None = None):
    """The common command line: ``--quick`` for a smoke run, ``--out`` for the results folder."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--quick", action="store_true", help="tiny run for smoke tests")
    parser.add_argument("--out", type=Path, default=RESULTS, help="folder for JSON and PNG")
    if extra is not None:
        extra(parser)
    return parser.parse_args()


def load(name: str = "mnist", normalize: str = "unit", validation: int = 0):
    """A dataset from :func:`jaxmlp.data.load` (found through ``JAXMLP_DATA_DIR`` or the cache)."""
    return jaxmlp.data.load(name, normalize=normalize, validation=validation)


def environment() -> dict[str, Any]:
    """What the numbers were measured on, stored beside them."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            cwd=Path(__file__).parent,
            check=False,
        ).stdout.strip()
    except OSError:
        commit = ""
    return {
        "jax_version": jax.__version__,
        "jaxmlp_version": jaxmlp.__version__,
        "device": str(jax.devices()[0].device_kind),
        "platform": jax.default_backend(),
        "cpu_count": os.cpu_count(),
        "machine": platform.machine(),
        "python": platform.python_version(),
        "commit": commit,
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
    }


def save(name: str, result: dict[str, Any], out: Path = RESULTS, quick: bool = False) -> Path:
    """Write ``<out>/<name>.json`` (``<name>_quick.json`` for smoke runs) with the environment,
    atomically (:func:`jaxmlp._files.write_json`: NaN and infinities are written as null)."""
    path = out / f"{name}{'_quick' if quick else ''}.json"
    payload = {"experiment": name, "quick": quick, "environment": environment(), **result}
    write_json(path, payload)
    print(f"wrote {path}")
    return path


def figure_path(name: str, out: Path = RESULTS, quick: bool = False, suffix: str = "") -> Path:
    out.mkdir(parents=True, exist_ok=True)
    return out / f"{name}{suffix}{'_quick' if quick else ''}.png"


def pyplot():
    """matplotlib's pyplot with a file-only backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


@contextmanager
def timer() -> Iterator[dict[str, float]]:
    """``with timer() as t: ...`` then ``t["seconds"]``."""
    record: dict[str, float] = {}
    start = time.perf_counter()
    try:
        yield record
    finally:
        record["seconds"] = time.perf_counter() - start


def block(tree):
    """Wait for every array in a pytree (so timings include the computation)."""
    return jax.block_until_ready(tree)


def zero_biases(params):
    """The texts that draw weights from N(0, s^2) start their biases at zero."""
    return [{"w": layer["w"], "b": jnp.zeros_like(layer["b"])} for layer in params]


def train_with_replacement(state, images, labels, batch_size: int, steps: int):
    """``steps`` optimizer steps on minibatches drawn uniformly *with replacement*
    (``np.random.choice(n, batch_size)`` in deep-learning-from-scratch), inside one ``lax.scan``.

    The minibatch indices come from the state's own key folded with its step count, so a
    vmapped stack of states draws independent batches. Returns the state and the loss of
    every minibatch (before its update), as the text records it.
    """
    n = images.shape[0]

    def body(state, _):
        key = jax.random.fold_in(jax.random.wrap_key_data(state.key), state.step)
        index = jax.random.randint(jax.random.fold_in(key, 1), (batch_size,), 0, n)
        state, metrics = jaxmlp.train_step(state, images[index], labels[index])
        return state, metrics["loss"]

    return jax.lax.scan(body, state, None, length=steps)


def smooth_curve(x: np.ndarray) -> np.ndarray:
    """deep-learning-from-scratch's ``smooth_curve``: an 11-point Kaiser(beta=2) window with
    mirrored ends, so the curve keeps its length."""
    window = 11
    s = np.r_[x[window - 1 : 0 : -1], x, x[-1:-window:-1]]
    w = np.kaiser(window, 2)
    y = np.convolve(w / w.sum(), s, mode="valid")
    return y[5 : len(y) - 5]


def mean_std(values) -> dict[str, float]:
    values = np.asarray(values, np.float64)
    return {
        "mean": float(values.mean()),
        "std": float(values.std(ddof=1)) if values.size > 1 else 0.0,
        "min": float(values.min()),
        "max": float(values.max()),
        "n": int(values.size),
    }
