"""Training: one immutable train state, a jitted step, a whole epoch inside one ``lax.scan``.

The state that travels between steps (parameters, optimizer state, step count, PRNG key) is one
``flax.struct`` pytree; the optimizer and the model options ride along as static fields, so a
state fully describes what its step computes and ``jax.jit`` compiles once per configuration.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Sequence
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jaxtyping import Array, Float, Int

from jaxmlp import _validation
from jaxmlp.backprop import _backprop
from jaxmlp.losses import DATA_LOSSES, OUTPUTS, _loss_and_logits, _mean, log_softmax
from jaxmlp.model import ACTIVATIONS, INITS, Params, _forward, init_mlp

GRADIENTS = ("autodiff", "backprop")


@dataclasses.dataclass(frozen=True, kw_only=True)
class ModelOptions:
    """Everything besides the parameters that decides what a training step computes.

    Attributes:
      activation: hidden nonlinearity (``relu``, ``sigmoid``, ``tanh``, ``identity``).
      output: ``softmax`` (cross-entropy) or ``sigmoid`` (logistic cost over one-hot targets).
      l2: coefficient of ``0.5 * sum(w**2)`` added to the mean batch loss.
      dropout_rate: inverted dropout on every hidden layer's output, training only.
      input_dropout_rate: inverted dropout on the input pixels, training only.
      max_norm: if set, after each update every unit's incoming weight vector (a column of w)
        is rescaled to an L2 norm of at most ``max_norm`` (Srivastava et al. 2014).
      augment_shift: if > 0, each training image (square, e.g. 28 x 28) is translated by a
        random whole number of pixels in [-augment_shift, augment_shift] along each axis,
        inside the compiled step, filling with the edge pixels.
      augment_rotate: if > 0, each training image is also rotated by a random angle in
        [-augment_rotate, augment_rotate] degrees about its centre (bilinear interpolation,
        edge-filled), inside the compiled step.
      augment_scale: if > 0, each training image is also zoomed by a random factor in
        [1 - augment_scale, 1 + augment_scale] about its centre. With a rotation or a zoom the
        shift of ``augment_shift`` is applied in the same resampling.
      adversarial_epsilon: if > 0, adversarial training with the fast gradient sign method
        (Goodfellow et al. 2015): each step also scores the batch moved by
        ``adversarial_epsilon * sign(grad_x loss)`` (the same dropout mask) and descends
        ``(1 - adversarial_weight) * loss(x) + adversarial_weight * loss(x_adv)``. Inputs are
        not clipped, so epsilon is in the units of the inputs (``/255`` pixels: 0.1 is 25.5
        grey levels). A regulariser, not augmentation: no prior on images is used. Needs
        ``gradient="autodiff"``; a step costs about twice as much.
      adversarial_weight: the weight of the adversarial term, in (0, 1]; 0.5 as in the paper.
      vat_epsilon: if > 0, virtual adversarial training (Miyato et al. 2016): each step adds
        ``vat_weight * KL(p(x) || p(x + r))`` to the loss, where ``p`` is the model's softmax
        under the step's dropout masks, the clean ``p(x)`` is held fixed, and ``r`` (L2 norm
        ``vat_epsilon`` per example, in input units) is the direction that raises the KL most,
        found by one power iteration from a random start. It uses no labels and no prior on
        images: a smoothness regulariser, not augmentation. Needs ``gradient="autodiff"`` and
        ``output="softmax"``; a step costs about 2.5 times as much (two more forward and
        backward passes, one of them to the inputs only).
      vat_weight: the weight of the virtual adversarial term (> 0; 1.0 as in the paper).
      gradient: ``autodiff`` (``jax.value_and_grad`` of the loss) or ``backprop`` (the
        hand-derived backward pass); they agree to rounding.
    """

    activation: str = "relu"
    output: str = "softmax"
    l2: float = 0.0
    dropout_rate: float = 0.0
    input_dropout_rate: float = 0.0
    max_norm: float | None = None
    augment_shift: int = 0
    augment_rotate: float = 0.0
    augment_scale: float = 0.0
    adversarial_epsilon: float = 0.0
    adversarial_weight: float = 0.5
    vat_epsilon: float = 0.0
    vat_weight: float = 1.0
    gradient: str = "autodiff"

    def __post_init__(self):
        _validation.check_choice("activation", self.activation, ACTIVATIONS)
        _validation.check_choice("output", self.output, OUTPUTS)
        _validation.check_non_negative("l2", self.l2)
        _validation.check_rate("dropout_rate", self.dropout_rate)
        _validation.check_rate("input_dropout_rate", self.input_dropout_rate)
        if self.max_norm is not None:
            _validation.check_positive("max_norm", self.max_norm)
        if (
            isinstance(self.augment_shift, bool)
            or not isinstance(self.augment_shift, int)
            or (self.augment_shift < 0)
        ):
            raise ValueError(
                f"augment_shift={self.augment_shift!r} is invalid; expected an integer >= 0"
            )
        _validation.check_non_negative("augment_rotate", self.augment_rotate)
        if self.augment_rotate > 180:
            raise ValueError(
                f"augment_rotate={self.augment_rotate!r} is invalid; expected degrees in [0, 180]"
            )
        _validation.check_non_negative("augment_scale", self.augment_scale)
        if self.augment_scale >= 1:
            raise ValueError(
                f"augment_scale={self.augment_scale!r} is invalid; expected a fraction in [0, 1)"
            )
        _validation.check_non_negative("adversarial_epsilon", self.adversarial_epsilon)
        _validation.check_non_negative("adversarial_weight", self.adversarial_weight)
        if not 0 < self.adversarial_weight <= 1:
            raise ValueError(
                f"adversarial_weight={self.adversarial_weight!r} is invalid; expected a weight "
                "in (0, 1]"
            )
        _validation.check_non_negative("vat_epsilon", self.vat_epsilon)
        _validation.check_positive("vat_weight", self.vat_weight)
        _validation.check_choice("gradient", self.gradient, GRADIENTS)
        for name in ("adversarial_epsilon", "vat_epsilon"):
            if getattr(self, name) and self.gradient != "autodiff":
                raise ValueError(
                    f"{name}={getattr(self, name)!r} needs gradient='autodiff' (the input "
                    f"gradient comes from jax.grad); got gradient={self.gradient!r}"
                )
        if self.vat_epsilon and self.output != "softmax":
            raise ValueError(
                f"vat_epsilon={self.vat_epsilon!r} needs output='softmax' (it compares softmax "
                f"distributions); got output={self.output!r}"
            )

    @property
    def augments(self) -> bool:
        """Whether training images are transformed at random inside the step."""
        return bool(self.augment_shift or self.augment_rotate or self.augment_scale)


@flax.struct.dataclass
class TrainState:
    """Everything that changes during training, as one immutable pytree.

    ``key`` holds raw ``uint32`` key data (``jax.random.key_data``) so that a checkpoint is a
    tree of plain arrays. ``optimizer`` and ``options`` are static: they are part of the
    tree's structure, not its leaves.
    """

    params: Params
    opt_state: optax.OptState
    step: Int[Array, ""]
    key: Array
    optimizer: optax.GradientTransformation = flax.struct.field(pytree_node=False)
    options: ModelOptions = flax.struct.field(pytree_node=False)


def _key_data(key) -> Array:
    if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        return jax.random.key_data(key)
    return jnp.asarray(key, jnp.uint32)


def create_train_state(
    key,
    layer_sizes: Sequence[int],
    optimizer: optax.GradientTransformation,
    *,
    init: str = "he",
    scale: float = 0.01,
    dtype: Any = jnp.float32,
    options: ModelOptions | None = None,
    params: Params | None = None,
) -> TrainState:
    """A fresh train state: parameters from ``init_mlp`` (or the given ``params``), the
    optimizer's initial state, step 0 and a key for shuffling and dropout split from ``key``."""
    if not isinstance(optimizer, optax.GradientTransformation):
        raise TypeError(
            f"optimizer must be an optax.GradientTransformation (e.g. jaxmlp.optimizer('adam', "
            f"1e-3)), got {type(optimizer).__name__}"
        )
    _validation.check_choice("init", init, INITS)
    init_key, train_key = jax.random.split(key)
    if params is None:
        params = init_mlp(init_key, layer_sizes, init=init, scale=scale, dtype=dtype)
    else:
        _validation.check_params(params)
    return TrainState(
        params=params,
        opt_state=optimizer.init(params),
        step=jnp.zeros((), jnp.int32),
        key=_key_data(train_key),
        optimizer=optimizer,
        options=options if options is not None else ModelOptions(),
    )


