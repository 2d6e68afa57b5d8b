"""Optimizers by name, supplied by optax, and learning-rate schedules.

``optimizer("adam", 1e-3)`` is ``optax.adam(1e-3)``; the table below is the one place where a
name meets its optax constructor and its defaults, so the texts' settings are easy to audit.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from typing import Any

import optax

from jaxmlp import _validation

# name -> (optax constructor, defaults the name implies)
_OPTIMIZERS: dict[str, tuple[Callable[..., optax.GradientTransformation], dict[str, Any]]] = {
    "sgd": (optax.sgd, {}),
    "momentum": (optax.sgd, {"momentum": 0.9}),
    "nesterov": (optax.sgd, {"momentum": 0.9, "nesterov": True}),
    "adagrad": (optax.adagrad, {}),
    "rmsprop": (optax.rmsprop, {}),
    "adam": (optax.adam, {}),
    "adamw": (optax.adamw, {}),
    "nadam": (optax.nadam, {}),
    "lamb": (optax.lamb, {}),
}
OPTIMIZERS = tuple(_OPTIMIZERS)

Schedule = Callable[[Any], Any]


def optimizer(
    name: str, learning_rate: float | Schedule, **hyperparameters: Any
) -> optax.GradientTransformation:
    """An optax optimizer by name.

    Args:
      name: one of ``sgd``, ``momentum`` (heavy ball, momentum 0.9), ``nesterov``, ``adagrad``,
        ``rmsprop``, ``adam``, ``adamw``, ``nadam``, ``lamb``.
      learning_rate: a positive number or an optax schedule (a function of the step count).
      **hyperparameters: passed to the optax constructor, e.g. ``momentum=0.9``, ``b1=0.9``,
        ``eps=1e-7``, ``initial_accumulator_value=0.0``, ``weight_decay=1e-4``.

    Update rules (optax's, with g the gradient and lr the learning rate):
      sgd w -= lr g; momentum v = mu v + g, w -= lr v; adagrad h += g^2, w -= lr g / sqrt(h + eps)
      (h starts at ``initial_accumulator_value`` = 0.1); rmsprop n = rho n + (1 - rho) g^2,
      w -= lr g / sqrt(n + eps); adam with bias-corrected moments and eps outside the root.
    """
    _validation.check_choice("optimizer", name, OPTIMIZERS)
    if not callable(learning_rate):
        _validation.check_positive("learning_rate", learning_rate)
    constructor, implied = _OPTIMIZERS[name]
    accepted = set(inspect.signature(constructor).parameters) - {"learning_rate"}
    unknown = sorted(set(hyperparameters) - accepted)
    if unknown:
        raise ValueError(
            f"optimizer {name!r} does not take {', '.join(unknown)}; "
            f"it accepts {', '.join(sorted(accepted))}"
        )
    for key, value in hyperparameters.items():
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"optimizer hyperparameter {key}={value!r} must be finite")
    return constructor(learning_rate=learning_rate, **{**implied, **hyperparameters})


SCHEDULES = ("constant", "cosine", "warmup_cosine", "exponential", "step")


def schedule(
    name: str,
    learning_rate: float,
    total_steps: int,
    *,
    warmup_steps: int = 0,
    final_fraction: float = 0.0,
    decay_rate: float = 0.1,
    boundaries: tuple[float, ...] = (0.5, 0.75),
) -> float | Schedule:
    """A learning-rate schedule over ``total_steps`` optimizer steps.

    ``constant``: the plain number. ``cosine``: cosine decay to ``final_fraction * lr``.
    ``warmup_cosine``: linear warm-up over ``warmup_steps``, then cosine decay.
    ``exponential``: lr * decay_rate ** (step / total_steps).
    ``step``: lr multiplied by 0.1 at each fraction of training in ``boundaries``.
    """
    _validation.check_choice("schedule", name, SCHEDULES)
    _validation.check_positive("learning_rate", learning_rate)
    _validation.check_positive_int("total_steps", total_steps)
    if name == "constant":
        return learning_rate
    if name == "cosine":
        return optax.cosine_decay_schedule(learning_rate, total_steps, alpha=final_fraction)
    if name == "warmup_cosine":
        return optax.warmup_cosine_decay_schedule(
            0.0, learning_rate, max(warmup_steps, 1), total_steps, learning_rate * final_fraction
        )
    if name == "exponential":
        return optax.exponential_decay(learning_rate, total_steps, decay_rate)
    return optax.piecewise_constant_schedule(
        learning_rate, {int(fraction * total_steps): 0.1 for fraction in boundaries}
    )
