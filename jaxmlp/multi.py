"""Many models in one program: a stack of train states trained and scored under ``jax.vmap``.

Several seeds or hyperparameter settings that share the model's *structure* (layer sizes,
optimizer, [`ModelOptions`][jaxmlp.ModelOptions]) train together: their train states are stacked
along a leading model axis and one jitted epoch advances them all, each with its own parameters,
optimizer state and random key (so each shuffles and drops out independently). Numbers that
are leaves of the optimizer's state (for example an ``optax.inject_hyperparams`` learning rate)
may differ between the stacked models; see [`stack_states`][jaxmlp.multi.stack_states].

    states = jaxmlp.multi.stack_states(
        [jaxmlp.create_train_state(jax.random.key(s), sizes, optimizer) for s in range(10)]
    )
    states, metrics = jaxmlp.multi.train_epoch(states, x, y, batch_size=128)  # metrics: (10,)
    scores = jaxmlp.multi.evaluate(states, x_test, y_test)  # {"accuracy": (10,) array, ...}

Hyperparameters that are static in one model can differ between stacked ones when they are held
as arrays: the L2 coefficient and the dropout rates in each state's ``hyperparams``
(`jaxmlp.training.with_hyperparams`), the learning rate, momentum and the other numbers of
the optimizer in its state ([`stackable_optimizer`][jaxmlp.multi.stackable_optimizer],
[`set_optimizer_hyperparams`][jaxmlp.multi.set_optimizer_hyperparams]). The seed and the
initialisation differ in the initial parameters. [`fit`][jaxmlp.multi.fit] trains such a stack for a
number of epochs, scoring every model on validation data after each and keeping each one's best
epoch: ``jaxmlp sweep`` is built on it.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxmlp import _validation
from jaxmlp.optimizers import HYPERPARAMETERS, OptimizerSettings, optimizer
from jaxmlp.training._epoch import check_epoch_arguments, epoch_program, run_epoch
from jaxmlp.training._evaluate import evaluation, logits_of
from jaxmlp.training._fit import best_epoch, check_monitor
from jaxmlp.training._state import TrainState, check_state


def stack_states(states: Sequence[TrainState]) -> TrainState:
    """One train state whose every leaf has a leading axis of ``len(states)``.

    Raises:
        ValueError: ``states`` is empty, or the states differ in structure (optimizer, options,
            layer sizes or dtypes), which cannot share one compiled program.
    """
    states = list(states)
    if not states:
        raise ValueError("stack_states needs at least one train state; got an empty sequence")
    for i, state in enumerate(states):
        if not isinstance(state, TrainState):
            raise TypeError(f"states[{i}] is a {type(state).__name__}, expected a TrainState")
    first = states[0]
    first_structure = jax.tree.structure(first)
    first_shapes = [(x.shape, x.dtype) for x in jax.tree.leaves(first)]
    for i, state in enumerate(states[1:], start=1):
        if state.optimizer is not first.optimizer:
            raise ValueError(
                f"states[{i}] has another optimizer than states[0]; stacked states must be "
                "created with the same optimizer object (build it once, pass it to every "
                "create_train_state)"
            )
        if jax.tree.structure(state) != first_structure:
            raise ValueError(
                f"states[{i}] has another structure than states[0] (options or number of "
                "layers differ); only states built with the same optimizer and options stack"
            )
        shapes = [(x.shape, x.dtype) for x in jax.tree.leaves(state)]
        if shapes != first_shapes:
            mismatch = next((a, b) for a, b in zip(shapes, first_shapes, strict=True) if a != b)
            raise ValueError(
                f"states[{i}] has an array of shape/dtype {mismatch[0]} where states[0] has "
                f"{mismatch[1]}; stacked models must have the same layer sizes and dtypes"
            )
    return jax.tree.map(lambda *leaves: jnp.stack(leaves), *states)


def count(states: TrainState) -> int:
    """How many models a stacked state holds."""
    return int(jax.tree.leaves(states.params)[0].shape[0])


def unstack_states(states: TrainState) -> list[TrainState]:
    """The inverse of [`stack_states`][jaxmlp.multi.stack_states]: one train state per model."""
    return [jax.tree.map(lambda leaf, i=i: leaf[i], states) for i in range(count(states))]


def first_model(states: TrainState) -> TrainState:
    """The first model of a stacked state (what the data checks compare against), after
    checking that ``states`` is one."""
    if not isinstance(states, TrainState):
        raise TypeError(f"expected a stacked TrainState, got {type(states).__name__}")
    if jnp.ndim(states.step) != 1:
        raise ValueError(
            "expected a stacked train state (each leaf with a leading model axis, from "
            f"jaxmlp.multi.stack_states); got one whose step has shape {jnp.shape(states.step)}"
        )
    first = jax.tree.map(lambda leaf: leaf[0], states)
    check_state(first, "states")
    return first


@functools.partial(jax.jit, static_argnames="batch_size")
def stacked_epoch_program(states: TrainState, images, labels, batch_size: int):
    def one(state):
        return run_epoch(state, images, labels, batch_size, None, 50, None)

    return jax.vmap(one)(states)


def train_epoch(
    states: TrainState, images, labels, *, batch_size: int
) -> tuple[TrainState, dict[str, Any]]:
    """One epoch of every stacked model over the same data, in one jitted program:
    [`jaxmlp.train_epoch`][] under ``jax.vmap``.

    Each model shuffles with its own key, exactly as [`jaxmlp.train_epoch`][] would for that
    model alone. Returns the stacked states and metrics whose values have one entry per model
    (``loss``, ``train_accuracy``, ``diverged_at_step``). The input states are not donated.

    A stack of one model runs [`jaxmlp.train_epoch`][] unbatched instead: on CPU, XLA lays
    out the vmapped weight gradients transposed and copies them back every step, which made one
    784-1024-1024-10 model's epoch 40-55 % slower than the same epoch unbatched.
    """
    first = first_model(states)
    images, labels, batch_size = check_epoch_arguments(first, images, labels, batch_size, None)
    if count(states) == 1:
        state, metrics = epoch_program(first, images, labels, batch_size, None, 50, None)
        return jax.tree.map(lambda leaf: leaf[None], (state, metrics))
    return stacked_epoch_program(states, images, labels, batch_size)


@functools.partial(jax.jit, static_argnames=("options", "batch_size"))
def _evaluate_many(params, images, labels, options, batch_size: int):
    def one(p):
        scores = evaluation(p, images, labels, options, batch_size)
        return scores["loss"], scores["correct"]

    return jax.vmap(one)(params)


def evaluate(states: TrainState, images, labels, *, batch_size: int = 2048) -> dict[str, Any]:
    """Exact loss and accuracy of every stacked model (evaluation mode, no dropout):
    [`jaxmlp.evaluate`][] under ``jax.vmap``.

    Returns numpy arrays with one entry per model: ``loss``, ``accuracy``, ``correct``, and the
    int ``count`` of examples.
    """
    first = first_model(states)
    images, labels = _validation.check_dataset(first.params, images, labels, "images", "labels")
    n = images.shape[0]
    batch_size = min(_validation.check_positive_int("batch_size", batch_size), n)
    loss, correct = _evaluate_many(states.params, images, labels, states.options, batch_size)
    correct = np.asarray(correct)
    return {"loss": np.asarray(loss), "accuracy": correct / n, "correct": correct, "count": n}


@functools.partial(jax.jit, static_argnames="activation")
def _logits_many(params, x, activation: str):
    return jax.vmap(lambda p: logits_of(p, x, activation))(params)


def predict_logits(states: TrainState, images, *, batch_size: int = 2048) -> np.ndarray:
    """Logits of every stacked model, shape (models, n, classes), in evaluation mode."""
    first = first_model(states)
    _validation.check_inputs(first.params, images, "images")
    images = jnp.asarray(images)
    activation = states.options.activation
    batch_size = _validation.check_positive_int("batch_size", batch_size)
    if images.shape[0] == 0:
        classes = first.params[-1]["b"].shape[-1]
        return np.zeros((count(states), 0, classes), np.dtype(first.params[-1]["b"].dtype))
    chunks = [
        np.asarray(_logits_many(states.params, images[i : i + batch_size], activation))
        for i in range(0, images.shape[0], batch_size)
    ]
    return np.concatenate(chunks, axis=1)


# --------------------------------------------------------------------------------------------
# Optimizer hyperparameters that differ between stacked models

STACKABLE_OPTIMIZER_HYPERPARAMETERS = (
    "learning_rate",
    *(h for h in HYPERPARAMETERS if h != "initial_accumulator_value"),
)
"""The [`jaxmlp.OptimizerSettings`][] numbers
[`stackable_optimizer`][jaxmlp.multi.stackable_optimizer] can hold in the optimizer's state.
(``initial_accumulator_value`` is read when the state is created, before a model's own value could
be set, so it stays static.)"""


SCHEDULES_WITH_TRACED_NUMBERS = ("constant", "cosine", "warmup_cosine", "exponential", "step")
"""The schedules under which [`stackable_optimizer`][jaxmlp.multi.stackable_optimizer] traces
numbers: functions of the step alone (``plateau`` also reads the loss)."""


def stackable_optimizer(
    settings: OptimizerSettings,
    total_steps: int,
    traced: Sequence[str] = (),
    *,
    steps_per_epoch: int | None = None,
) -> optax.GradientTransformation:
    """The optimizer of ``settings`` (over ``total_steps`` steps, as
    [`jaxmlp.OptimizerSettings.build`][] makes it) with the hyperparameters named in
    ``traced`` held in its state by ``optax.inject_hyperparams``, so that the stacked states of
    one optimizer object can each have their own
    ([`set_optimizer_hyperparams`][jaxmlp.multi.set_optimizer_hyperparams]).

    A traced constant learning rate is the one the optimizer multiplies by, as a plain one is; a
    traced peak of another schedule multiplies the schedule of peak 1 (the same values, to float
    rounding). Without ``traced`` this is ``settings.build(total_steps, steps_per_epoch=...)``
    itself.

    Raises:
        ValueError: a name outside ``STACKABLE_OPTIMIZER_HYPERPARAMETERS``
            ([the list][jaxmlp.multi.STACKABLE_OPTIMIZER_HYPERPARAMETERS]), one the settings
            leave unset (optax's default is not a number jaxmlp knows), or a schedule outside
            [`SCHEDULES_WITH_TRACED_NUMBERS`][jaxmlp.multi.SCHEDULES_WITH_TRACED_NUMBERS].
    """
    traced = tuple(dict.fromkeys(traced))
    unknown = sorted(set(traced) - set(STACKABLE_OPTIMIZER_HYPERPARAMETERS))
    if unknown:
        raise ValueError(
            f"stackable_optimizer cannot trace {unknown}; it traces "
            f"{', '.join(STACKABLE_OPTIMIZER_HYPERPARAMETERS)}"
        )
    if not traced:
        return settings.build(total_steps, steps_per_epoch=steps_per_epoch)
    if settings.schedule not in SCHEDULES_WITH_TRACED_NUMBERS:
        raise ValueError(
            f"the optimizer's numbers cannot differ between stacked models under schedule "
            f"{settings.schedule!r}; they can under {', '.join(SCHEDULES_WITH_TRACED_NUMBERS)}"
        )
    unset = [name for name in traced if getattr(settings, name) is None]
    if unset:
        raise ValueError(
            f"{', '.join(unset)} is unset in the optimizer settings; give it a value to trace it"
        )
    static = {k: v for k, v in settings.hyperparameters().items() if k not in traced}
    schedule = settings.learning_rate_schedule(total_steps)
    unit = (
        _unit_schedule(settings, total_steps)
        if "learning_rate" in traced and callable(schedule)
        else None
    )

    def make(
        learning_rate, momentum=None, b1=None, b2=None, eps=None, decay=None, weight_decay=None
    ):
        values = {
            "momentum": momentum,
            "b1": b1,
            "b2": b2,
            "eps": eps,
            "decay": decay,
            "weight_decay": weight_decay,
        }
        given = {k: v for k, v in values.items() if k in traced}
        if "learning_rate" not in traced:
            rate = schedule
        elif unit is None:
            rate = learning_rate
        else:
            scale = unit
            rate = lambda count: learning_rate * scale(count)  # noqa: E731
        return optimizer(settings.optimizer, rate, **static, **given)

    initial = {name: getattr(settings, name) for name in traced}
    if "learning_rate" not in traced:
        initial["learning_rate"] = None
    return optax.inject_hyperparams(
        make, static_args=("learning_rate",) if "learning_rate" not in traced else ()
    )(**initial)


def _unit_schedule(settings: OptimizerSettings, total_steps: int):
    """The schedule of ``settings`` with a peak learning rate of 1, or an error for a schedule
    that is not a function of the step count alone."""
    unit = dataclasses.replace(settings, learning_rate=1.0).learning_rate_schedule(total_steps)
    if not callable(unit):
        raise ValueError(
            f"the learning rate cannot differ between stacked models under schedule "
            f"{settings.schedule!r}"
        )
    return unit


def set_optimizer_hyperparams(state: TrainState, **values: float) -> TrainState:
    """``state`` with the optimizer hyperparameters ``values`` that its
    [`stackable_optimizer`][jaxmlp.multi.stackable_optimizer] holds in the optimizer state set to
    these numbers (in the state's own dtype). The state must not have trained yet: a learning rate
    is read at every step, but changing it mid-run is not what this is for.

    Raises:
        ValueError: the optimizer state holds no such hyperparameter.
    """
    check_state(state)
    # Duck-typed: an optax.inject_hyperparams state (a NamedTuple with hyperparams), if any.
    opt_state: Any = state.opt_state
    held: Any = getattr(opt_state, "hyperparams", None)
    missing = sorted(set(values) - set(held or {}))
    if missing:
        raise ValueError(
            f"the state's optimizer does not hold {missing} in its state; build it with "
            f"jaxmlp.multi.stackable_optimizer(settings, total_steps, traced={tuple(values)})"
        )
    hyperparams = {
        **held,
        **{name: jnp.asarray(value, held[name].dtype) for name, value in values.items()},
    }
    return state.replace(opt_state=opt_state._replace(hyperparams=hyperparams))


def plain_optimizer_state(state: TrainState, optimizer: optax.GradientTransformation) -> TrainState:
    """A model of a stack (unstacked) as the same model trained alone would be: the optimizer
    state of its [`stackable_optimizer`][jaxmlp.multi.stackable_optimizer] unwrapped to the inner
    state, which has the structure of ``optimizer``'s (the one [`jaxmlp.OptimizerSettings.build`][]
    makes for the same settings), and ``optimizer`` in its place."""
    opt_state = state.opt_state
    inner = getattr(opt_state, "inner_state", None)
    if inner is not None and hasattr(opt_state, "hyperparams"):
        opt_state = inner
    expected = jax.tree.structure(optimizer.init(state.params))
    if jax.tree.structure(opt_state) != expected:
        raise ValueError(
            "the state's optimizer state does not have the structure of the given optimizer's"
        )
    return state.replace(opt_state=opt_state, optimizer=optimizer)


# --------------------------------------------------------------------------------------------
# Training a stack for several epochs


class StackedFit(NamedTuple):
    """What [`fit`][jaxmlp.multi.fit] returns."""

    states: TrainState
    """The stacked states after the last epoch."""
    best_states: TrainState
    """Each model's state at its best epoch by the monitor (the last epoch without validation
    data), stacked."""
    histories: list[list[dict[str, Any]]]
    """One list of per-epoch records per model, as [`jaxmlp.fit`][] records them."""


def fit(
    states: TrainState,
    x_train: jax.Array | np.ndarray,
    y_train: jax.Array | np.ndarray,
    *,
    epochs: int,
    batch_size: int,
    validation_data: tuple[Any, Any] | None = None,
    monitor: str = "validation_accuracy",
    min_delta: float = 0.0,
    on_epoch_end: Callable[[int, list[dict[str, Any]]], None] | None = None,
) -> StackedFit:
    """Train every stacked model for ``epochs`` epochs in one compiled program per epoch, score
    each on ``validation_data`` after every epoch, and keep each one's best epoch.

    Each model's records are those [`jaxmlp.fit`][] gives the same model trained alone
    (``epoch``, ``loss``, ``train_accuracy``, ``seconds``, ``validation_loss``,
    ``validation_accuracy``), and its numbers equal them to float rounding; ``seconds`` is the
    stack's wall time for the epoch (the first includes the compile). A model whose loss or
    gradients became non-finite gets ``"diverged": True`` from that epoch on and keeps its best
    state from before; the others train on.

    Args:
        states: stacked train states ([`stack_states`][jaxmlp.multi.stack_states]).
        x_train: the training images all models share.
        y_train: their labels.
        epochs: as for [`jaxmlp.fit`][].
        batch_size: as for [`jaxmlp.fit`][].
        validation_data: optional ``(x, y)`` scored after every epoch.
        monitor: the best epoch's rule ([`jaxmlp.best_epoch`][]).
        min_delta: the best epoch's rule ([`jaxmlp.best_epoch`][]).
        on_epoch_end: called as ``on_epoch_end(epoch, records)`` with the epoch's record of every
            model (progress lines).

    Returns:
        A [`StackedFit`][jaxmlp.multi.StackedFit].
    """
    epochs = _validation.check_positive_int("epochs", epochs)
    monitor, min_delta = check_monitor(monitor, min_delta)
    first = first_model(states)
    x_train, y_train, batch_size = check_epoch_arguments(
        first, x_train, y_train, batch_size, None, names=("x_train", "y_train")
    )
    if validation_data is not None:
        validation_data = _validation.check_dataset(
            first.params, *validation_data, "validation images", "validation labels"
        )
    models = count(states)
    start = time.perf_counter()
    if models == 1:
        single = epoch_program.lower(first, x_train, y_train, batch_size, None, 50, None).compile()

        def program(states, x, y):
            state, metrics = single(jax.tree.map(lambda leaf: leaf[0], states), x, y)
            return jax.tree.map(lambda leaf: leaf[None], (state, metrics))

    else:
        program = stacked_epoch_program.lower(states, x_train, y_train, batch_size).compile()
    compile_seconds = time.perf_counter() - start
    histories: list[list[dict[str, Any]]] = [[] for _ in range(models)]
    diverged = np.zeros(models, bool)
    best_states = states
    for epoch in range(1, epochs + 1):
        start = time.perf_counter()
        states, metrics = program(states, x_train, y_train)
        metrics = jax.device_get(metrics)
        seconds = time.perf_counter() - start + (compile_seconds if epoch == 1 else 0.0)
        diverged |= np.asarray(metrics["diverged_at_step"]) >= 0
        scores = evaluate(states, *validation_data) if validation_data is not None else None
        records = []
        for i in range(models):
            record: dict[str, Any] = {
                "epoch": epoch,
                "loss": float(metrics["loss"][i]),
                "train_accuracy": float(metrics["train_accuracy"][i]),
                "seconds": seconds,
            }
            if epoch == 1:
                record["compile_seconds"] = compile_seconds
            if scores is not None:
                record["validation_loss"] = float(scores["loss"][i])
                record["validation_accuracy"] = float(scores["accuracy"][i])
            if diverged[i]:
                record["diverged"] = True
            histories[i].append(record)
            records.append(record)
        improved = np.array(
            [
                not diverged[i]
                and (
                    scores is None
                    or best_epoch(
                        [r for r in histories[i] if not r.get("diverged")],
                        monitor=monitor,
                        min_delta=min_delta,
                    )
                    == epoch
                )
                for i in range(models)
            ]
        )
        best_states = _select(improved, states, best_states)
        if on_epoch_end is not None:
            on_epoch_end(epoch, records)
    return StackedFit(states, best_states, histories)


@jax.jit
def _select(take, new: TrainState, old: TrainState) -> TrainState:
    """Per model, ``new`` where ``take`` (a (models,) bool array), else ``old``."""

    def pick(a, b):
        return jnp.where(take.reshape(take.shape + (1,) * (a.ndim - 1)), a, b)

    return jax.tree.map(pick, new, old)