# --------------------------------------------------------------------------------------------
# The step


def _loss_and_grads(params, x, labels, weights, options: ModelOptions, dropout_key):
    """(loss, grads, logits) with the gradient method the options ask for."""
    arguments = (
        x,
        labels,
        options.activation,
        options.l2,
        options.output,
        options.dropout_rate,
        options.input_dropout_rate,
        dropout_key,
        weights,
    )
    if options.gradient == "backprop":
        return _backprop(params, *arguments)
    if options.adversarial_epsilon:
        return _adversarial_loss_and_grads(params, arguments, options)
    (loss, logits), grads = jax.value_and_grad(_loss_and_logits, has_aux=True)(params, *arguments)
    return loss, grads, logits


def _adversarial_loss_and_grads(params, arguments, options: ModelOptions):
    """Fast gradient sign adversarial training: one pass gives the clean loss's gradients with
    respect to the parameters and the inputs; a second scores the perturbed inputs."""
    x, *rest = arguments
    value_and_grad = jax.value_and_grad(_loss_and_logits, argnums=(0, 1), has_aux=True)
    (clean, logits), (clean_grads, x_grad) = value_and_grad(params, x, *rest)
    x_adv = jax.lax.stop_gradient(x + options.adversarial_epsilon * jnp.sign(x_grad))
    (adversarial, _), adversarial_grads = jax.value_and_grad(_loss_and_logits, has_aux=True)(
        params, x_adv, *rest
    )
    a = options.adversarial_weight
    grads = jax.tree.map(lambda c, g: (1 - a) * c + a * g, clean_grads, adversarial_grads)
    return (1 - a) * clean + a * adversarial, grads, logits


