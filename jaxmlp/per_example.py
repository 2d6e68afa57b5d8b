"""Per-example gradients, by autodiff and by hand, and the clipped sum that DP-SGD needs.

For a dense layer z = a @ W + b, the gradient of example i's own loss is the outer product of
its layer input and its delta (see [`jaxmlp.backprop`][] for the deltas):

    dW_i = a_i delta_i^T   (n_in, n_out)        db_i = delta_i
    ||dW_i||_F^2 = ||a_i||^2 ||delta_i||^2       (Goodfellow 2015)

so each example's global gradient norm over all weights and biases is

    ||g_i||^2 = sum over layers of (||a_i||^2 + 1) ||delta_i||^2

without ever forming dW_i, and any per-example weighted sum of gradients is one more product
with the same deltas, sum_i c_i dW_i = a^T (c * delta) ("book-keeping", Bu et al. 2022; ghost
clipping, Li et al. 2021). ``method="autodiff"`` instead differentiates each example with
``jax.vmap(jax.grad(...))``, which materialises a (batch, n_in, n_out) gradient per layer.

The gradients here are of the *data* loss: the L2 term belongs to the batch (it is the same for
every example and is not clipped), so it is left out. Dropout uses the masks that
[`jaxmlp.loss`][] draws with the same key: row i of each batch mask is example i's.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Int, PRNGKeyArray

from jaxmlp import _validation
from jaxmlp.backprop import backward_pass, output_delta
from jaxmlp.losses import DATA_LOSSES, LossOptions, batch_masks, check_loss_arguments
from jaxmlp.model import Params, forward_pass

__all__ = [
    "METHODS",
    "per_example_grad_norms",
    "per_example_grads",
]

METHODS = ("autodiff", "backprop")
"""How per-example gradients are computed: ``jax.vmap(jax.grad)``, or by hand from the deltas."""


def _checked(params, x, labels, key, method, **loss_options):
    """The boundary of the public functions below: ``(options, x, labels, masks)`` with ``x`` a
    batch (one example becomes a batch of one) and the dropout masks ``key`` draws for it."""
    options = LossOptions(**loss_options)
    _validation.check_choice("method", method, METHODS)
    x, labels, _, _ = check_loss_arguments(params, x, labels, key, None)
    return options, x, labels, batch_masks(options, params, x, key)


def _layer_terms(options: LossOptions, params, x, labels, masks):
    """(layer inputs, deltas of each example's own loss, logits) of one forward and one
    backward pass."""
    layer_inputs, pre_activations = forward_pass(params, x, masks, activation=options.activation)
    logits = pre_activations[-1]
    delta = output_delta(logits, labels, options.output)
    deltas = backward_pass(params, pre_activations, masks, delta, activation=options.activation)
    return layer_inputs, deltas, logits


def _autodiff_grads(options: LossOptions, params, x, labels, masks):
    """(per-example gradients, logits) by ``jax.vmap(jax.grad)``, each example under its own row
    of the batch's dropout masks."""

    def one(x_i, y_i, masks_i):
        def data_loss(p):
            batch_masks = [None if m is None else m[None] for m in masks_i]
            _, pre = forward_pass(p, x_i[None], batch_masks, activation=options.activation)
            return DATA_LOSSES[options.output](pre[-1], y_i[None]), pre[-1][0]

        return jax.grad(data_loss, has_aux=True)(params)

    return jax.vmap(one)(x, labels, masks)


def per_example_grads(
    params: Params,
    x: Float[Array, "batch features"],
    labels: Int[Array, " batch"] | Float[Array, "batch classes"],
    *,
    method: str = "backprop",
    activation: str = "relu",
    output: str = "softmax",
    dropout_rate: float = 0.0,
    input_dropout_rate: float = 0.0,
    key: PRNGKeyArray | None = None,
) -> Params:
    """Each example's gradient of its own data loss: a pytree shaped like ``params`` with a
    leading batch axis, ``{"w": (batch, n_in, n_out), "b": (batch, n_out)}`` per layer.

    ``method="backprop"`` forms the outer products a_i delta_i^T from one forward and one
    backward pass; ``method="autodiff"`` is ``jax.vmap(jax.grad(...))`` over the examples. They
    agree to rounding, and their mean over the batch is ``jax.grad(jaxmlp.loss)`` with
    ``l2=0`` (the L2 term belongs to the batch, not to an example). Options as
    [`jaxmlp.loss`][]; with ``key`` the dropout masks are those ``loss`` draws with that key.
    Works inside the caller's ``jit`` and ``vmap``.

    Examples:
        >>> import jax, jax.numpy as jnp, jaxmlp
        >>> params = jaxmlp.init_mlp(jax.random.key(0), (4, 3, 2))
        >>> grads = jaxmlp.per_example_grads(params, jnp.ones((5, 4)), jnp.array([0, 1, 0, 1, 1]))
        >>> grads[0]["w"].shape  # one (4, 3) gradient per example
        (5, 4, 3)
    """
    options, x, labels, masks = _checked(
        params,
        x,
        labels,
        key,
        method,
        activation=activation,
        output=output,
        dropout_rate=dropout_rate,
        input_dropout_rate=input_dropout_rate,
    )
    if method == "autodiff":
        return _autodiff_grads(options, params, x, labels, masks)[0]
    layer_inputs, deltas, _ = _layer_terms(options, params, x, labels, masks)
    return [
        {"w": jnp.einsum("bi,bo->bio", a, d), "b": d}
        for a, d in zip(layer_inputs, deltas, strict=True)
    ]


def _norms_from_terms(layer_inputs, deltas) -> Array:
    squares = sum(
        (jnp.sum(a * a, axis=-1) + 1) * jnp.sum(d * d, axis=-1)
        for a, d in zip(layer_inputs, deltas, strict=True)
    )
    return jnp.sqrt(squares)


def _norms_of(grads: Params) -> Array:
    leaves = jax.tree.leaves(grads)
    batch = leaves[0].shape[0]
    return jnp.sqrt(sum(jnp.sum(leaf.reshape(batch, -1) ** 2, axis=-1) for leaf in leaves))


def per_example_grad_norms(
    params: Params,
    x: Float[Array, "batch features"],
    labels: Int[Array, " batch"] | Float[Array, "batch classes"],
    *,
    method: str = "backprop",
    activation: str = "relu",
    output: str = "softmax",
    dropout_rate: float = 0.0,
    input_dropout_rate: float = 0.0,
    key: PRNGKeyArray | None = None,
) -> Float[Array, " batch"]:
    """The global L2 norm of each example's gradient over all weights and biases, (batch,).

    With ``method="backprop"`` it is sqrt(sum_l (||a_l,i||^2 + 1) ||delta_l,i||^2), from the
    layer inputs and deltas alone: no per-example gradient is materialised. With
    ``method="autodiff"`` it is the norm of [`per_example_grads`][jaxmlp.per_example_grads].
    """
    options, x, labels, masks = _checked(
        params,
        x,
        labels,
        key,
        method,
        activation=activation,
        output=output,
        dropout_rate=dropout_rate,
        input_dropout_rate=input_dropout_rate,
    )
    if method == "autodiff":
        return _norms_of(_autodiff_grads(options, params, x, labels, masks)[0])
    layer_inputs, deltas, _ = _layer_terms(options, params, x, labels, masks)
    return _norms_from_terms(layer_inputs, deltas)


def clip_factors(norms: Array, clip_norm: float) -> Array:
    """min(1, C / ||g_i||): the factor that scales each gradient to norm at most C."""
    return jnp.minimum(1.0, clip_norm / jnp.maximum(norms, jnp.finfo(norms.dtype).tiny))


class ClippedSum(NamedTuple):
    """What `clipped_grad_sum` returns: the clipped sum and what it was computed from."""

    total: Params
    """sum_i w_i clip_C(g_i), shaped like the parameters."""
    norms: Array
    """(batch,) each example's unclipped global gradient norm ||g_i||."""
    loss: Array
    """The (weighted) mean data loss of the batch, without the L2 term."""
    logits: Array
    """(batch, classes) the logits of the forward pass."""


def clipped_grad_sum(
    options: LossOptions,
    params: Params,
    x: Array,
    labels: Array,
    *,
    clip_norm: float,
    method: str = "backprop",
    key: PRNGKeyArray | None = None,
    weights: Array | None = None,
) -> ClippedSum:
    """``sum_i w_i clip_C(g_i)`` with ``clip_C(g) = g * min(1, C / ||g||)`` over the global norm
    of each example's data-loss gradient, over a batch ``x`` (batch, n_in), with what it was
    computed from. ``weights`` (0 or 1) drop padding examples; ``options.l2`` is not used (the
    L2 term belongs to the batch). The DP-SGD step of a train state calls this with its checked
    options; it checks nothing.

    ``method="backprop"``: one forward and one backward pass give the deltas, their norms give
    the factors c_i, and the sum is a^T (c * delta) per layer (the deltas reweighted; no
    per-example gradient is materialised). ``method="autodiff"`` clips and sums
    ``jax.vmap(jax.grad)``'s per-example gradients. The two agree to rounding.
    """
    masks = batch_masks(options, params, x, key)
    if weights is not None:
        weights = weights.astype(x.dtype)
    if method == "autodiff":
        grads, logits = _autodiff_grads(options, params, x, labels, masks)
        norms = _norms_of(grads)
        factors = clip_factors(norms, clip_norm)
        if weights is not None:
            factors = factors * weights
        total = jax.tree.map(lambda g: jnp.tensordot(factors, g, axes=1), grads)
    else:
        layer_inputs, deltas, logits = _layer_terms(options, params, x, labels, masks)
        norms = _norms_from_terms(layer_inputs, deltas)
        factors = clip_factors(norms, clip_norm)
        if weights is not None:
            factors = factors * weights
        total = [
            {"w": a.T @ (factors[:, None] * d), "b": factors @ d}
            for a, d in zip(layer_inputs, deltas, strict=True)
        ]
    loss = DATA_LOSSES[options.output](logits, labels, weights=weights)
    return ClippedSum(total, norms, loss, logits)
