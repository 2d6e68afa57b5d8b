"""Optimizers by name, supplied by optax, and learning-rate schedules.

``optimizer("adam", 1e-3)`` is ``optax.adam(1e-3)``; the table below is the one place where a
name meets its optax constructor and its defaults, so the texts' settings are easy to audit.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
from collections.abc import Callable
from typing import Any

import jax
import optax
from optax import contrib

from jaxmlp import _validation
from jaxmlp._schema import option

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


SCHEDULES = ("constant", "cosine", "warmup_cosine", "exponential", "step", "plateau")


def schedule(
    name: str,
    learning_rate: float,
    total_steps: int,
    *,
    warmup_steps: int = 0,
    final_lr_fraction: float = 0.0,
    decay_rate: float = 0.1,
    boundaries: tuple[float, ...] = (0.5, 0.75),
) -> float | Schedule:
    """A learning-rate schedule over ``total_steps`` optimizer steps.

    ``constant``: the plain number. ``cosine``: cosine decay to ``final_lr_fraction * lr``.
    ``warmup_cosine``: linear warm-up over ``warmup_steps``, then cosine decay.
    ``exponential``: lr * decay_rate ** (step / total_steps).
    ``step``: lr multiplied by 0.1 at each fraction of training in ``boundaries``.
    ``plateau``: the plain number here; the reduction on a plateau of the training loss is a
    transformation chained after the optimizer
    ([`reduce_on_plateau`][jaxmlp.optimizers.reduce_on_plateau]), which
    [`OptimizerSettings.build`][jaxmlp.OptimizerSettings.build] adds.
    """
    _validation.check_choice("schedule", name, SCHEDULES)
    _validation.check_positive("learning_rate", learning_rate)
    _validation.check_positive_int("total_steps", total_steps)
    if name in ("constant", "plateau"):
        return learning_rate
    if name == "cosine":
        return optax.cosine_decay_schedule(learning_rate, total_steps, alpha=final_lr_fraction)
    if name == "warmup_cosine":
        return optax.warmup_cosine_decay_schedule(
            0.0,
            learning_rate,
            max(warmup_steps, 1),
            total_steps,
            learning_rate * final_lr_fraction,
        )
    if name == "exponential":
        return optax.exponential_decay(learning_rate, total_steps, decay_rate)
    return optax.piecewise_constant_schedule(
        learning_rate, {int(fraction * total_steps): 0.1 for fraction in boundaries}
    )


def reduce_on_plateau(
    *, factor: float, patience: int, steps_per_epoch: int
) -> optax.GradientTransformationExtraArgs:
    """``optax.contrib.reduce_on_plateau`` over whole epochs, to chain after an optimizer:
    ``optax.chain(optimizer(...), reduce_on_plateau(...))``.

    It reads each step's training loss (``value=``, which [`jaxmlp.train_step`][] and
    [`jaxmlp.fit`][] pass to the optimizer) and averages it over ``steps_per_epoch`` steps:
    after every epoch, the mean of its step losses L (each the batch's mean loss, the padded
    last batch counting as one) is compared with the best mean so far, L_best. When
    L > L_best * (1 - 1e-4) for ``patience`` epochs in a row (optax's ``rtol``), the scale
    of the updates, and so the learning rate, is multiplied by ``factor``:
    lr_t = lr * factor ** (reductions so far). The scale is part of the optimizer state, so a
    checkpoint keeps it.

    The losses are those of the training batches, not of validation data; under DP-SGD they
    are not private, so a learning rate decided by them would spend privacy the accountant
    does not count ([`jaxmlp.fit`][] refuses it with noise).

    Args:
        factor: the multiplier of the learning rate on a plateau, in (0, 1).
        patience: epochs without an improvement before a reduction, >= 1.
        steps_per_epoch: optimizer steps per epoch ([`jaxmlp.steps_per_epoch`][]).
    """
    if not 0 < factor < 1:
        raise ValueError(f"plateau_factor={factor!r} is invalid; expected 0 < plateau_factor < 1")
    _validation.check_positive_int("plateau_patience", patience)
    _validation.check_positive_int("steps_per_epoch", steps_per_epoch)
    return contrib.reduce_on_plateau(
        factor=factor, patience=patience, accumulation_size=steps_per_epoch
    )


def plateau_scale(opt_state) -> float | None:
    """The learning-rate multiplier a [`reduce_on_plateau`][jaxmlp.optimizers.reduce_on_plateau] in
    ``opt_state`` has reached (1.0 until its first reduction), or None if it holds none."""
    found: list[Any] = [  # a scalar array each
        node.scale
        for node in jax.tree.leaves(
            opt_state, is_leaf=lambda node: isinstance(node, contrib.ReduceLROnPlateauState)
        )
        if isinstance(node, contrib.ReduceLROnPlateauState)
    ]
    return float(found[0]) if found else None


HYPERPARAMETERS = (
    "momentum",
    "b1",
    "b2",
    "eps",
    "decay",
    "initial_accumulator_value",
    "weight_decay",
)
"""The optax keyword arguments [`OptimizerSettings`][jaxmlp.OptimizerSettings] can set (each
optimizer takes some)."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class OptimizerSettings:
    """An optimizer and its learning-rate schedule by name: what a run configuration or a sweep
    stores; [`build`][jaxmlp.OptimizerSettings.build] turns it into the optax transformation for a
    given number of steps.

    The fields are the arguments of [`optimizer`][jaxmlp.optimizer] and
    [`schedule`][jaxmlp.schedule] under their optax names (unset hyperparameters keep optax's
    defaults), and the options of ``jaxmlp train``.
    """

    optimizer: str = option("adam", "optimizer", group="opt", choices=OPTIMIZERS)
    learning_rate: float = option(1e-3, "peak learning rate", group="opt", metavar="LR")
    momentum: float | None = option(
        None, "momentum (sgd, rmsprop; momentum/nesterov use 0.9)", group="opt", metavar="MU"
    )
    b1: float | None = option(
        None, "first-moment decay (adam family; optax default 0.9)", group="opt", metavar="B1"
    )
    b2: float | None = option(
        None, "second-moment decay (adam family; optax default 0.999)", group="opt", metavar="B2"
    )
    eps: float | None = option(
        None, "epsilon of adaptive optimizers (optax default)", group="opt", metavar="EPS"
    )
    decay: float | None = option(
        None, "rmsprop's squared-gradient decay rho (optax default 0.9)", group="opt", metavar="RHO"
    )
    initial_accumulator_value: float | None = option(
        None, "adagrad's initial accumulator (optax default 0.1)", group="opt", metavar="H0"
    )
    weight_decay: float | None = option(
        None, "decoupled weight decay (adamw, lamb)", group="opt", metavar="WD"
    )
    schedule: str = option(
        "constant", "learning-rate schedule over all steps", group="opt", choices=SCHEDULES
    )
    warmup_steps: int = option(
        0, "linear warm-up steps of --schedule warmup_cosine", group="opt", metavar="STEPS"
    )
    final_lr_fraction: float = option(
        0.0,
        "final learning rate of the cosine schedules, as a fraction of the peak",
        group="opt",
        metavar="F",
    )
    decay_rate: float = option(
        0.1, "total decay factor of --schedule exponential", group="opt", metavar="F"
    )
    plateau_factor: float = option(
        0.1,
        "--schedule plateau: multiply the learning rate by F when the epoch's mean training "
        "loss has not improved for --plateau-patience epochs",
        group="opt",
        metavar="F",
    )
    plateau_patience: int = option(
        2,
        "--schedule plateau: epochs without improvement before a reduction",
        group="opt",
        metavar="N",
    )

    def __post_init__(self):
        _validation.check_choice("optimizer", self.optimizer, OPTIMIZERS)
        _validation.check_positive("learning_rate", self.learning_rate)
        _validation.check_choice("schedule", self.schedule, SCHEDULES)
        for name in HYPERPARAMETERS:
            value = getattr(self, name)
            if value is not None:
                _validation.check_non_negative(name, value)
        if isinstance(self.warmup_steps, bool) or not isinstance(self.warmup_steps, int):
            raise TypeError(f"warmup_steps must be an int, got {self.warmup_steps!r}")
        if self.warmup_steps < 0:
            raise ValueError(f"warmup_steps={self.warmup_steps} is invalid; expected >= 0")
        _validation.check_non_negative("final_lr_fraction", self.final_lr_fraction)
        _validation.check_positive("decay_rate", self.decay_rate)
        if isinstance(self.plateau_patience, bool) or not isinstance(self.plateau_patience, int):
            raise TypeError(f"plateau_patience must be an int, got {self.plateau_patience!r}")
        reduce_on_plateau(
            factor=self.plateau_factor, patience=self.plateau_patience, steps_per_epoch=1
        )
        # Hyperparameters the optimizer does not take are refused now, not at build time.
        optimizer(self.optimizer, self.learning_rate, **self.hyperparameters())

    def hyperparameters(self) -> dict[str, float]:
        """The optax keyword arguments set here (unset ones keep optax's defaults)."""
        return {
            name: getattr(self, name) for name in HYPERPARAMETERS if getattr(self, name) is not None
        }

    def build(
        self, total_steps: int, *, steps_per_epoch: int | None = None
    ) -> optax.GradientTransformation:
        """The optax optimizer, its learning rate following the schedule over ``total_steps``
        optimizer steps (``epochs * jaxmlp.steps_per_epoch(n, batch_size, batch_sampling)`` for a
        whole run). ``schedule="plateau"`` chains
        [`reduce_on_plateau`][jaxmlp.optimizers.reduce_on_plateau] after it, which needs
        ``steps_per_epoch``."""
        learning_rate = self.learning_rate_schedule(total_steps)
        built = optimizer(self.optimizer, learning_rate, **self.hyperparameters())
        if self.schedule != "plateau":
            return built
        if steps_per_epoch is None:
            raise TypeError(
                "schedule='plateau' averages the training loss over each epoch: build(..., "
                "steps_per_epoch=jaxmlp.steps_per_epoch(n, batch_size)) needs the steps per epoch"
            )
        plateau = reduce_on_plateau(
            factor=self.plateau_factor,
            patience=self.plateau_patience,
            steps_per_epoch=steps_per_epoch,
        )
        return optax.chain(built, plateau)

    def learning_rate_schedule(self, total_steps: int) -> float | Schedule:
        """The learning rate [`build`][jaxmlp.OptimizerSettings.build] gives the optimizer:
        [`schedule`][jaxmlp.schedule] over ``total_steps`` steps (a plain number for
        ``constant``)."""
        return schedule(
            self.schedule,
            self.learning_rate,
            total_steps,
            warmup_steps=self.warmup_steps,
            final_lr_fraction=self.final_lr_fraction,
            decay_rate=self.decay_rate,
        )
