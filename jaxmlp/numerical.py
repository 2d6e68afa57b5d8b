"""Numerical gradients by central differences, and the gradient-check report.

The deep-learning-from-scratch method: for every scalar parameter theta_i,
    dL/dtheta_i ~ (L(theta + h e_i) - L(theta - h e_i)) / (2 h).
It costs two loss evaluations per parameter, which is why nobody trains this way, but it needs
no derivation and so checks the ones that were derived.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from jaxmlp import _validation


def numerical_grad(
    f: Callable[..., jax.Array],
    params: Any,
    eps: float = 1e-4,
    *,
    args: tuple = (),
    chunk_size: int = 256,
) -> Any:
    """Central-difference gradient of the scalar function ``f`` at ``params``.

    Args:
        f: a JAX-traceable function ``f(params, *args)`` returning a scalar, e.g.
            ``jaxmlp.loss`` with ``args=(x, y)``, or ``lambda p: jaxmlp.loss(p, x, y, l2=0.1)``.
        params: any pytree of floating arrays.
        eps: the step h. 1e-4 is the texts' choice; in float32 the rounding error of f limits the
            accuracy to about 1e-3 relative, so check gradients in float64.
        args: further arguments of ``f``. Pass data here rather than closing over it: arrays
            captured by ``f`` become constants that XLA folds at compile time, slowly.
        chunk_size: how many perturbed copies are evaluated at once (memory vs speed).

    Returns:
        A pytree like ``params`` holding the numerical gradient.
    """
    _validation.check_positive("eps", eps)
    _validation.check_positive_int("chunk_size", chunk_size)
    flat, unravel = ravel_pytree(params)
    if flat.size == 0:
        raise ValueError("params has no entries to differentiate")
    step = jnp.asarray(eps, flat.dtype)

    @jax.jit
    def gradient_of(flat, args):
        def partial_derivative(index):
            basis = jnp.zeros_like(flat).at[index].set(step)
            return (f(unravel(flat + basis), *args) - f(unravel(flat - basis), *args)) / (2 * step)

        return jax.lax.map(partial_derivative, jnp.arange(flat.size), batch_size=chunk_size)

    gradient = gradient_of(flat, tuple(args))
    return unravel(gradient.astype(flat.dtype))


def grad_check(a: Any, b: Any) -> dict[str, dict[str, float]]:
    """Compare two gradient pytrees of the same structure, parameter by parameter.

    Returns ``{path: {"max_abs_diff", "mean_abs_diff", "relative_error"}}`` where the relative
    error is ||a - b|| / (||a|| + ||b||) (0 when both are zero). The texts call a relative error
    below 1e-7 good in float64.
    """
    leaves_a, tree_a = jax.tree_util.tree_flatten_with_path(a)
    leaves_b, tree_b = jax.tree_util.tree_flatten(b)
    if tree_a.num_leaves != tree_b.num_leaves or jax.tree_util.tree_structure(a) != tree_b:
        raise ValueError(
            f"gradients have different structures: {tree_b} vs {jax.tree.structure(a)}"
        )
    report = {}
    for (path, leaf_a), leaf_b in zip(leaves_a, leaves_b, strict=True):
        x, y = np.asarray(leaf_a, np.float64), np.asarray(leaf_b, np.float64)
        if x.shape != y.shape:
            raise ValueError(f"{jax.tree_util.keystr(path)}: shapes {x.shape} and {y.shape} differ")
        difference = np.abs(x - y)
        norms = np.linalg.norm(x) + np.linalg.norm(y)
        report[jax.tree_util.keystr(path)] = {
            "max_abs_diff": float(difference.max(initial=0.0)),
            "mean_abs_diff": float(difference.mean()) if difference.size else 0.0,
            "relative_error": float(np.linalg.norm(x - y) / norms) if norms > 0 else 0.0,
        }
    return report
