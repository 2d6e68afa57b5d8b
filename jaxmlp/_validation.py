"""Checks run at the library boundary, in Python, before anything is compiled.

Every error names the argument, what it got and what was expected, so that a mistake is fixed
from the message alone. Checks of shapes and dtypes always run: under ``jax.jit`` or
``jax.vmap`` they run once, at trace time, and cost nothing afterwards. Checks of *values*
(finite pixels, labels in range, buffers still alive) need concrete arrays and are skipped for
tracers, so every public function also works inside the caller's own transformations.
"""

from __future__ import annotations

import math
import warnings
import weakref
from collections.abc import Iterable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.core import Tracer


def is_traced(value: Any) -> bool:
    """True for an abstract value inside a ``jit`` / ``vmap`` / ``grad`` trace."""
    return isinstance(value, Tracer)


def is_static_zero(value: Any) -> bool:
    """True for a hyperparameter that is a plain number equal to 0, so that the term it scales
    can be left out of the compiled program. An array (a traced value: one model's own in a
    stack, see [`jaxmlp.TrainState.hyperparams`][]) is never left out."""
    return not isinstance(value, (jax.Array, np.ndarray)) and value == 0


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


def _number(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, float, np.floating, np.integer))


def _hyperparameter(value: Any) -> tuple[bool, Any]:
    """``(checkable, value)`` of a hyperparameter: a traced value (one stacked model's own, see
    [`jaxmlp.TrainState.hyperparams`][]) is not checkable here, it was checked where it was
    made; a concrete 0-d array is checked as its number."""
    if is_traced(value) or type(value).__name__ == "DropoutRate":  # jaxmlp.model.DropoutRate
        return False, value
    if isinstance(value, (jax.Array, np.ndarray)) and np.ndim(value) == 0:
        return True, np.asarray(value).item()
    return True, value


def check_rate(argument: str, value: Any) -> float:
    """A probability in [0, 1), such as a dropout rate (see `_hyperparameter`)."""
    checkable, value = _hyperparameter(value)
    if not checkable:
        return value
    if not _number(value):
        raise TypeError(f"{argument} must be a number in [0, 1), got {value!r}")
    if not (0.0 <= float(value) < 1.0):
        raise ValueError(f"{argument}={value!r} is outside [0, 1); expected 0 <= {argument} < 1")
    return float(value)


def check_non_negative(argument: str, value: Any) -> float:
    """A finite number >= 0, such as an L2 coefficient (see `_hyperparameter`)."""
    checkable, value = _hyperparameter(value)
    if not checkable:
        return value
    if not _number(value):
        raise TypeError(f"{argument} must be a finite number >= 0, got {value!r}")
    if not math.isfinite(float(value)) or float(value) < 0:
        raise ValueError(f"{argument}={value!r} is invalid; expected a finite number >= 0")
    return float(value)


def check_positive(argument: str, value: Any) -> float:
    """A finite number > 0, such as a learning rate or a step size (see
    `_hyperparameter`)."""
    checkable, value = _hyperparameter(value)
    if not checkable:
        return value
    if not _number(value):
        raise TypeError(f"{argument} must be a finite number > 0, got {value!r}")
    if not math.isfinite(float(value)) or float(value) <= 0:
        raise ValueError(f"{argument}={value!r} is invalid; expected a finite number > 0")
    return float(value)


