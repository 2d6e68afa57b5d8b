"""A whole training epoch inside one compiled program: shuffle, then ``lax.scan`` over every
minibatch."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Int

from jaxmlp import _validation
from jaxmlp.training._options import BATCH_SAMPLINGS
from jaxmlp.training._regularizers import check_square_images
from jaxmlp.training._state import TrainState, check_state
from jaxmlp.training._step import optimizer_step


def steps_per_epoch(n_examples: int, batch_size: int, batch_sampling: str = "shuffle") -> int:
    """Optimizer steps in one epoch of ``n_examples`` at ``batch_size``: ceil(n / batch_size)
    shuffled batches (the last one padded), or round(n / batch_size) Poisson-sampled ones
    (at least one).

    The one rule for the batch plan: [`train_epoch`][jaxmlp.train_epoch] runs this many steps, and a
    learning-rate schedule over ``epochs * steps_per_epoch(...)`` steps ends on the last one.

    Examples:
        >>> import jaxmlp
        >>> jaxmlp.steps_per_epoch(1000, 128)  # the last batch is short, and padded
        8
    """
    n_examples = _validation.check_positive_int("n_examples", n_examples)
    batch_size = _validation.check_positive_int("batch_size", batch_size)
    _validation.check_choice("batch_sampling", batch_sampling, BATCH_SAMPLINGS)
    if batch_sampling == "poisson":
        return max(1, round(n_examples / batch_size))
    return -(-n_examples // batch_size)


def constrain_batch(mesh: jax.sharding.Mesh | None, *arrays: Array | None) -> tuple[Any, ...]:
    """Shard each array's leading (batch) axis over the mesh's ``data`` axis; the compiler then
    splits the step's work across devices and inserts the all-reduce of the gradients. Returns
    the arrays in order (a None stays None)."""
    if mesh is None:
        return arrays
    sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data"))
    return tuple(
        None if array is None else jax.lax.with_sharding_constraint(array, sharding)
        for array in arrays
    )


class Batches(NamedTuple):
    """How an epoch draws its batches: ``steps`` of them, ``draw(step)`` giving a step's
    example indices, their weights (None: all count) and how many examples were drawn (None:
    all that are indexed), and the ``lot_size`` a DP-SGD step divides by (None: the batch's
    own weight)."""

    steps: int
    draw: Callable[[Array], tuple[Array, Array | None, Array | None]]
    lot_size: int | None


def shuffled_batches(key, n_examples: int, batch_size: int, dtype) -> Batches:
    """A shuffled order of all examples cut into [`steps_per_epoch`][jaxmlp.steps_per_epoch]
    batches; the last one is filled with copies of example 0 carrying weight 0, so that every
    example is used exactly once and the shapes stay static."""
    steps = steps_per_epoch(n_examples, batch_size)
    padded = steps * batch_size
    order = jax.random.permutation(key, n_examples)
    ragged = padded != n_examples
    if ragged:
        order = jnp.concatenate([order, jnp.zeros(padded - n_examples, order.dtype)])
        valid = (jnp.arange(padded) < n_examples).astype(dtype)
    order = order.reshape(steps, batch_size)

    def draw(index):
        weights = valid[index * batch_size + jnp.arange(batch_size)] if ragged else None
        return order[index], weights, None

    return Batches(steps, draw, None)


def poisson_capacity(n_examples: int, batch_size: int, devices: int = 1) -> int:
    """The fixed size a Poisson batch is padded to: the expected size + 7 standard deviations
    (a multiple of ``devices``), which a binomial batch exceeds with probability below 1e-11."""
    rate = batch_size / n_examples
    spread = math.sqrt(n_examples * rate * (1 - rate))
    capacity = min(n_examples, math.ceil(batch_size + 7 * spread) + 1)
    return -(-capacity // devices) * devices


def poisson_batches(key, n_examples: int, batch_size: int, dtype, devices: int) -> Batches:
    """[`steps_per_epoch`][jaxmlp.steps_per_epoch] Poisson-sampled batches: each step takes every
    example independently with probability batch_size / n; the batch is padded to
    `poisson_capacity` and masked, and its DP gradient is divided by ``batch_size``."""
    steps = steps_per_epoch(n_examples, batch_size, "poisson")
    capacity = poisson_capacity(n_examples, batch_size, devices)
    rate = batch_size / n_examples

    def draw(index):
        included = jax.random.bernoulli(jax.random.fold_in(key, index), rate, (n_examples,))
        count = jnp.sum(included)
        (batch,) = jnp.nonzero(included, size=capacity, fill_value=0)
        return batch, (jnp.arange(capacity) < count).astype(dtype), count

    return Batches(steps, draw, batch_size)


def run_epoch(
    state: TrainState,
    images,
    labels,
    batch_size: int,
    progress,
    progress_every,
    mesh,
    on_step: Callable[..., None] | None = None,
    log_every_steps: int = 50,
):
    """One epoch's ``lax.scan`` over its batches; the body is the same for every way of
    drawing them (`Batches`). No argument checks (see [`train_epoch`][jaxmlp.train_epoch]).

    ``on_step(step, loss, accuracy)`` is called from inside the program after every optimizer
    step whose global number (``state.step`` after it, counted over all epochs) is a multiple
    of ``log_every_steps``, with the batch's loss and accuracy; like ``progress`` it only reads
    values the step computes anyway, so it changes no number."""
    n_examples = images.shape[0]
    epoch_key, draw_key, next_key = jax.random.split(jax.random.wrap_key_data(state.key), 3)
    poisson = state.options.batch_sampling == "poisson"
    if poisson:
        devices = 1 if mesh is None else mesh.shape["data"]
        batches = poisson_batches(draw_key, n_examples, batch_size, images.dtype, devices)
    else:
        batches = shuffled_batches(draw_key, n_examples, batch_size, images.dtype)
    steps = batches.steps

    def body(carry, index):
        state, diverged_at = carry
        batch, weights, drawn = batches.draw(index)
        x, y, weights = constrain_batch(mesh, images[batch], labels[batch], weights)
        step_key = jax.random.fold_in(epoch_key, index) if state.options.needs_key else None
        state, loss, correct, finite = optimizer_step(
            state, x, y, weights, step_key, lot_size=batches.lot_size
        )
        # Only the first non-finite step is recorded: guarding every update with a select over
        # the whole state would cost 17% of a CPU epoch and 42% of a GPU one. The state from
        # before the epoch is the one to fall back on (fit keeps it).
        diverged_at = jnp.where((diverged_at < 0) & ~finite, index, diverged_at)
        if progress is not None:
            jax.lax.cond(
                (index + 1) % progress_every == 0,
                lambda: jax.debug.callback(progress, index + 1, steps),
                lambda: None,
            )
        count = jnp.asarray(batch_size, images.dtype) if weights is None else jnp.sum(weights)
        if on_step is not None:
            callback = on_step
            jax.lax.cond(
                state.step % log_every_steps == 0,
                lambda: jax.debug.callback(
                    callback, state.step, loss, correct / jnp.maximum(count, 1)
                ),
                lambda: None,
            )
        sums = (loss * count, correct, count)
        if drawn is not None:  # examples drawn beyond the batch's capacity
            sums = (*sums, drawn - count.astype(drawn.dtype))
        return (state, diverged_at), sums

    (state, diverged_at), sums = jax.lax.scan(
        body, (state, jnp.asarray(-1, jnp.int32)), jnp.arange(steps)
    )
    loss_sums, correct, counts = sums[:3]
    state = state.replace(key=jax.random.key_data(next_key))
    total = jnp.maximum(jnp.sum(counts), 1) if poisson else jnp.sum(counts)
    metrics = {
        "loss": jnp.sum(loss_sums) / total,
        "train_accuracy": jnp.sum(correct) / total,
        "diverged_at_step": diverged_at,
    }
    if poisson:
        metrics["examples"] = jnp.sum(counts)
        metrics["dropped_examples"] = jnp.sum(sums[-1])  # the fourth sum, only for Poisson
    return state, metrics


epoch_program = jax.jit(
    run_epoch,
    static_argnames=(
        "batch_size",
        "progress",
        "progress_every",
        "mesh",
        "on_step",
        "log_every_steps",
    ),
)
"""The compiled epoch (``state, images, labels, batch_size, progress, progress_every, mesh,
on_step, log_every_steps``),
without the boundary checks of [`train_epoch`][jaxmlp.train_epoch]; [`jaxmlp.fit`][] compiles it
ahead of time. Its input state is not donated: the caller's state stays valid."""


