"""The train state: everything that changes during training, as one immutable pytree."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import optax
from jaxtyping import Array, Int

from jaxmlp import _validation
from jaxmlp.model import INITS, DropoutRate, Params, init_mlp, layer_sizes_of
from jaxmlp.training._options import ModelOptions


class TrainState(flax.struct.PyTreeNode):
    """Everything that changes during training, as one immutable pytree.

    ``key`` holds raw ``uint32`` key data (``jax.random.key_data``) so that a checkpoint is a
    tree of plain arrays. ``optimizer`` and ``options`` are static: they are part of the
    tree's structure, not its leaves, so ``jax.jit`` compiles once per configuration and
    [`jaxmlp.evaluate`][] of a state scores it the way it was trained.

    ``hyperparams`` (empty by default) holds options as scalar arrays, leaves of the tree, that
    the training step uses instead of the static ones (see `step_options` and
    `TRACED_OPTIONS`): stacked models ([`jaxmlp.multi`][]) can then each have their own
    L2 coefficient or dropout rate in one compiled program.
    """

    params: Params
    opt_state: optax.OptState
    step: Int[Array, ""]
    key: Array
    optimizer: optax.GradientTransformation = flax.struct.field(pytree_node=False)
    options: ModelOptions = flax.struct.field(pytree_node=False)
    hyperparams: dict[str, Array] = flax.struct.field(default_factory=dict)

    @property
    def layer_sizes(self) -> tuple[int, ...]:
        """``(n_inputs, hidden..., n_outputs)`` of the model (per model for a stacked state)."""
        return layer_sizes_of(self.params)


TRACED_OPTIONS = ("l2", "dropout_rate", "input_dropout_rate")
"""The [`ModelOptions`][jaxmlp.ModelOptions] a train state may hold as arrays in ``hyperparams``."""


def step_options(state: TrainState) -> ModelOptions:
    """The options a training step of ``state`` uses: its static options with the values of
    ``state.hyperparams`` (arrays, traced inside the step) in place of theirs.

    The static options decide which terms the step computes: a dropout mask is drawn only where
    the static rate is nonzero, so a state whose traced ``dropout_rate`` may be nonzero carries a
    nonzero static one (`with_hyperparams` arranges it).
    """
    if not state.hyperparams:
        return state.options
    return dataclasses.replace(state.options, **state.hyperparams)


def with_hyperparams(state: TrainState, **values: Any) -> TrainState:
    """``state`` with the options ``values`` (names from `TRACED_OPTIONS`) held as traced
    arrays in ``state.hyperparams``, so that stacked states may differ in them.

    The step computes exactly what it would with the same values as static options (a rate of
    0 draws an all-ones mask), at the cost of always computing the term. The static options
    are set so that every term is drawn: a dropout rate of 0 becomes a nonzero placeholder
    (never used as a rate) so that steps draw dropout keys; the static value of an option held
    in ``hyperparams`` means nothing else.

    Raises:
        ValueError: a name that is not in `TRACED_OPTIONS`, or a value outside the option's
            range.
    """
    check_state(state)
    unknown = sorted(set(values) - set(TRACED_OPTIONS))
    if unknown:
        raise ValueError(
            f"with_hyperparams got {unknown}; the options a state can hold as arrays are "
            f"{', '.join(TRACED_OPTIONS)}"
        )
    # Build the options once with the plain numbers: their checks run here, at the boundary.
    dataclasses.replace(state.options, **{k: float(v) for k, v in values.items()})
    dtype = state.params[0]["w"].dtype
    placeholders = {
        name: 0.5 for name in values if name != "l2" and not getattr(state.options, name)
    }
    return state.replace(
        options=dataclasses.replace(state.options, **placeholders),
        hyperparams={
            **state.hyperparams,
            **{
                name: jnp.asarray(value, dtype) if name == "l2" else DropoutRate.of(value, dtype)
                for name, value in values.items()
            },
        },
    )


def key_data(key) -> Array:
    """Raw uint32 key data of a typed key (or of raw key data)."""
    if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        return jax.random.key_data(key)
    return jnp.asarray(key, jnp.uint32)


def check_optimizer(optimizer: Any) -> None:
    if not isinstance(optimizer, optax.GradientTransformation):
        raise TypeError(
            f"optimizer must be an optax.GradientTransformation (e.g. jaxmlp.optimizer('adam', "
            f"1e-3)), got {type(optimizer).__name__}"
        )


def check_state(state: Any, argument: str = "state", *, params_hint: str = "") -> None:
    """``state`` must be a [`TrainState`][jaxmlp.TrainState] whose arrays are alive. ``params_hint``
    says what to do instead when a parameter list was passed."""
    if not isinstance(state, TrainState):
        hint = (
            f"; for parameters alone {params_hint}"
            if params_hint and isinstance(state, (list, tuple))
            else ""
        )
        raise TypeError(
            f"{argument} must be a jaxmlp.TrainState, such as "
            "jaxmlp.create_train_state(jax.random.key(0), layer_sizes, optimizer, "
            f"options=options), got {type(state).__name__}{hint}"
        )
    _validation.check_params(state.params)
    _validation.check_alive(state, argument)


def create_train_state(
    key,
    layer_sizes: Sequence[int],
    optimizer: optax.GradientTransformation,
    *,
    init: str = "he",
    init_scale: float = 0.01,
    dtype: Any = jnp.float32,
    options: ModelOptions | None = None,
    params: Params | None = None,
) -> TrainState:
    """A fresh train state: parameters from [`jaxmlp.init_mlp`][] (or the given ``params``),
    the optimizer's initial state, step 0 and a key for shuffling and dropout split from
    ``key``.

    Given ``params`` are shared, not copied: nothing in jaxmlp donates or overwrites them, so
    the caller's arrays stay valid (one initialisation can start several runs). ``layer_sizes``
    must then match them.
    """
    check_optimizer(optimizer)
    _validation.check_key("key", key)
    _validation.check_choice("init", init, INITS)
    if options is not None and not isinstance(options, ModelOptions):
        raise TypeError(f"options must be a jaxmlp.ModelOptions, got {type(options).__name__}")
    init_key, train_key = jax.random.split(key)
    if params is None:
        params = init_mlp(init_key, layer_sizes, init=init, init_scale=init_scale, dtype=dtype)
    else:
        _validation.check_params(params)
        sizes = _validation.check_layer_sizes(layer_sizes)
        if sizes != layer_sizes_of(params):
            raise ValueError(
                f"layer_sizes={sizes} but the given params are a "
                f"{'-'.join(map(str, layer_sizes_of(params)))} model; pass matching sizes"
            )
        params = [{"w": jnp.asarray(p["w"]), "b": jnp.asarray(p["b"])} for p in params]
    return TrainState(
        params=params,
        opt_state=optimizer.init(params),
        step=jnp.zeros((), jnp.int32),
        key=key_data(train_key),
        optimizer=optimizer,
        options=options if options is not None else ModelOptions(),
    )
