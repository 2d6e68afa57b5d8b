"""The MLP itself: parameter initialisation and the forward pass, as pure functions.

Parameters are a list with one ``{"w": (n_in, n_out), "b": (n_out,)}`` dict per layer, so
``x @ w + b`` maps a (batch, n_in) block of rows to (batch, n_out). Nothing is hidden in a class.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

from jaxmlp import _validation

__all__ = [
    "ACTIVATIONS",
    "INITS",
    "Activation",
    "Params",
    "forward",
    "init_mlp",
    "layer_sizes_of",
    "parameter_count",
]

Params = list[dict[str, Array]]


class Activation(NamedTuple):
    """A hidden-layer nonlinearity phi and its derivative phi'(z), written out for backprop."""

    function: Callable[[Array], Array]
    derivative: Callable[[Array], Array]


def _sigmoid_derivative(z: Array) -> Array:
    s = jax.nn.sigmoid(z)
    return s * (1 - s)


ACTIVATIONS: dict[str, Activation] = {
    "relu": Activation(jax.nn.relu, lambda z: (z > 0).astype(z.dtype)),
    "sigmoid": Activation(jax.nn.sigmoid, _sigmoid_derivative),
    "tanh": Activation(jnp.tanh, lambda z: 1 - jnp.tanh(z) ** 2),
    "identity": Activation(lambda z: z, jnp.ones_like),
}
"""Hidden activations by name. ``identity`` makes a linear MLP (the PyTorch book's model)."""

INITS = ("he", "glorot", "normal")


def init_mlp(
    key: PRNGKeyArray,
    layer_sizes: Sequence[int],
    *,
    init: str = "he",
    init_scale: float = 0.01,
    dtype: Any = jnp.float32,
) -> Params:
    """Initialise the parameters of an MLP with the given layer sizes.

    Args:
        key: a ``jax.random`` key (``jax.random.key(seed)``); the same key gives the same
            parameters.
        layer_sizes: ``(n_inputs, hidden..., n_outputs)``, e.g. ``(784, 256, 10)``.
        init: ``"he"``: w ~ N(0, 2 / n_in), b = 0 (for ReLU);
            ``"glorot"``: w ~ U(-a, a) with a = sqrt(6 / (n_in + n_out)), b = 0 (for sigmoid /
            tanh); ``"normal"``: w ~ N(0, init_scale**2) and b ~ N(0, init_scale**2) (the MXNet
            text draws every weight and bias this way; set biases to zero afterwards for the
            other texts).
        init_scale: standard deviation for ``init="normal"``.
        dtype: parameter dtype (``jnp.float64`` needs ``jax_enable_x64``).

    Returns:
        A list with one ``{"w": (n_in, n_out), "b": (n_out,)}`` dict per layer.

    Examples:
        >>> import jax, jaxmlp
        >>> params = jaxmlp.init_mlp(jax.random.key(0), (4, 3, 2))
        >>> [(layer["w"].shape, layer["b"].shape) for layer in params]
        [((4, 3), (3,)), ((3, 2), (2,))]
    """
    _validation.check_key("key", key)
    sizes = _validation.check_layer_sizes(layer_sizes)
    _validation.check_choice("init", init, INITS)
    if init == "normal":
        _validation.check_positive("init_scale", init_scale)
    params = []
    for layer_key, (n_in, n_out) in zip(
        jax.random.split(key, len(sizes) - 1), zip(sizes[:-1], sizes[1:], strict=True), strict=True
    ):
        w_key, b_key = jax.random.split(layer_key)
        if init == "he":
            w = jax.random.normal(w_key, (n_in, n_out), dtype) * jnp.sqrt(2.0 / n_in).astype(dtype)
            b = jnp.zeros((n_out,), dtype)
        elif init == "glorot":
            limit = (6.0 / (n_in + n_out)) ** 0.5
            w = jax.random.uniform(w_key, (n_in, n_out), dtype, -limit, limit)
            b = jnp.zeros((n_out,), dtype)
        else:
            w = init_scale * jax.random.normal(w_key, (n_in, n_out), dtype)
            b = init_scale * jax.random.normal(b_key, (n_out,), dtype)
        params.append({"w": w, "b": b})
    return params


