"""Section 2: microseconds per gradient, jax.grad against hand backprop, NumPy and numerical.

Every figure is one call on one batch, synchronised (``block_until_ready``), warm-up and compile
excluded (compile seconds are reported beside), median over repeats. Sweeps: width of one hidden
layer, depth at width 256, batch size for 784-256-256-10. ``jax.value_and_grad`` is compared
with computing the loss and the gradient in two separate jitted calls.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

import jaxmlp
from benchmarks import numpy_reference
from benchmarks.common import Mode, sizes_label, step_flops, synthetic_mnist
from benchmarks.timing import compile_seconds, measure

FULL_SWEEPS = {
    "width": [((784, width, 10), 128) for width in (50, 100, 256, 512, 1024, 2048, 4096)],
    "depth": [((784, *[256] * depth, 10), 128) for depth in (1, 2, 3, 4)],
    "batch": [((784, 256, 256, 10), batch) for batch in (1, 8, 32, 128, 512, 1024, 4096)],
}
QUICK_SWEEPS = {
    "width": [((784, 50, 10), 128)],
    "batch": [((784, 256, 256, 10), 1)],
}
NUMERICAL_NET = (64, 16, 10)  # small enough to difference every parameter


def _timed(function, args, mode: Mode) -> dict[str, Any]:
    compiled, seconds = compile_seconds(function, *args)
    timing = measure(
        lambda: compiled(*args),
        repeats=mode.repeats,
        min_repeat_s=mode.min_repeat_s,
        budget_s=mode.budget_s,
    )
    return {**timing, "compile_s": seconds}


def point(sizes, batch: int, mode: Mode) -> dict[str, Any]:
    """All timings for one architecture and batch size (float32)."""
    x_np, y_np = synthetic_mnist(batch, sizes[0], sizes[-1], seed=1)
    x, y = jnp.asarray(x_np), jnp.asarray(y_np)
    params = jaxmlp.init_mlp(jax.random.key(0), sizes)
    args = (params, x, y)
    loss = jax.jit(jaxmlp.loss)
    functions = {
        "autodiff": jax.jit(jax.value_and_grad(jaxmlp.loss)),
        "backprop": jax.jit(jaxmlp.backprop),
        "grad_only": jax.jit(jax.grad(jaxmlp.loss)),
        "loss_only": loss,
    }
    result: dict[str, Any] = {
        "architecture": sizes_label(sizes),
        "batch": batch,
        "parameters": jaxmlp.parameter_count(sizes),
        "matmul_flops": step_flops(sizes, batch),
    }
    for name, function in functions.items():
        result[name] = _timed(function, args, mode)
    result["separate_loss_then_grad_s"] = (
        result["loss_only"]["median_s"] + result["grad_only"]["median_s"]
    )
    params_np = numpy_reference.to_numpy(params)
    result["numpy"] = measure(
        lambda: numpy_reference.loss_and_grads(params_np, x_np, y_np),
        repeats=mode.repeats,
        min_repeat_s=mode.min_repeat_s,
        budget_s=mode.budget_s,
    )
    # Central differences: two loss evaluations per parameter, each at least one loss call.
    result["numerical_extrapolated_s"] = 2 * result["parameters"] * result["loss_only"]["median_s"]
    result["backprop_over_autodiff"] = (
        result["backprop"]["median_s"] / result["autodiff"]["median_s"]
    )
    return result


def numerical_small(mode: Mode) -> dict[str, Any]:
    """``jaxmlp.numerical_grad`` measured on a small net: its seconds per parameter."""
    batch = 128
    x_np, y_np = synthetic_mnist(batch, NUMERICAL_NET[0], NUMERICAL_NET[-1], seed=2)
    x, y = jnp.asarray(x_np), jnp.asarray(y_np)
    params = jaxmlp.init_mlp(jax.random.key(0), NUMERICAL_NET)
    loss = jax.jit(jaxmlp.loss)
    # Called inside a jit that takes the data as arguments: numerical_grad jits a closure, and a
    # closure over concrete arrays would make XLA constant-fold the products at every call.
    numerical = jax.jit(
        lambda params, x, y: jaxmlp.numerical_grad(lambda p: jaxmlp.loss(p, x, y), params)
    )
    compiled, compile_s = compile_seconds(numerical, params, x, y)
    timing = measure(
        lambda: compiled(params, x, y), repeats=3, min_repeat_s=0.0, budget_s=mode.budget_s
    )
    loss_timing = measure(
        lambda: loss(params, x, y),
        repeats=mode.repeats,
        min_repeat_s=mode.min_repeat_s,
        budget_s=mode.budget_s,
    )
    count = jaxmlp.parameter_count(NUMERICAL_NET)
    return {
        "architecture": sizes_label(NUMERICAL_NET),
        "batch": batch,
        "parameters": count,
        "numerical_grad": {**timing, "compile_s": compile_s},
        "seconds_per_parameter": timing["median_s"] / count,
        "loss_only": loss_timing,
        "note": "jaxmlp.numerical_grad evaluates 256 perturbed copies at once; the "
        "extrapolation to the sweep's nets uses 2 x parameters x one loss call instead",
    }


def run(mode: Mode, **_: Any) -> dict[str, Any]:
    sweeps = QUICK_SWEEPS if mode.quick else FULL_SWEEPS
    result: dict[str, Any] = {"sweeps": {}}
    for sweep, points in sweeps.items():
        rows = []
        for sizes, batch in points:
            row = point(sizes, batch, mode)
            rows.append(row)
            print(
                f"  {sweep}: {row['architecture']} batch {batch}: "
                f"autodiff {row['autodiff']['median_s'] * 1e6:.0f} us, "
                f"backprop {row['backprop']['median_s'] * 1e6:.0f} us, "
                f"numpy {row['numpy']['median_s'] * 1e6:.0f} us",
                flush=True,
            )
        result["sweeps"][sweep] = rows
    result["numerical_small"] = numerical_small(mode)
    ratios = [row["backprop_over_autodiff"] for rows in result["sweeps"].values() for row in rows]
    result["goal_within_10_percent"] = {
        "ratios_backprop_over_autodiff": ratios,
        "worst": max(ratios, key=lambda ratio: abs(np.log(ratio))),
        "met": all(0.9 <= ratio <= 1.1 for ratio in ratios),
    }
    return result