def check_batch_size(batch_size, n_examples: int) -> int:
    batch_size = _validation.check_positive_int("batch_size", batch_size)
    if batch_size > n_examples:
        raise ValueError(
            f"batch_size={batch_size} is larger than the {n_examples} training examples; "
            f"expected 1 <= batch_size <= {n_examples}"
        )
    return batch_size


def check_mesh(mesh, batch_size: int) -> None:
    if mesh is None:
        return
    if not isinstance(mesh, jax.sharding.Mesh) or "data" not in mesh.axis_names:
        raise ValueError(f"mesh must be a jax.sharding.Mesh with a 'data' axis, got {mesh!r}")
    devices = mesh.shape["data"]
    if batch_size % devices:
        raise ValueError(
            f"batch_size={batch_size} does not divide over the {devices} devices of the mesh; "
            f"expected a multiple of {devices}"
        )


def check_epoch_arguments(
    state: TrainState, images, labels, batch_size, mesh, names=("images", "labels")
) -> tuple[Array, Array, int]:
    """Every check of a training epoch, before anything compiles: the state, the data, the
    batch size, the mesh, square images for augmentation, and a warning for raw pixels.
    Returns ``(images, labels, batch_size)`` with the data as JAX arrays."""
    check_state(state)
    images_name, labels_name = names
    _validation.warn_if_raw_pixels(images, images_name)
    images, labels = _validation.check_dataset(
        state.params, images, labels, images_name, labels_name
    )
    batch_size = check_batch_size(batch_size, images.shape[0])
    check_square_images(state.options, images.shape[1])
    check_mesh(mesh, batch_size)
    return images, labels, batch_size


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
    step's dropout), and ``diverged_at_step``: -1, or the index of the first step whose loss or
    gradients were not finite. After a divergence the returned state holds non-finite values;
    the input state is not donated, so it is still there to fall back on.

    Composes: call it inside your own ``jax.jit``, ``jax.vmap`` (an ensemble:
    ``jax.vmap(lambda s: train_epoch(s, x, y, batch_size=128))(stacked_states)``) or
    ``lax.scan`` (several epochs in one program); the checks of shapes and dtypes then run at
    trace time, and those of values (finite pixels, labels in range) only on concrete arrays.

    ``progress(done_steps, total_steps)`` is called from inside the program every
    ``progress_every`` steps (for progress bars). With a ``mesh`` (see
    [`jaxmlp.sharding.data_parallel_mesh`][]), each batch is split along the mesh's ``data``
    axis across its devices (data parallelism); place the state and the data on the mesh first
    with [`jaxmlp.sharding.replicate`][].
    """
    images, labels, batch_size = check_epoch_arguments(state, images, labels, batch_size, mesh)
    progress_every = _validation.check_positive_int("progress_every", progress_every)
    return epoch_program(state, images, labels, batch_size, progress, progress_every, mesh)
