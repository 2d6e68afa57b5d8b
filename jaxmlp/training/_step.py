"""One optimizer step: the loss and its gradients as the options ask, the regularisers, the
update."""

from __future__ import annotations

from typing import cast

import jax
import jax.numpy as jnp
import optax
from jaxtyping import Array, Float, PRNGKeyArray

from jaxmlp import _validation
from jaxmlp.backprop import batch_backprop
from jaxmlp.losses import batch_loss, l2_penalty
from jaxmlp.model import Params
from jaxmlp.per_example import clipped_grad_sum
from jaxmlp.training._options import ModelOptions
from jaxmlp.training._regularizers import (
    augment_images,
    check_square_images,
    clip_max_norm,
    vat_loss_and_grads,
)
from jaxmlp.training._state import TrainState, check_state, step_options


def loss_and_grads(
    options: ModelOptions,
    params: Params,
    x: Float[Array, "batch features"],
    labels: Array,
    *,
    dropout_key: PRNGKeyArray | None = None,
    weights: Array | None = None,
) -> tuple[Array, Params, Array]:
    """``(loss, grads, logits)`` of one batch by the gradient method ``options`` ask for:
    autodiff, the hand-derived backprop, or autodiff of the fast-gradient-sign mix.

    Fast gradient sign (Goodfellow et al. 2015): ``(1 - w) * loss(x) + w * loss(x + eps *
    sign(grad_x loss(x)))`` with ``eps`` = ``options.adversarial_epsilon`` and ``w`` =
    ``options.adversarial_weight``. One pass gives the clean loss's gradients with respect to the
    parameters and the inputs; a second scores the perturbed inputs under the same dropout
    masks. ``logits`` are the clean pass's.
    """
    if options.gradient == "backprop":
        return batch_backprop(options.loss, params, x, labels, key=dropout_key, weights=weights)
    adversarial = bool(options.adversarial_epsilon)
    (loss, logits), grads = jax.value_and_grad(
        batch_loss, argnums=(1, 2) if adversarial else 1, has_aux=True
    )(options.loss, params, x, labels, key=dropout_key, weights=weights)
    if adversarial:
        clean_grads, x_grad = grads
        x_adv = jax.lax.stop_gradient(x + options.adversarial_epsilon * jnp.sign(x_grad))
        (perturbed, _), perturbed_grads = jax.value_and_grad(batch_loss, 1, has_aux=True)(
            options.loss, params, x_adv, labels, key=dropout_key, weights=weights
        )
        a = options.adversarial_weight
        grads = jax.tree.map(lambda c, g: (1 - a) * c + a * g, clean_grads, perturbed_grads)
        loss = (1 - a) * loss + a * perturbed
    return loss, grads, logits


def private_loss_and_grads(
    options: ModelOptions,
    params: Params,
    x: Float[Array, "batch features"],
    labels: Array,
    *,
    dropout_key: PRNGKeyArray | None,
    noise_key: PRNGKeyArray | None,
    weights: Array | None = None,
    lot_size: Array | int | None = None,
) -> tuple[Array, Params, Array]:
    """``(loss, grads, logits)`` of a DP-SGD step: ``(sum_i clip_C(g_i) + N(0, sigma^2 C^2 I))
    / B + l2 W``, with the clipped sum by the options' gradient method (see
    `jaxmlp.per_example.clipped_grad_sum`). ``B`` is ``lot_size`` (Poisson sampling: the
    expected batch size), else the number of (unmasked) examples."""
    # A DP-SGD step's options have a clip norm (that is what clips_gradients means).
    clip_norm = cast(float, options.dp_clip_norm)
    clipped = clipped_grad_sum(
        options.loss,
        params,
        x,
        labels,
        clip_norm=clip_norm,
        method=options.gradient,
        key=dropout_key,
        weights=weights,
    )
    if lot_size is None:
        lot_size = x.shape[0] if weights is None else jnp.maximum(jnp.sum(weights), 1)
    sigma = options.dp_noise_multiplier * clip_norm
    leaves, treedef = jax.tree.flatten(clipped.total)
    if sigma:
        # Nonzero noise: optimizer_step drew noise_key.
        keys = jax.random.split(cast(PRNGKeyArray, noise_key), len(leaves))
        leaves = [
            leaf + sigma * jax.random.normal(k, leaf.shape, leaf.dtype)
            for leaf, k in zip(leaves, keys, strict=True)
        ]
    grads = jax.tree.unflatten(treedef, [leaf / lot_size for leaf in leaves])
    loss = clipped.loss
    l2 = options.l2
    if not _validation.is_static_zero(l2):
        grads = [
            {"w": g["w"] + l2 * p["w"], "b": g["b"]} for g, p in zip(grads, params, strict=True)
        ]
        loss = loss + l2 * l2_penalty(params)
    return loss, grads, clipped.logits


def class_ids(labels: Array) -> Array:
    """Class ids of integer labels or of one-hot / probability rows."""
    return labels if labels.ndim == 1 else jnp.argmax(labels, -1)


