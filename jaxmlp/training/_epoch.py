"""A whole training epoch inside one compiled program: shuffle, then ``lax.scan`` over every
minibatch."""

from __future__ import annotations

import math
from collections.abc import Callable

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

    The one rule for the batch plan: :func:`train_epoch` runs this many steps, and a
    learning-rate schedule over ``epochs * steps_per_epoch(...)`` steps ends on the last one.
    """
    n_examples = _validation.check_positive_int("n_examples", n_examples)
    batch_size = _validation.check_positive_int("batch_size", batch_size)
    _validation.check_choice("batch_sampling", batch_sampling, BATCH_SAMPLINGS)
    if batch_sampling == "poisson":
        return max(1, round(n_examples / batch_size))
    return -(-n_examples // batch_size)


def epoch_plan(n_examples: int, batch_size: int) -> tuple[int, int]:
    """``(steps, padded)``: the number of minibatches of an epoch and the examples they hold
    (the last batch is padded up to ``batch_size``)."""
    steps = -(-n_examples // batch_size)
    return steps, steps * batch_size


def constrain_batch(mesh, *arrays):
    """Shard each array's leading (batch) axis over the mesh's ``data`` axis; the compiler then
    splits the step's work across devices and inserts the all-reduce of the gradients."""
    if mesh is None:
        return arrays
    sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data"))
    return tuple(
        None if array is None else jax.lax.with_sharding_constraint(array, sharding)
        for array in arrays
    )


def poisson_plan(n_examples: int, batch_size: int, devices: int = 1) -> tuple[int, int]:
    """``(steps, capacity)`` of a Poisson-sampled epoch: round(n / batch_size) steps, each
    batch padded to ``capacity`` = the expected size + 7 standard deviations (a multiple of
    ``devices``), which a binomial batch exceeds with probability below 1e-11."""
    steps = max(1, round(n_examples / batch_size))
    rate = batch_size / n_examples
    spread = math.sqrt(n_examples * rate * (1 - rate))
    capacity = min(n_examples, math.ceil(batch_size + 7 * spread) + 1)
    return steps, -(-capacity // devices) * devices


def _epoch(state: TrainState, images, labels, batch_size: int, progress, progress_every, mesh):
    if state.options.batch_sampling == "poisson":
        return _poisson_epoch(state, images, labels, batch_size, progress, progress_every, mesh)
    n_examples = images.shape[0]
    steps, padded = epoch_plan(n_examples, batch_size)
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
        x, y, weights = constrain_batch(mesh, images[batch], labels[batch], weights)
        step_key = jax.random.fold_in(epoch_key, index) if state.options.needs_key else None
        state, loss, correct, finite = optimizer_step(state, x, y, weights, step_key)
        # Only the first non-finite step is recorded: guarding every update with a select over
        # the whole state would cost 17% of a CPU epoch and 42% of a GPU one. The state from
        # before the epoch is the one to fall back on (fit keeps it).
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


def _poisson_epoch(state, images, labels, batch_size: int, progress, progress_every, mesh):
    """An epoch of Poisson-sampled batches: each step takes every example independently with
    probability batch_size / n; the batch is padded to a fixed capacity and masked."""
    n_examples = images.shape[0]
    devices = 1 if mesh is None else mesh.shape["data"]
    steps, capacity = poisson_plan(n_examples, batch_size, devices)
    rate = batch_size / n_examples
    epoch_key, sample_key, next_key = jax.random.split(jax.random.wrap_key_data(state.key), 3)

    def body(carry, index):
        state, diverged_at = carry
        included = jax.random.bernoulli(jax.random.fold_in(sample_key, index), rate, (n_examples,))
        count = jnp.sum(included)
        (batch,) = jnp.nonzero(included, size=capacity, fill_value=0)
        weights = (jnp.arange(capacity) < count).astype(images.dtype)
        x, y, weights = constrain_batch(mesh, images[batch], labels[batch], weights)
        step_key = jax.random.fold_in(epoch_key, index) if state.options.needs_key else None
        state, loss, correct, finite = optimizer_step(
            state, x, y, weights, step_key, lot_size=batch_size
        )
        diverged_at = jnp.where((diverged_at < 0) & ~finite, index, diverged_at)
        if progress is not None:
            jax.lax.cond(
                (index + 1) % progress_every == 0,
                lambda: jax.debug.callback(progress, index + 1, steps),
                lambda: None,
            )
        kept = jnp.sum(weights)
        return (state, diverged_at), (loss * kept, correct, kept, count - kept.astype(count.dtype))

    (state, diverged_at), (loss_sums, correct, counts, dropped) = jax.lax.scan(
        body, (state, jnp.asarray(-1, jnp.int32)), jnp.arange(steps)
    )
    state = state.replace(key=jax.random.key_data(next_key))
    total = jnp.maximum(jnp.sum(counts), 1)
    metrics = {
        "loss": jnp.sum(loss_sums) / total,
        "train_accuracy": jnp.sum(correct) / total,
        "diverged_at_step": diverged_at,
        "examples": jnp.sum(counts),
        "dropped_examples": jnp.sum(dropped),
    }
    return state, metrics


epoch_program = jax.jit(
    _epoch, static_argnames=("batch_size", "progress", "progress_every", "mesh")
)
"""The compiled epoch (``state, images, labels, batch_size, progress, progress_every, mesh``),
without the boundary checks of :func:`train_epoch`; :func:`jaxmlp.fit` compiles it ahead of
time. Its input state is not donated: the caller's state stays valid."""


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
            f"batch_size={batch_size} does not divide evenly over the {devices} devices of the "
            f"mesh; expected a multiple of {devices}"
        )


def check_epoch_arguments(
    state: TrainState, images, labels, batch_size, mesh, names=("images", "labels")
):
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
    :func:`jaxmlp.sharding.data_parallel_mesh`), each batch is split along the mesh's ``data``
    axis across its devices (data parallelism); place the state and the data on the mesh first
    with :func:`jaxmlp.sharding.replicate`.
    """
    images, labels, batch_size = check_epoch_arguments(state, images, labels, batch_size, mesh)
    progress_every = _validation.check_positive_int("progress_every", progress_every)
    return epoch_program(state, images, labels, batch_size, progress, progress_every, mesh)
