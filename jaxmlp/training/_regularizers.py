"""Regularisers applied inside the compiled step: random image transformations, max-norm, and
virtual adversarial training (the fast gradient sign is a gradient method of ``_step``)."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

from jaxmlp.losses import batch_masks, log_softmax, weighted_mean
from jaxmlp.model import Params, forward_pass
from jaxmlp.training._options import ModelOptions

# --------------------------------------------------------------------------------------------
# Augmentation


def shift_images(
    images: Float[Array, "batch features"], key: PRNGKeyArray, max_shift: int
) -> Float[Array, "batch features"]:
    """Translate each flattened square image by a random whole number of pixels in
    [-max_shift, max_shift] along each axis, filling with the edge pixels."""
    batch, features = images.shape
    side = math.isqrt(features)
    squares = images.reshape(batch, side, side)
    padded = jnp.pad(squares, ((0, 0), (max_shift, max_shift), (max_shift, max_shift)), mode="edge")
    offsets = jax.random.randint(key, (batch, 2), 0, 2 * max_shift + 1)

    def crop(image, offset):
        return jax.lax.dynamic_slice(image, (offset[0], offset[1]), (side, side))

    return jax.vmap(crop)(padded, offsets).reshape(batch, features)


def affine_images(
    images: Float[Array, "batch features"],
    key: PRNGKeyArray,
    max_shift: int,
    max_rotate: float,
    max_scale: float,
) -> Float[Array, "batch features"]:
    """Rotate (by up to ``max_rotate`` degrees), zoom (by a factor in [1 - max_scale,
    1 + max_scale]) and shift (by up to ``max_shift`` whole pixels) each flattened square image
    at random about its centre, resampled bilinearly with edge fill."""
    batch, features = images.shape
    side = math.isqrt(features)
    k_angle, k_scale, k_shift = jax.random.split(key, 3)
    angle = jnp.deg2rad(
        jax.random.uniform(k_angle, (batch,), minval=-max_rotate, maxval=max_rotate)
    )
    scale = jax.random.uniform(k_scale, (batch,), minval=1 - max_scale, maxval=1 + max_scale)
    if max_shift:
        shift = jax.random.randint(k_shift, (batch, 2), -max_shift, max_shift + 1)
    else:
        shift = jnp.zeros((batch, 2), jnp.int32)
    centre = (side - 1) / 2
    rows, cols = jnp.meshgrid(jnp.arange(side), jnp.arange(side), indexing="ij")

    def warp(image, angle, scale, shift):
        # Output pixel p reads the input at centre + R(-angle) (p - centre - shift) / scale.
        r = rows - centre - shift[0]
        c = cols - centre - shift[1]
        cos, sin = jnp.cos(angle), jnp.sin(angle)
        source = [(cos * r + sin * c) / scale + centre, (-sin * r + cos * c) / scale + centre]
        return jax.scipy.ndimage.map_coordinates(image, source, order=1, mode="nearest")

    squares = images.reshape(batch, side, side)
    return jax.vmap(warp)(squares, angle, scale, shift).reshape(batch, features)


def augment_images(
    images: Float[Array, "batch features"], key: PRNGKeyArray, options: ModelOptions
) -> Float[Array, "batch features"]:
    """The random transformation ``options`` ask for (``augment_shift``, ``augment_rotate``,
    ``augment_scale``): a whole-pixel shift alone, or one affine resampling."""
    if options.augment_rotate or options.augment_scale:
        return affine_images(
            images, key, options.augment_shift, options.augment_rotate, options.augment_scale
        )
    return shift_images(images, key, options.augment_shift)


def check_square_images(options: ModelOptions, features: int) -> None:
    """Augmentation needs square images: refuse ``features`` that is not a square number."""
    if options.augments and math.isqrt(features) ** 2 != features:
        used = [
            name
            for name in ("augment_shift", "augment_rotate", "augment_scale")
            if getattr(options, name)
        ]
        raise ValueError(
            f"{', '.join(used)} needs square images, but each example has {features} features"
        )


# --------------------------------------------------------------------------------------------
# Max-norm


def clip_max_norm(params: Params, max_norm: float) -> Params:
    """Every unit's incoming weight vector (a column of w) rescaled to an L2 norm of at most
    ``max_norm``; biases unchanged (Srivastava et al. 2014)."""

    def clip(layer):
        norms = jnp.sqrt(jnp.sum(layer["w"] ** 2, axis=0, keepdims=True))
        factor = jnp.minimum(1.0, max_norm / jnp.maximum(norms, 1e-12)).astype(layer["w"].dtype)
        return {"w": layer["w"] * factor, "b": layer["b"]}

    return [clip(layer) for layer in params]


# --------------------------------------------------------------------------------------------
# Virtual adversarial training (Miyato et al. 2016)


VAT_XI = 0.1
"""Size of the probe step of the power iteration (Miyato et al.'s xi). Their 1e-6 is below
float32's resolution for pixels near 1: against a float64 reference direction at 1e-6, float32
directions at 1e-6 / 1e-2 / 0.1 had median cosines of 0.30 / 0.9998 / 0.9987 (a 784-512-512-10
MLP after 3 epochs), and at 0.1 none pointed away from it."""


def unit_rows(v: Array) -> Array:
    """Each row scaled to L2 norm 1 (first by its largest entry, so tiny rows stay exact)."""
    v = v / (1e-12 + jnp.max(jnp.abs(v), axis=-1, keepdims=True))
    return v / jnp.sqrt(1e-6 + jnp.sum(v**2, axis=-1, keepdims=True))


def vat_loss_and_grads(
    options: ModelOptions,
    params: Params,
    x: Float[Array, "batch features"],
    logits: Float[Array, "batch classes"],
    *,
    key: PRNGKeyArray,
    dropout_key: PRNGKeyArray | None = None,
    weights: Array | None = None,
) -> tuple[Array, Params]:
    """The virtual adversarial loss KL(p(x) || p(x + r_adv)) and its parameter gradients.

    ``p`` is the network the step trains: the same dropout masks (``dropout_key``) as the
    cross-entropy pass, whose ``logits`` give the fixed clean distribution. (Scored in evaluation
    mode instead, the term can be met by a network whose dropout-free output is flat while its
    dropped-out output fits the labels: a 784-512-512-10 MLP with dropout 0.5 trained that way
    fell to chance on validation within 10 epochs.) ``key`` draws the power iteration's random
    start; ``r_adv`` has L2 norm ``options.vat_epsilon`` per example.
    """
    clean = jax.lax.stop_gradient(log_softmax(logits))
    masks = batch_masks(options.loss, params, x, dropout_key)

    def divergence(p, r):
        _, pre_activations = forward_pass(p, x + r, masks, activation=options.activation)
        perturbed = pre_activations[-1]
        per_example = jnp.sum(jnp.exp(clean) * (clean - log_softmax(perturbed)), axis=-1)
        return weighted_mean(per_example, weights)

    start = VAT_XI * unit_rows(jax.random.normal(key, x.shape, x.dtype))
    direction = jax.grad(divergence, argnums=1)(params, start)
    r_adv = options.vat_epsilon * unit_rows(jax.lax.stop_gradient(direction))
    return jax.value_and_grad(divergence)(params, r_adv)
