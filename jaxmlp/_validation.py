"""Checks run at the library boundary, in Python, before anything is traced or compiled.

Every error names the argument, what it got and what was expected, so that a mistake is fixed
from the message alone.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np


def check_choice(argument: str, value: Any, valid: Iterable[str]) -> str:
    """Return ``value`` if it is one of ``valid``; otherwise raise naming the valid choices."""
    valid = tuple(valid)
    if not isinstance(value, str) or value not in valid:
        raise ValueError(
            f"{argument}={value!r} is not supported; expected one of {', '.join(valid)}"
        )
    return value


def check_layer_sizes(layer_sizes: Sequence[int]) -> tuple[int, ...]:
    """Return ``layer_sizes`` as a tuple of ints: at least two sizes, each a positive integer."""
    if isinstance(layer_sizes, (str, bytes)) or not isinstance(layer_sizes, Sequence):
        raise TypeError(
            f"layer_sizes must be a sequence of ints such as (784, 256, 10), got {layer_sizes!r}"
        )
    if len(layer_sizes) < 2:
        raise ValueError(
            f"layer_sizes needs at least two sizes (inputs and outputs), got {list(layer_sizes)}"
        )
    for index, size in enumerate(layer_sizes):
        if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size <= 0:
            raise ValueError(
                f"layer_sizes[{index}]={size!r} is not a positive integer; "
                f"every layer size must be >= 1 (got {list(layer_sizes)})"
            )
    return tuple(int(size) for size in layer_sizes)


def check_rate(argument: str, value: Any) -> float:
    """A probability in [0, 1), such as a dropout rate."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
        raise TypeError(f"{argument} must be a number in [0, 1), got {value!r}")
    if not (0.0 <= float(value) < 1.0):
        raise ValueError(f"{argument}={value!r} is outside [0, 1); expected 0 <= {argument} < 1")
    return float(value)


def check_non_negative(argument: str, value: Any) -> float:
    """A finite number >= 0, such as an L2 coefficient."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
        raise TypeError(f"{argument} must be a finite number >= 0, got {value!r}")
    if not math.isfinite(float(value)) or float(value) < 0:
        raise ValueError(f"{argument}={value!r} is invalid; expected a finite number >= 0")
    return float(value)


def check_positive(argument: str, value: Any) -> float:
    """A finite number > 0, such as a learning rate or a step size."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
        raise TypeError(f"{argument} must be a finite number > 0, got {value!r}")
    if not math.isfinite(float(value)) or float(value) <= 0:
        raise ValueError(f"{argument}={value!r} is invalid; expected a finite number > 0")
    return float(value)


def check_positive_int(argument: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
        raise ValueError(f"{argument}={value!r} is invalid; expected a positive integer")
    return int(value)


def check_params(params: Any) -> None:
    """``params`` must be a non-empty list of ``{"w": (n_in, n_out), "b": (n_out,)}`` layers."""
    if not isinstance(params, (list, tuple)) or not params:
        raise TypeError(
            "params must be a non-empty list of {'w', 'b'} layers as returned by init_mlp, "
            f"got {type(params).__name__}"
        )
    previous = None
    for index, layer in enumerate(params):
        if not isinstance(layer, dict) or set(layer) != {"w", "b"}:
            raise TypeError(
                f"params[{index}] must be a dict with keys 'w' and 'b', got {layer!r:.80}"
            )
        w_shape, b_shape = np.shape(layer["w"]), np.shape(layer["b"])
        if len(w_shape) != 2 or b_shape != (w_shape[1],):
            raise ValueError(
                f"params[{index}] has w{w_shape} and b{b_shape}; expected w (n_in, n_out) "
                "and b (n_out,)"
            )
        if previous is not None and w_shape[0] != previous:
            raise ValueError(
                f"params[{index}]['w'] has {w_shape[0]} inputs but the previous layer has "
                f"{previous} outputs"
            )
        previous = w_shape[1]


def check_inputs(params: Any, x: Any) -> None:
    """``x`` must be a floating (batch, n_in) array matching the first layer."""
    n_in = np.shape(params[0]["w"])[0]
    shape = np.shape(x)
    if len(shape) != 2 or shape[1] != n_in:
        raise ValueError(
            f"x has shape {shape}; expected (batch, {n_in}) to match the first layer's {n_in} "
            "inputs (flatten images to rows first)"
        )
    dtype = getattr(x, "dtype", None)
    if dtype is not None and not np.issubdtype(dtype, np.floating):
        raise TypeError(
            f"x has dtype {dtype}; expected floating-point inputs (for uint8 pixels, divide by "
            "255 or use jaxmlp.data's normalization first)"
        )


def check_labels(labels: Any, batch: int, n_classes: int) -> None:
    """Integer class ids of shape (batch,) in [0, n_classes), or (batch, n_classes) rows."""
    shape = np.shape(labels)
    dtype = getattr(labels, "dtype", None)
    if dtype is None:
        labels = np.asarray(labels)
        dtype = labels.dtype
    if len(shape) == 1:
        if not np.issubdtype(dtype, np.integer):
            raise TypeError(
                f"labels of shape {shape} must be integer class ids, got dtype {dtype}; "
                "expected int32 ids in [0, n_classes) or one-hot rows of shape "
                f"(batch, {n_classes})"
            )
        if shape[0] != batch:
            raise ValueError(f"labels has {shape[0]} entries but x has {batch} rows")
        if shape[0] and _is_concrete(labels):
            # On the host: under a trace, jnp reductions of even concrete arrays are staged.
            values = np.asarray(labels)
            low, high = int(values.min()), int(values.max())
            if low < 0 or high >= n_classes:
                raise ValueError(
                    f"labels range over [{low}, {high}]; expected class ids in [0, {n_classes})"
                )
    elif len(shape) == 2:
        if shape != (batch, n_classes):
            raise ValueError(
                f"labels has shape {shape}; expected ({batch},) class ids or ({batch}, "
                f"{n_classes}) one-hot / probability rows"
            )
        if not np.issubdtype(dtype, np.floating):
            raise TypeError(f"one-hot labels must be floating point, got dtype {dtype}")
    else:
        raise ValueError(
            f"labels has shape {shape}; expected ({batch},) class ids or ({batch}, {n_classes}) "
            "one-hot rows"
        )


def _is_concrete(array: Any) -> bool:
    """True for numpy arrays and committed jax arrays (not tracers inside jit)."""
    import jax

    return not isinstance(array, jax.core.Tracer)