_VAT_XI = 0.1
"""Size of the probe step of the power iteration (Miyato et al.'s xi). Their 1e-6 is below
float32's resolution for pixels near 1: against a float64 reference direction at 1e-6, float32
directions at 1e-6 / 1e-2 / 0.1 had median cosines of 0.30 / 0.9998 / 0.9987 (a 784-512-512-10
MLP after 3 epochs), and at 0.1 none pointed away from it."""


def _unit_rows(v):
    """Each row scaled to L2 norm 1 (first by its largest entry, so tiny rows stay exact)."""
    v = v / (1e-12 + jnp.max(jnp.abs(v), axis=-1, keepdims=True))
    return v / jnp.sqrt(1e-6 + jnp.sum(v**2, axis=-1, keepdims=True))


def _vat_loss_and_grads(params, x, weights, options: ModelOptions, dropout_key, logits, key):
    """The virtual adversarial loss KL(p(x) || p(x + r_adv)) and its parameter gradients.

    ``p`` is the network the step trains: the same dropout masks (``dropout_key``) as the
    cross-entropy pass, whose ``logits`` give the fixed clean distribution. (Scored in evaluation
    mode instead, the term can be met by a network whose dropout-free output is flat while its
    dropped-out output fits the labels: a 784-512-512-10 MLP with dropout 0.5 trained that way
    fell to chance on validation within 10 epochs.)
    """
    clean = jax.lax.stop_gradient(log_softmax(logits))

    def divergence(p, r):
        perturbed = _forward(
            p,
            x + r,
            options.activation,
            options.dropout_rate,
            options.input_dropout_rate,
            dropout_key,
        )
        per_example = jnp.sum(jnp.exp(clean) * (clean - log_softmax(perturbed)), axis=-1)
        return _mean(per_example, weights)

    start = _VAT_XI * _unit_rows(jax.random.normal(key, x.shape, x.dtype))
    direction = jax.grad(divergence, argnums=1)(params, start)
    r_adv = options.vat_epsilon * _unit_rows(jax.lax.stop_gradient(direction))
    return jax.value_and_grad(divergence)(params, r_adv)


