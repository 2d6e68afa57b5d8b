"""The train state: everything that changes during training, as one immutable pytree."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import optax
from jaxtyping import Array, Int

from jaxmlp import _validation
from jaxmlp.model import INITS, Params, init_mlp, layer_sizes_of
from jaxmlp.training._options import ModelOptions


@flax.struct.dataclass
class TrainState:
    """Everything that changes during training, as one immutable pytree.

    ``key`` holds raw ``uint32`` key data (``jax.random.key_data``) so that a checkpoint is a
    tree of plain arrays. ``optimizer`` and ``options`` are static: they are part of the
    tree's structure, not its leaves, so ``jax.jit`` compiles once per configuration and
    :func:`jaxmlp.evaluate` of a state scores it the way it was trained.
    """

    params: Params
    opt_state: optax.OptState
    step: Int[Array, ""]
    key: Array
    optimizer: optax.GradientTransformation = flax.struct.field(pytree_node=False)
    options: ModelOptions = flax.struct.field(pytree_node=False)

    @property
    def layer_sizes(self) -> tuple[int, ...]:
        """``(n_inputs, hidden..., n_outputs)`` of the model (per model for a stacked state)."""
        return layer_sizes_of(self.params)


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
    """``state`` must be a :class:`TrainState` whose arrays are alive. ``params_hint`` says what
    to do instead when a parameter list was passed."""
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
    """A fresh train state: parameters from :func:`jaxmlp.init_mlp` (or the given ``params``),
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