def check_positive_int(argument: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
        raise ValueError(f"{argument}={value!r} is invalid; expected a positive integer")
    return int(value)


def _describe(value: Any) -> str:
    if isinstance(value, np.random.Generator):
        return "a numpy Generator"
    dtype = getattr(value, "dtype", None)
    if dtype is not None:
        return f"an array of dtype {dtype} and shape {tuple(np.shape(value))}"
    return f"{type(value).__name__} {value!r:.40}"


def check_key(argument: str, key: Any, *, optional: bool = False) -> None:
    """``key`` must be one JAX PRNG key: ``jax.random.key(seed)`` (a typed key of shape ()) or
    the legacy raw ``jax.random.PRNGKey(seed)`` (uint32 of shape (2,)); ``None`` if optional."""
    if key is None and optional:
        return
    dtype = getattr(key, "dtype", None)
    shape = tuple(np.shape(key)) if dtype is not None and key is not None else None
    if dtype is not None and jnp.issubdtype(dtype, jax.dtypes.prng_key):
        if shape == ():
            return
    elif dtype is not None and np.dtype(dtype) == np.uint32 and shape == (2,):
        return
    hint = " or None" if optional else ""
    raise TypeError(
        f"{argument} must be a JAX PRNG key{hint}, got {_describe(key)}; create one with "
        f"jax.random.key(seed) (and split it with jax.random.split for several uses)"
    )


def check_params(params: Any) -> None:
    """``params`` must be a non-empty list of ``{"w": (n_in, n_out), "b": (n_out,)}`` layers
    whose buffers are alive."""
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
    check_alive(params, "params")


def check_alive(tree: Any, argument: str) -> None:
    """Refuse a pytree whose arrays were donated to a jitted call and deleted, with a message
    that says what to use instead (XLA's own says only that a buffer was deleted)."""
    for path, leaf in jax.tree_util.tree_leaves_with_path(tree):
        if isinstance(leaf, jax.Array) and not is_traced(leaf) and leaf.is_deleted():
            raise ValueError(
                f"{argument}{jax.tree_util.keystr(path)} was donated to an earlier jitted call "
                "and its buffer is deleted; use the value that call returned (for example "
                "`state, metrics = train_epoch(state, ...)`), or pass a copy "
                "(jax.tree.map(jnp.copy, tree)) where you donate"
            )


def parameter_dtype(params: Any) -> np.dtype:
    return np.dtype(params[0]["w"].dtype)


def check_inputs(params: Any, x: Any, argument: str = "x") -> bool:
    """``x`` must be floating, of shape (batch, n_in) or one example (n_in,), in the dtype of
    the parameters. Returns whether ``x`` is a batch."""
    n_in = np.shape(params[0]["w"])[0]
    shape = tuple(np.shape(x))
    if len(shape) not in (1, 2) or shape[-1] != n_in:
        raise ValueError(
            f"{argument} has shape {shape}; expected (batch, {n_in}), or ({n_in},) for one "
            f"example: the model's first layer has {n_in} inputs (flatten images to rows first)"
        )
    dtype = getattr(x, "dtype", None)
    if dtype is None:
        dtype = np.asarray(x).dtype
    if not np.issubdtype(dtype, np.floating):
        raise TypeError(
            f"{argument} has dtype {dtype}; expected floating-point inputs (for uint8 pixels, "
            "divide by 255 or use jaxmlp.data's normalization first)"
        )
    check_same_dtype(params, dtype, argument)
    return len(shape) == 2


def check_same_dtype(params: Any, dtype: Any, argument: str) -> None:
    """Refuse data of another float width than the parameters (JAX would silently promote)."""
    effective = np.dtype(jax.dtypes.canonicalize_dtype(dtype))
    wanted = parameter_dtype(params)
    if effective != wanted:
        raise TypeError(
            f"{argument} has dtype {effective} but the parameters are {wanted}; JAX would "
            f"silently compute in the wider type. Cast one to the other, e.g. "
            f"{argument}.astype('{wanted}'), or create the parameters with dtype={effective}"
        )


def check_labels(labels: Any, batch: int | None, n_classes: int) -> None:
    """Integer class ids of shape (batch,) in [0, n_classes), or (batch, n_classes) rows;
    ``batch=None`` means one example: a class id of shape () or one row (n_classes,)."""
    shape = tuple(np.shape(labels))
    dtype = getattr(labels, "dtype", None)
    if dtype is None:
        labels = np.asarray(labels)
        dtype = labels.dtype
    outputs = f"the model's last layer has {n_classes} outputs"
    ids_shape, rows_shape = ((), (n_classes,)) if batch is None else ((batch,), (batch, n_classes))
    what = "one example" if batch is None else f"{batch} rows of x"
    if len(shape) == len(ids_shape):
        if not np.issubdtype(dtype, np.integer):
            raise TypeError(
                f"labels of shape {shape} must be integer class ids, got dtype {dtype}; "
                f"expected int32 ids in [0, {n_classes}) or one-hot rows of shape "
                f"{rows_shape} ({outputs})"
            )
        if shape != ids_shape:
            raise ValueError(f"labels has {shape[0]} entries but x has {batch} rows")
        if np.size(labels) and not is_traced(labels):
            # On the host: under a trace, jnp reductions of even concrete arrays are staged.
            values = np.asarray(labels)
            low, high = int(values.min()), int(values.max())
            if low < 0 or high >= n_classes:
                raise ValueError(
                    f"labels range over [{low}, {high}]; expected class ids in [0, {n_classes}) "
                    f"({outputs})"
                )
    elif len(shape) == len(rows_shape):
        if shape != rows_shape:
            raise ValueError(
                f"labels has shape {shape}; expected {ids_shape} class ids or {rows_shape} "
                f"one-hot / probability rows for {what} ({outputs})"
            )
        if not np.issubdtype(dtype, np.floating):
            raise TypeError(f"one-hot labels must be floating point, got dtype {dtype}")
    else:
        raise ValueError(
            f"labels has shape {shape}; expected {ids_shape} class ids or {rows_shape} one-hot "
            f"rows for {what} ({outputs})"
        )


def check_dataset(params: Any, images: Any, labels: Any, images_name: str, labels_name: str):
    """Validate a whole dataset (n, features) / (n,) before any compile; return it as JAX
    arrays (labels of class ids as int32). Values are checked where the arrays are concrete."""
    import jax.numpy as jnp

    if isinstance(images, (list, tuple)) or isinstance(labels, (list, tuple)):
        images, labels = np.asarray(images), np.asarray(labels)
    shape = tuple(np.shape(images))
    n_in = np.shape(params[0]["w"])[0]
    if len(shape) != 2 or shape[0] == 0:
        raise ValueError(
            f"{images_name} has shape {shape}; expected a non-empty (n, {n_in}) array of "
            "flattened images"
        )
    if getattr(labels, "dtype", np.dtype("O")).kind in "USO":
        raise TypeError(
            f"{labels_name} has dtype {getattr(labels, 'dtype', type(labels).__name__)}; "
            "expected integer class ids (int32)"
        )
    check_inputs(params, images, images_name)
    check_labels(labels, shape[0], np.shape(params[-1]["w"])[1])
    check_alive((images, labels), f"({images_name}, {labels_name})")
    if not is_traced(images) and not all_finite(images):
        if isinstance(images, np.ndarray):
            bad = int(np.size(images) - np.count_nonzero(np.isfinite(images)))
            raise ValueError(
                f"{images_name} contains {bad} NaN or infinite values; expected finite pixel values"
            )
        raise ValueError(f"{images_name} contains NaN or infinite values; expected finite values")
    images = jnp.asarray(images)
    labels = jnp.asarray(labels)
    if labels.ndim == 1:
        labels = labels.astype(jnp.int32)
    return images, labels


_FINITE_ARRAYS: dict[int, bool] = {}
"""Ids of JAX arrays already found finite. A JAX array never changes, so an epoch loop that
passes the same dataset every epoch pays for the check once (35 ms for MNIST's training set on
two CPU cores, 6 % of a small model's epoch); an entry leaves with its array."""


def all_finite(array: Any) -> bool:
    """Whether every value of a concrete array is finite."""
    if isinstance(array, np.ndarray):
        # min and max propagate NaN and show infinities, without an array of booleans.
        return bool(np.isfinite(array.min()) and np.isfinite(array.max()))
    key = id(array)
    if key in _FINITE_ARRAYS:
        return True
    import jax.numpy as jnp

    finite = bool(jnp.all(jnp.isfinite(array)))
    if finite and isinstance(array, jax.Array):
        _FINITE_ARRAYS[key] = True
        weakref.finalize(array, _FINITE_ARRAYS.pop, key, None)
    return finite


RAW_PIXEL_SAMPLE = 1024
"""Rows of a training set looked at for the raw-pixel warning (a sample keeps it O(1))."""


def warn_if_raw_pixels(images: Any, argument: str) -> None:
    """Warn when float training images look like unscaled 0..255 pixels: whole numbers, some
    above 1, none outside [0, 255] (in the first rows). Such inputs saturate the first layer and
    train far worse (a 784-256-10 ReLU MLP on MNIST stayed near chance)."""
    if is_traced(images):
        return
    sample = np.asarray(images[:RAW_PIXEL_SAMPLE])
    if not np.issubdtype(sample.dtype, np.floating) or sample.size == 0:
        return
    high, low = float(sample.max()), float(sample.min())
    if high > 1.0 and low >= 0.0 and high <= 255.0 and np.array_equal(sample, np.round(sample)):
        warnings.warn(
            f"{argument} looks like raw 0-255 pixel values (whole numbers up to {high:g}); "
            "scale them first, e.g. x / 255 or jaxmlp.data.load(..., normalize='unit'): "
            "unscaled pixels make training fail or crawl",
            UserWarning,
            stacklevel=3,
        )