def _shift_images(images, key, max_shift: int):
    """Translate each flattened square image by up to ``max_shift`` pixels, edge-filled."""
    batch, features = images.shape
    side = math.isqrt(features)
    squares = images.reshape(batch, side, side)
    padded = jnp.pad(squares, ((0, 0), (max_shift, max_shift), (max_shift, max_shift)), mode="edge")
    offsets = jax.random.randint(key, (batch, 2), 0, 2 * max_shift + 1)

    def crop(image, offset):
        return jax.lax.dynamic_slice(image, (offset[0], offset[1]), (side, side))

    return jax.vmap(crop)(padded, offsets).reshape(batch, features)


def _affine_images(images, key, max_shift: int, max_rotate: float, max_scale: float):
    """Rotate (degrees), zoom and shift (whole pixels) each flattened square image at random
    about its centre, resampled bilinearly with edge fill."""
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


def _augment(images, key, options: ModelOptions):
    if options.augment_rotate or options.augment_scale:
        return _affine_images(
            images, key, options.augment_shift, options.augment_rotate, options.augment_scale
        )
    return _shift_images(images, key, options.augment_shift)


def _clip_max_norm(params, max_norm):
    def clip(layer):
        norms = jnp.sqrt(jnp.sum(layer["w"] ** 2, axis=0, keepdims=True))
        factor = jnp.minimum(1.0, max_norm / jnp.maximum(norms, 1e-12)).astype(layer["w"].dtype)
        return {"w": layer["w"] * factor, "b": layer["b"]}

    return [clip(layer) for layer in params]


def _needs_key(options: ModelOptions) -> bool:
    """Whether a step draws random numbers (dropout, augmentation, VAT's random start); keys
    cost time per step."""
    return bool(
        options.augments
        or options.dropout_rate
        or options.input_dropout_rate
        or options.vat_epsilon
    )


def _step(state: TrainState, x, labels, weights, step_key):
    """One optimizer step on a batch; returns the new state, the batch's loss and number of
    correct predictions, and whether the loss and gradients were finite."""
    options = state.options
    uses_dropout = options.dropout_rate > 0 or options.input_dropout_rate > 0
    augment_key = dropout_key = None
    if _needs_key(options):
        augment_key, dropout_key = jax.random.split(step_key)
    if options.augments:
        x = _augment(x, augment_key, options)
    loss, grads, logits = _loss_and_grads(
        state.params, x, labels, weights, options, dropout_key if uses_dropout else None
    )
    if options.vat_epsilon:
        vat, vat_grads = _vat_loss_and_grads(
            state.params,
            x,
            weights,
            options,
            dropout_key if uses_dropout else None,
            logits,
            jax.random.fold_in(dropout_key, 1),
        )
        loss = loss + options.vat_weight * vat
        grads = jax.tree.map(lambda g, v: g + options.vat_weight * v, grads, vat_grads)
    updates, opt_state = state.optimizer.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    if options.max_norm is not None:
        params = _clip_max_norm(params, options.max_norm)
    # Running accuracy from the training forward pass itself (with its dropout), as the
    # PyTorch and flax loops report it: a second, clean forward pass would cost a third more.
    hits = (jnp.argmax(logits, -1) == _class_ids(labels)).astype(jnp.float32)
    correct = jnp.sum(hits if weights is None else hits * weights)
    finite = jnp.isfinite(loss) & jnp.isfinite(optax.tree.norm(grads))
    new_state = state.replace(params=params, opt_state=opt_state, step=state.step + 1)
    return new_state, loss, correct, finite


def _class_ids(labels):
    return labels if labels.ndim == 1 else jnp.argmax(labels, -1)