def optimizer_step(
    state: TrainState,
    x: Array,
    labels: Array,
    weights: Array | None,
    step_key,
    lot_size: int | None = None,
) -> tuple[TrainState, Array, Array, Array]:
    """One optimizer step on a batch: ``(new state, loss, correct, finite)`` with the batch's
    loss, its number of correct predictions and whether the loss and gradients were finite.
    ``step_key`` (None when the options draw no random numbers) drives augmentation, dropout,
    VAT's random start and DP-SGD's noise; ``weights`` mask the padding of a short last batch
    (or of a Poisson batch, whose DP gradient is divided by ``lot_size``)."""
    options = step_options(state)
    augment_key = dropout_key = None
    if options.needs_key:
        augment_key, dropout_key = jax.random.split(step_key)
    # Below, each use of a key is under an option that makes needs_key true, so it was drawn:
    # the casts say so to the type checker.
    if options.augments:
        x = augment_images(x, cast(PRNGKeyArray, augment_key), options)
    loss_dropout_key = dropout_key if options.uses_dropout else None
    if options.clips_gradients:
        noise_key = (
            jax.random.fold_in(cast(PRNGKeyArray, dropout_key), 2)
            if options.dp_noise_multiplier
            else None
        )
        loss, grads, logits = private_loss_and_grads(
            options,
            state.params,
            x,
            labels,
            dropout_key=loss_dropout_key,
            noise_key=noise_key,
            weights=weights,
            lot_size=lot_size,
        )
    else:
        loss, grads, logits = loss_and_grads(
            options, state.params, x, labels, dropout_key=loss_dropout_key, weights=weights
        )
    if options.vat_epsilon:
        vat, vat_grads = vat_loss_and_grads(
            options,
            state.params,
            x,
            logits,
            key=jax.random.fold_in(cast(PRNGKeyArray, dropout_key), 1),
            dropout_key=loss_dropout_key,
            weights=weights,
        )
        loss = loss + options.vat_weight * vat
        grads = jax.tree.map(lambda g, v: g + options.vat_weight * v, grads, vat_grads)
    # The step's loss goes to the optimizer as ``value`` (what optax.contrib.reduce_on_plateau
    # reads); transformations without extra arguments ignore it.
    optimizer = optax.with_extra_args_support(state.optimizer)
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params, value=loss)
    params = cast(Params, optax.apply_updates(state.params, updates))  # the same structure
    if options.max_norm is not None:
        params = clip_max_norm(params, options.max_norm)
    # Running accuracy from the training forward pass itself (with its dropout), as the
    # PyTorch and flax loops report it: a second, clean forward pass would cost a third more.
    hits = (jnp.argmax(logits, -1) == class_ids(labels)).astype(jnp.float32)
    correct = jnp.sum(hits if weights is None else hits * weights)
    finite = jnp.isfinite(loss) & jnp.isfinite(optax.tree.norm(grads))
    new_state = state.replace(params=params, opt_state=opt_state, step=state.step + 1)
    return new_state, loss, correct, finite


@jax.jit
def _train_step_program(state: TrainState, x: Array, labels: Array):
    key = jax.random.fold_in(jax.random.wrap_key_data(state.key), state.step)
    new_state, loss, correct, finite = optimizer_step(state, x, labels, None, key)
    new_state = jax.tree.map(lambda new, old: jnp.where(finite, new, old), new_state, state)
    return new_state, {"loss": loss, "correct": correct, "finite": finite}


def train_step(
    state: TrainState, x: Float[Array, "batch features"], labels: Array
) -> tuple[TrainState, dict[str, Array]]:
    """One jitted optimizer step on one batch.

    Returns ``(state, metrics)`` with ``metrics = {"loss", "correct", "finite"}``; if the loss
    or the gradients are not finite the returned state is the input state unchanged. The input
    state is not donated (it stays valid). Works inside the caller's ``jit``, ``vmap`` and
    ``lax.scan`` (the argument checks run at trace time).

    Examples:
        >>> import jax, jax.numpy as jnp, jaxmlp
        >>> sgd = jaxmlp.optimizer("sgd", 0.1)
        >>> state = jaxmlp.create_train_state(jax.random.key(0), (4, 3, 2), sgd)
        >>> state, metrics = jaxmlp.train_step(state, jnp.ones((5, 4)), jnp.array([0, 1, 0, 1, 1]))
        >>> int(state.step), sorted(metrics)
        (1, ['correct', 'finite', 'loss'])
    """
    check_state(state)
    if not _validation.check_inputs(state.params, x):
        raise ValueError(
            f"x has shape {tuple(jnp.shape(x))}; train_step needs a batch (batch, features)"
        )
    x, labels = jnp.asarray(x), jnp.asarray(labels)
    _validation.check_labels(labels, x.shape[0], jnp.shape(state.params[-1]["w"])[1])
    check_square_images(state.options, x.shape[1])
    return _train_step_program(state, x, labels)
