"""Section 1: do jax.grad, jaxmlp's hand backprop, NumPy's hand backprop and central differences
agree, parameter by parameter, in float32 and float64?

The relative error is ||a - b|| / (||a|| + ||b||) per parameter (``jaxmlp.grad_check``). Dropout
masks are fixed by one key and handed to the NumPy side, so every method differentiates the
same function. Matrix products run at full precision (``highest``), so that on a GPU the float32
figures measure the gradients, not TF32 rounding.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

import jaxmlp
from benchmarks import numpy_reference
from benchmarks.common import Mode, sizes_label, synthetic_mnist

ARCHITECTURES = [
    ((784, 50, 10), "relu"),
    ((784, 100, 10), "sigmoid"),
    ((784, 256, 256, 10), "relu"),
    ((784, 100, 100, 100, 100, 10), "relu"),
]
VARIANTS = {  # name -> (l2, dropout_rate)
    "plain": (0.0, 0.0),
    "l2": (1e-3, 0.0),
    "dropout": (0.0, 0.5),
    "l2+dropout": (1e-3, 0.5),
}
GOALS = {"float64": 1e-10, "float32": 1e-5}  # autodiff vs hand backprop, relative
STATIC = ("activation", "l2", "output", "dropout_rate")


def _sampled_numerical(loss_of, params, data, count: int, eps: float, seed: int):
    """Central differences at ``count`` random coordinates of every parameter leaf.

    A full numerical gradient costs two loss evaluations per parameter (hundreds of thousands
    here); a random sample per leaf checks every leaf at a tiny fraction of that.
    ``loss_of(params, *data)``; the data travel as arguments, not closed-over constants, or XLA
    would spend its compile folding the products. Returns (flat indices, numerical values).
    """
    flat, unravel = ravel_pytree(params)
    rng = np.random.default_rng(seed)
    indices, offset = [], 0
    for leaf in jax.tree.leaves(params):
        chosen = rng.choice(leaf.size, size=min(count, leaf.size), replace=False)
        indices.append(offset + chosen)
        offset += leaf.size
    indices = np.concatenate(indices)

    @jax.jit
    def sample(flat, data, indices):
        step = jnp.asarray(eps, flat.dtype)

        def derivative(index):
            basis = jnp.zeros_like(flat).at[index].set(step)
            forward = loss_of(unravel(flat + basis), *data)
            backward = loss_of(unravel(flat - basis), *data)
            return (forward - backward) / (2 * step)

        return jax.lax.map(derivative, indices, batch_size=64)

    return indices, np.asarray(sample(flat, data, jnp.asarray(indices)))


def _summary(report: dict[str, dict[str, float]]) -> dict[str, Any]:
    return {
        "max_relative_error": max(entry["relative_error"] for entry in report.values()),
        "max_abs_diff": max(entry["max_abs_diff"] for entry in report.values()),
        "per_parameter": report,
    }


def _sampled_report(flat_reference: np.ndarray, indices: np.ndarray, numerical: np.ndarray):
    """max abs diff and relative error of the numerical sample against the same coordinates."""
    exact = flat_reference[indices]
    norms = np.linalg.norm(exact) + np.linalg.norm(numerical)
    return {
        "max_relative_error": float(np.linalg.norm(exact - numerical) / norms) if norms else 0.0,
        "max_abs_diff": float(np.max(np.abs(exact - numerical))),
        "coordinates": int(indices.size),
    }


def check_case(
    sizes,
    activation: str,
    variant: str,
    dtype: str,
    batch: int,
    samples: int,
    with_numerical: bool,
    seed: int = 0,
) -> dict[str, Any]:
    """All pairwise comparisons for one architecture, variant and dtype."""
    l2, dropout_rate = VARIANTS[variant]
    x_np, y_np = synthetic_mnist(batch, sizes[0], sizes[-1], seed=seed)
    x = jnp.asarray(x_np, dtype)
    y = jnp.asarray(y_np)
    init = "glorot" if activation == "sigmoid" else "he"
    params = jaxmlp.init_mlp(jax.random.key(seed), sizes, init=init, dtype=jnp.dtype(dtype))
    key = jax.random.key(seed + 1) if dropout_rate else None
    options = {
        "activation": activation,
        "l2": l2,
        "output": "softmax",
        "dropout_rate": dropout_rate,
    }

    autodiff = jax.jit(jax.grad(jaxmlp.loss), static_argnames=STATIC)(
        params, x, y, key=key, **options
    )
    _, backprop = jax.jit(jaxmlp.backprop, static_argnames=STATIC)(params, x, y, key=key, **options)
    masks = jaxmlp.model.layer_masks(
        params, batch, dtype=x.dtype, key=key, dropout_rate=dropout_rate
    )
    masks_np = [None if mask is None else np.asarray(mask) for mask in masks]
    _, numpy_grads = numpy_reference.loss_and_grads(
        numpy_reference.to_numpy(params),
        np.asarray(x),
        y_np,
        activation=activation,
        l2=l2,
        masks=masks_np,
    )
    result = {
        "architecture": sizes_label(sizes),
        "activation": activation,
        "variant": variant,
        "dtype": dtype,
        "batch": batch,
        "autodiff_vs_backprop": _summary(jaxmlp.grad_check(autodiff, backprop)),
        "autodiff_vs_numpy": _summary(jaxmlp.grad_check(autodiff, numpy_grads)),
        "backprop_vs_numpy": _summary(jaxmlp.grad_check(backprop, numpy_grads)),
    }
    if dtype == "float64" and with_numerical:
        # In float32 the loss's rounding (~1e-7 relative) divided by 2h swamps the derivative.
        indices, values = _sampled_numerical(
            lambda p, x, y, key: jaxmlp.loss(p, x, y, key=key, **options),
            params,
            (x, y, key),
            samples,
            1e-6,
            seed,
        )
        flat_autodiff = np.asarray(ravel_pytree(autodiff)[0])
        flat_backprop = np.asarray(ravel_pytree(backprop)[0])
        result["numerical_vs_autodiff"] = _sampled_report(flat_autodiff, indices, values)
        result["numerical_vs_backprop"] = _sampled_report(flat_backprop, indices, values)
    return result


def run(mode: Mode, **_: Any) -> dict[str, Any]:
    cases = []
    batch = 32 if mode.quick else 64
    samples = 8 if mode.quick else 32
    # Every case costs a few XLA compiles (about a second each on two cores), which is what
    # bounds this section's time, not the gradients themselves.
    architectures = ARCHITECTURES[:1] if mode.quick else ARCHITECTURES
    variants = ["l2+dropout"] if mode.quick else list(VARIANTS)
    numerical_variants = {"plain", "l2+dropout"}
    with jax.enable_x64(True), jax.default_matmul_precision("highest"):
        for dtype in ("float32", "float64"):
            for sizes, activation in architectures:
                for variant in variants:
                    case = check_case(
                        sizes,
                        activation,
                        variant,
                        dtype,
                        batch,
                        samples,
                        with_numerical=variant in numerical_variants,
                    )
                    cases.append(case)
                    print(
                        f"  {dtype} {case['architecture']} {activation} {variant}: "
                        f"autodiff vs backprop "
                        f"{case['autodiff_vs_backprop']['max_relative_error']:.1e}",
                        flush=True,
                    )
    goals = {}
    for dtype, bound in GOALS.items():
        worst = max(
            case["autodiff_vs_backprop"]["max_relative_error"]
            for case in cases
            if case["dtype"] == dtype
        )
        goals[dtype] = {"bound": bound, "worst_relative_error": worst, "met": worst <= bound}
    return {"cases": cases, "goals": goals, "numerical_eps": 1e-6, "matmul_precision": "highest"}