@jax.jit
def train_step(state: TrainState, x: Float[Array, "batch features"], labels: Array):
    """One jitted optimizer step on one batch.

    Returns ``(state, metrics)`` with ``metrics = {"loss", "correct", "finite"}``; if the
    loss or the gradients are not finite the returned state is the input state unchanged.
    """
    key = jax.random.fold_in(jax.random.wrap_key_data(state.key), state.step)
    new_state, loss, correct, finite = _step(state, x, labels, None, key)
    new_state = jax.tree.map(lambda new, old: jnp.where(finite, new, old), new_state, state)
    return new_state, {"loss": loss, "correct": correct, "finite": finite}


def _epoch_plan(n_examples: int, batch_size: int):
    steps = -(-n_examples // batch_size)
    padded = steps * batch_size
    return steps, padded


def _constrain_batch(mesh, *arrays):
    """Shard each array's leading (batch) axis over the mesh's ``data`` axis; the compiler then
    splits the step's work across devices and inserts the all-reduce of the gradients."""
    if mesh is None:
        return arrays
    sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data"))
    return tuple(
        None if array is None else jax.lax.with_sharding_constraint(array, sharding)
        for array in arrays
    )


def _train_epoch(
    state: TrainState, images, labels, batch_size: int, progress, progress_every, mesh=None
):
    n_examples = images.shape[0]
    steps, padded = _epoch_plan(n_examples, batch_size)
    epoch_key, shuffle_key, next_key = jax.random.split(jax.random.wrap_key_data(state.key), 3)
    order = jax.random.permutation(shuffle_key, n_examples)
    ragged = padded != n_examples
    if ragged:
        # The last batch is filled with copies of example 0 carrying weight 0: every example is
        # used exactly once and the shapes stay static.
        order = jnp.concatenate([order, jnp.zeros(padded - n_examples, order.dtype)])
        valid = (jnp.arange(padded) < n_examples).astype(images.dtype)
    order = order.reshape(steps, batch_size)

    def body(carry, index):
        state, diverged_at = carry
        batch = order[index]
        weights = valid[index * batch_size + jnp.arange(batch_size)] if ragged else None
        x, y, weights = _constrain_batch(mesh, images[batch], labels[batch], weights)
        step_key = jax.random.fold_in(epoch_key, index) if _needs_key(state.options) else None
        state, loss, correct, finite = _step(state, x, y, weights, step_key)
        # Only the first non-finite step is recorded: guarding every update with a select over
        # the whole state would cost 17% of a CPU epoch and 42% of a GPU one. Callers keep the
        # state from before the epoch (fit does) to fall back on.
        diverged_at = jnp.where((diverged_at < 0) & ~finite, index, diverged_at)
        count = jnp.sum(weights) if ragged else jnp.asarray(batch_size, images.dtype)
        if progress is not None:
            jax.lax.cond(
                (index + 1) % progress_every == 0,
                lambda: jax.debug.callback(progress, index + 1, steps),
                lambda: None,
            )
        return (state, diverged_at), (loss * count, correct, count)

    (state, diverged_at), (loss_sums, correct, counts) = jax.lax.scan(
        body, (state, jnp.asarray(-1, jnp.int32)), jnp.arange(steps)
    )
    state = state.replace(key=jax.random.key_data(next_key))
    total = jnp.sum(counts)
    metrics = {
        "loss": jnp.sum(loss_sums) / total,
        "train_accuracy": jnp.sum(correct) / total,
        "diverged_at_step": diverged_at,
    }
    return state, metrics


_train_epoch_jit = jax.jit(
    _train_epoch,
    static_argnames=("batch_size", "progress", "progress_every", "mesh"),
    donate_argnums=0,
)


def train_epoch(
    state: TrainState,
    images: Float[Array, "n features"],
    labels: Int[Array, " n"],
    *,
    batch_size: int,
    progress: Callable[[int, int], None] | None = None,
    progress_every: int = 50,
    mesh: jax.sharding.Mesh | None = None,
) -> tuple[TrainState, dict[str, Array]]:
    """One epoch inside one compiled program: shuffle with the state's key, then ``lax.scan``
    over every minibatch. Every example is used exactly once (the last, shorter batch is padded
    and masked, so the shapes and the compile stay the same).

    Returns ``(state, metrics)`` with the example-weighted mean training ``loss``, the
    ``train_accuracy`` of the batches as they were trained on (pre-update parameters, with the
    step's dropout),
    and ``diverged_at_step``: -1, or the index of the first step whose loss or gradients were not
    finite. After a divergence the returned state holds non-finite values: keep a copy of the
    state from before the epoch to fall back on (:func:`fit` does; the CLI falls back on its last
    checkpoint).

    ``progress(done_steps, total_steps)`` is called from inside the program every
    ``progress_every`` steps (for progress bars). The input state's buffers are donated: use the
    returned state.

    With a ``mesh`` (see :func:`jaxmlp.sharding.data_parallel_mesh`), each batch is split along
    the mesh's ``data`` axis across its devices (data parallelism); place the state and the data
    on the mesh first with :func:`jaxmlp.sharding.replicate`.
    """
    images, labels = check_training_data(state.params, images, labels, "images", "labels")
    batch_size = _check_batch_size(batch_size, images.shape[0])
    _check_augmentation(state.options, images.shape[1])
    _check_mesh(mesh, batch_size)
    return _train_epoch_jit(state, images, labels, batch_size, progress, progress_every, mesh)


# --------------------------------------------------------------------------------------------
# Evaluation


def _evaluate(params, images, labels, options: ModelOptions, batch_size: int):
    n_examples = images.shape[0]
    steps, padded = _epoch_plan(n_examples, batch_size)
    pad = padded - n_examples
    images = jnp.pad(images, ((0, pad), (0, 0))).reshape(steps, batch_size, -1)
    labels = jnp.pad(labels, [(0, pad)] + [(0, 0)] * (labels.ndim - 1)).reshape(
        steps, batch_size, *labels.shape[1:]
    )
    weights = (jnp.arange(padded) < n_examples).astype(images.dtype).reshape(steps, batch_size)

    def body(_, batch):
        x, y, w = batch
        logits = _forward(params, x, options.activation, 0.0, 0.0, None)
        per_example = DATA_LOSSES[options.output](logits, y, weights=w) * jnp.sum(w)
        correct = jnp.sum((jnp.argmax(logits, -1) == _class_ids(y)) * w)
        return None, (per_example, correct)

    _, (loss_sums, correct) = jax.lax.scan(body, None, (images, labels, weights))
    correct = jnp.sum(correct)
    return {
        "loss": jnp.sum(loss_sums) / n_examples,
        "accuracy": correct / n_examples,
        "correct": correct.astype(jnp.int32),
        "count": n_examples,
    }


_evaluate_jit = jax.jit(_evaluate, static_argnames=("options", "batch_size"))


def evaluate(
    params: Params,
    images: Float[Array, "n features"],
    labels: Int[Array, " n"],
    *,
    options: ModelOptions | None = None,
    batch_size: int = 2048,
) -> dict[str, float]:
    """Exact loss and accuracy over all examples, in evaluation mode (no dropout).

    Examples are scored in chunks of ``batch_size``; the last chunk is padded and masked, so
    every example counts once: ``accuracy = correct / count`` and ``loss`` is the mean data loss
    (without the L2 term) over all examples. Returns plain Python numbers.
    """
    _validation.check_params(params)
    images, labels = check_training_data(params, images, labels, "images", "labels")
    options = options if options is not None else ModelOptions()
    batch_size = min(_validation.check_positive_int("batch_size", batch_size), images.shape[0])
    metrics = _evaluate_jit(params, images, labels, options, batch_size)
    correct, count = int(metrics["correct"]), int(metrics["count"])
    # The accuracy from the exact integer counts, not a float32 quotient.
    return {
        "loss": float(metrics["loss"]),
        "accuracy": correct / count,
        "correct": correct,
        "count": count,
    }


def predict(params: Params, images, *, activation: str = "relu") -> np.ndarray:
    """Predicted class ids, shape (n,), in evaluation mode."""
    _validation.check_params(params)
    _validation.check_inputs(params, images)
    _validation.check_choice("activation", activation, ACTIVATIONS)
    return np.asarray(_predict_jit(params, jnp.asarray(images), activation))


_predict_jit = jax.jit(
    lambda params, x, activation: jnp.argmax(_forward(params, x, activation, 0.0, 0.0, None), -1),
    static_argnames="activation",
)


# --------------------------------------------------------------------------------------------
# Boundary checks for whole datasets


def check_training_data(params, images, labels, images_name="x", labels_name="y"):
    """Validate a dataset in Python before any compile; return it as JAX arrays."""
    if isinstance(images, (list, tuple)) or isinstance(labels, (list, tuple)):
        images, labels = np.asarray(images), np.asarray(labels)
    shape = np.shape(images)
    if len(shape) != 2 or shape[0] == 0:
        raise ValueError(
            f"{images_name} has shape {shape}; expected a non-empty (n, features) array of "
            "flattened images"
        )
    if labels.dtype.kind in "USO":
        raise TypeError(
            f"{labels_name} has dtype {labels.dtype}; expected integer class ids (int32)"
        )
    _validation.check_inputs(params, images)
    n_classes = params[-1]["w"].shape[1]
    _validation.check_labels(labels, shape[0], n_classes)
    if isinstance(images, np.ndarray) and not np.all(np.isfinite(images)):
        bad = int(np.size(images) - np.count_nonzero(np.isfinite(images)))
        raise ValueError(
            f"{images_name} contains {bad} NaN or infinite values; expected finite pixel values"
        )
    if isinstance(images, jax.Array) and not bool(jnp.all(jnp.isfinite(images))):
        raise ValueError(f"{images_name} contains NaN or infinite values; expected finite values")
    images = jnp.asarray(images)
    param_dtype = params[0]["w"].dtype
    if images.dtype != param_dtype:
        images = images.astype(param_dtype)
    labels = jnp.asarray(labels)
    if labels.ndim == 1:
        labels = labels.astype(jnp.int32)
    return images, labels


def _check_batch_size(batch_size, n_examples):
    batch_size = _validation.check_positive_int("batch_size", batch_size)
    if batch_size > n_examples:
        raise ValueError(
            f"batch_size={batch_size} is larger than the {n_examples} training examples; "
            f"expected 1 <= batch_size <= {n_examples}"
        )
    return batch_size


def _check_mesh(mesh, batch_size):
    if mesh is None:
        return
    if not isinstance(mesh, jax.sharding.Mesh) or "data" not in mesh.axis_names:
        raise ValueError(f"mesh must be a jax.sharding.Mesh with a 'data' axis, got {mesh!r}")
    devices = mesh.shape["data"]
    if batch_size % devices:
        raise ValueError(
            f"batch_size={batch_size} does not divide evenly over the {devices} devices of the "
            f"mesh; expected a multiple of {devices}"
        )


def _check_augmentation(options: ModelOptions, features: int):
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
# fit


class DivergenceError(FloatingPointError):
    """Training produced a non-finite loss or gradient at ``epoch``, ``step`` (1-based);
    ``state`` is the state from the start of that epoch, the last one known to be good."""

    def __init__(self, message: str, state: TrainState, epoch: int, step: int):
        super().__init__(message)
        self.state, self.epoch, self.step = state, epoch, step


def fit(
    key,
    layer_sizes: Sequence[int],
    x_train,
    y_train,
    *,
    optimizer: optax.GradientTransformation,
    epochs: int,
    batch_size: int,
    validation_data: tuple[Any, Any] | None = None,
    init: str = "he",
    scale: float = 0.01,
    dtype: Any = jnp.float32,
    evaluate_train: bool = False,
    state: TrainState | None = None,
    on_epoch_end: Callable[[TrainState, dict[str, Any]], None] | None = None,
    mesh: jax.sharding.Mesh | None = None,
    **model_options: Any,
) -> tuple[TrainState, list[dict[str, Any]]]:
    """Train an MLP and return ``(state, history)``.

    Args:
      key: PRNG key (``jax.random.key(seed)``) for the initial parameters, the shuffling order
        and dropout.
      layer_sizes: e.g. ``(784, 256, 10)``.
      x_train, y_train: (n, features) floating images and (n,) integer labels.
      optimizer: an optax optimizer, e.g. ``jaxmlp.optimizer("adam", 1e-3)``.
      epochs, batch_size: passes over the data and examples per step.
      validation_data: optional ``(x, y)`` scored after every epoch.
      init, scale, dtype: passed to :func:`init_mlp`.
      evaluate_train: also score the whole training set in evaluation mode after each epoch
        (``train_accuracy`` then is that exact figure instead of the running one).
      state: continue from this state instead of a fresh one (``key`` is then unused).
      on_epoch_end: called as ``on_epoch_end(state, record)`` after each epoch (checkpoints,
        logging).
      mesh: train data-parallel over this mesh's ``data`` axis (see :mod:`jaxmlp.sharding`):
        the state and the data are replicated on its devices and each batch is split across
        them; ``batch_size`` must be a multiple of the device count.
      **model_options: fields of :class:`ModelOptions` (``activation``, ``l2``, ``dropout_rate``,
        ``output``, ...).

    Returns:
      The final state and one record per epoch: ``epoch``, ``loss`` (mean training loss),
      ``train_accuracy``, ``validation_loss`` / ``validation_accuracy`` (with validation
      data), ``seconds`` (training wall time of that epoch; the first includes the compile) and
      ``compile_seconds`` in the first record.

    Raises:
      DivergenceError: a loss or gradient became non-finite; its ``state`` is the last good one.
    """
    unknown = set(model_options) - {field.name for field in dataclasses.fields(ModelOptions)}
    if unknown:
        valid = ", ".join(field.name for field in dataclasses.fields(ModelOptions))
        raise TypeError(f"fit got unknown options {sorted(unknown)}; model options are {valid}")
    epochs = _validation.check_positive_int("epochs", epochs)
    options = ModelOptions(**model_options)
    if state is None:
        sizes = _validation.check_layer_sizes(layer_sizes)
        state = create_train_state(
            key, sizes, optimizer, init=init, scale=scale, dtype=dtype, options=options
        )
    x_train, y_train = check_training_data(state.params, x_train, y_train, "x_train", "y_train")
    batch_size = _check_batch_size(batch_size, x_train.shape[0])
    _check_augmentation(state.options, x_train.shape[1])
    _check_mesh(mesh, batch_size)
    if mesh is not None:
        replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
        state, x_train, y_train = jax.device_put((state, x_train, y_train), replicated)
    if validation_data is not None:
        x_valid, y_valid = check_training_data(
            state.params, *validation_data, "validation images", "validation labels"
        )

    start = time.perf_counter()
    compiled = _train_epoch_jit.lower(state, x_train, y_train, batch_size, None, 50, mesh).compile()
    compile_seconds = time.perf_counter() - start
    history: list[dict[str, Any]] = []
    first_epoch = 1
    for epoch in range(first_epoch, first_epoch + epochs):
        start = time.perf_counter()
        # The epoch program donates its input, so the fallback for a divergence is a copy.
        before = jax.tree.map(jnp.copy, state)
        state, metrics = compiled(state, x_train, y_train)
        metrics = jax.device_get(metrics)
        seconds = time.perf_counter() - start
        if metrics["diverged_at_step"] >= 0:
            step = int(metrics["diverged_at_step"])
            raise DivergenceError(
                f"non-finite loss or gradient at epoch {epoch}, step {step + 1}; "
                "try a lower learning rate",
                before,
                epoch,
                step + 1,
            )
        record: dict[str, Any] = {
            "epoch": epoch,
            "loss": float(metrics["loss"]),
            "train_accuracy": float(metrics["train_accuracy"]),
            "seconds": seconds + (compile_seconds if epoch == first_epoch else 0.0),
        }
        if epoch == first_epoch:
            record["compile_seconds"] = compile_seconds
        if evaluate_train:
            record["train_accuracy"] = evaluate(
                state.params, x_train, y_train, options=state.options
            )["accuracy"]
        if validation_data is not None:
            scores = evaluate(state.params, x_valid, y_valid, options=state.options)
            record["validation_loss"] = scores["loss"]
            record["validation_accuracy"] = scores["accuracy"]
        history.append(record)
        if on_epoch_end is not None:
            on_epoch_end(state, record)
    return state, history