def layer_sizes_of(params: Sequence[Mapping[str, Any]]) -> tuple[int, ...]:
    """The ``layer_sizes`` a parameter list (of JAX or NumPy arrays) was built with.

    Examples:
        >>> import jax, jaxmlp
        >>> jaxmlp.layer_sizes_of(jaxmlp.init_mlp(jax.random.key(0), (4, 3, 2)))
        (4, 3, 2)
    """
    return (params[0]["w"].shape[0], *(layer["w"].shape[1] for layer in params))


def parameter_count(params_or_sizes: Params | Sequence[int]) -> int:
    """Number of scalars in the model: sum over layers of n_in * n_out + n_out.

    Examples:
        >>> import jaxmlp
        >>> jaxmlp.parameter_count((4, 3, 2))  # 4 * 3 + 3 + 3 * 2 + 2
        23
    """
    if params_or_sizes and isinstance(params_or_sizes[0], dict):
        sizes = layer_sizes_of(params_or_sizes)  # type: ignore[arg-type]
    else:
        sizes = _validation.check_layer_sizes(params_or_sizes)  # type: ignore[arg-type]
    return sum(n_in * n_out + n_out for n_in, n_out in zip(sizes[:-1], sizes[1:], strict=True))


class DropoutRate(NamedTuple):
    """A dropout rate held as arrays (a traced hyperparameter, one per stacked model): the
    ``rate`` and its keep probability ``keep`` = 1 - rate, rounded once from double precision,
    as the compiled constant of a plain-number rate is; so a traced rate draws exactly the masks
    of the same number given statically."""

    rate: Array
    keep: Array

    @classmethod
    def of(cls, rate: float, dtype: Any = jnp.float32) -> DropoutRate:
        return cls(jnp.asarray(rate, dtype), jnp.asarray(1.0 - float(rate), dtype))


def keep_probability(rate: float | DropoutRate):
    """1 - rate: a Python number for a number, the carried ``keep`` of a `DropoutRate`."""
    return rate.keep if isinstance(rate, DropoutRate) else 1.0 - rate


def dropout_masks(
    key: PRNGKeyArray | None,
    shapes: Sequence[tuple[int, ...]],
    rates: Sequence[float],
    dtype: Any,
) -> list[Array | None]:
    """Inverted-dropout masks, one per shape: kept units are 1 / (1 - rate), dropped ones 0.

    ``None`` where the rate is 0 or no key is given (evaluation mode). The forward pass and the
    hand-derived backprop both draw their masks here, so the same key gives the same masks.
    """
    if key is None:
        return [None] * len(shapes)
    keys = jax.random.split(key, len(shapes))
    masks: list[Array | None] = []
    for mask_key, shape, rate in zip(keys, shapes, rates, strict=True):
        if _validation.is_static_zero(rate):
            masks.append(None)
            continue
        p_keep = keep_probability(rate)
        keep = jax.random.bernoulli(mask_key, p_keep, shape)
        masks.append(keep.astype(dtype) / jnp.asarray(p_keep, dtype))
    return masks


def layer_masks(
    params: Params,
    batch_size: int,
    *,
    dtype: Any,
    key: PRNGKeyArray | None,
    dropout_rate: float = 0.0,
    input_dropout_rate: float = 0.0,
) -> list[Array | None]:
    """The dropout masks of one forward pass: one for the input, then one per hidden layer's
    output (the output layer is never masked), each of shape (batch_size, units).

    [`forward`][jaxmlp.forward], [`jaxmlp.loss`][] and [`jaxmlp.backprop`][jaxmlp.backprop.backprop]
    all draw their masks here, so the same key gives the same masks in each.
    """
    shapes = [(batch_size, params[0]["w"].shape[0])] + [
        (batch_size, p["w"].shape[1]) for p in params[:-1]
    ]
    rates = [input_dropout_rate] + [dropout_rate] * (len(params) - 1)
    return dropout_masks(key, shapes, rates, dtype)


def forward(
    params: Params,
    x: Float[Array, "*batch features"],
    *,
    activation: str = "relu",
    dropout_rate: float = 0.0,
    input_dropout_rate: float = 0.0,
    key: PRNGKeyArray | None = None,
) -> Float[Array, "*batch classes"]:
    """Logits of the MLP: hidden layers ``a = phi(a @ w + b)``, then a linear output layer.

    Works inside the caller's ``jax.jit``, ``jax.vmap`` and ``jax.grad``; the argument checks
    run in Python (at trace time under a transformation).

    Args:
        params: as returned by [`init_mlp`][jaxmlp.init_mlp].
        x: inputs of shape (batch, n_in), or one example of shape (n_in,); floating point, in the
            parameters' dtype.
        activation: hidden nonlinearity, one of [`ACTIVATIONS`][jaxmlp.ACTIVATIONS].
        dropout_rate: fraction of each hidden layer's units dropped (inverted dropout: the kept
            ones are scaled by 1 / (1 - rate)). Applied only when ``key`` is given.
        input_dropout_rate: the same for the input pixels (Srivastava et al. use 0.2).
        key: PRNG key for the dropout masks; ``None`` means evaluation mode (no dropout).

    Returns:
        Logits of shape (batch, n_out), or (n_out,) for one example; apply
        [`jaxmlp.softmax`][] for probabilities.

    Examples:
        >>> import jax, jax.numpy as jnp, jaxmlp
        >>> params = jaxmlp.init_mlp(jax.random.key(0), (4, 3, 2))
        >>> jaxmlp.forward(params, jnp.ones((5, 4))).shape
        (5, 2)
    """
    _validation.check_params(params)
    batched = _validation.check_inputs(params, x)
    _validation.check_choice("activation", activation, ACTIVATIONS)
    _validation.check_rate("dropout_rate", dropout_rate)
    _validation.check_rate("input_dropout_rate", input_dropout_rate)
    _validation.check_key("key", key, optional=True)
    x = jnp.asarray(x)
    if not batched:
        return forward(
            params,
            x[None],
            activation=activation,
            dropout_rate=dropout_rate,
            input_dropout_rate=input_dropout_rate,
            key=key,
        )[0]
    masks = layer_masks(
        params,
        x.shape[0],
        dtype=x.dtype,
        key=key,
        dropout_rate=dropout_rate,
        input_dropout_rate=input_dropout_rate,
    )
    _, pre_activations = forward_pass(params, x, masks, activation=activation)
    return pre_activations[-1]


def forward_pass(
    params: Params, x: Array, masks: Sequence[Array | None], *, activation: str
) -> tuple[list[Array], list[Array]]:
    """The forward pass, keeping what the backward pass needs: each layer's (masked) input
    a_{l-1} (batch, n_in) and pre-activation z_l = a_{l-1} @ W_l + b_l (batch, n_out), where
    a_l = phi(z_l) for the hidden layers and the last z is the logits. ``masks`` as
    `layer_masks` draws them (None entries: no dropout there); no argument checks.
    """
    phi = ACTIVATIONS[activation].function
    layer_inputs, pre_activations = [], []
    a = x
    for index, layer in enumerate(params):
        mask = masks[index]
        if mask is not None:
            a = a * mask
        layer_inputs.append(a)
        z = a @ layer["w"] + layer["b"][None, :]
        pre_activations.append(z)
        if index < len(params) - 1:
            a = phi(z)
    return layer_inputs, pre_activations
