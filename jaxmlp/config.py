"""The configuration of a training run: one frozen dataclass, loadable from TOML or JSON.

Every field is a command-line option of ``jaxmlp train`` (``hidden`` is ``--hidden``,
``learning_rate`` is ``--learning-rate``) and a key of a config file::

    # run.toml
    hidden = [512, 256]
    dropout = 0.2
    optimizer = "adam"
    learning_rate = 1e-3

The run directory keeps the effective configuration as ``config.json``, which is itself a valid
config file. Values are checked here, at the boundary, so that a wrong key or type is reported
in one line before any data is loaded or anything is compiled.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import tomllib
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from jaxmlp.data import DATASETS
from jaxmlp.model import ACTIVATIONS, INITS
from jaxmlp.optimizers import OPTIMIZERS, SCHEDULES

NORMALIZATIONS = ("unit", "standard", "symmetric", "none")
DTYPES = ("float32", "float64")
OUTPUTS = ("softmax", "sigmoid")
GRADIENTS = ("autodiff", "backprop")

# Config field -> the optax keyword it is passed as (None means "optax's default").
OPTIMIZER_HYPERPARAMETERS = {
    "momentum": "momentum",
    "beta1": "b1",
    "beta2": "b2",
    "eps": "eps",
    "decay": "decay",
    "initial_accumulator": "initial_accumulator_value",
    "weight_decay": "weight_decay",
}

# Fields that change where things are or how many are kept, never what is computed: a run may
# be continued with different values of these.
NON_RESULT_FIELDS = frozenset({"data_dir", "keep_checkpoints"})


class ConfigError(ValueError):
    """A configuration value, key or file is invalid."""


def _option(
    default: Any,
    help: str,
    *,
    group: str,
    choices: tuple[str, ...] | None = None,
    metavar: str | None = None,
) -> Any:
    return dataclasses.field(
        default=default,
        metadata={"help": help, "group": group, "choices": choices, "metavar": metavar},
    )


@dataclasses.dataclass(frozen=True, kw_only=True)
class RunConfig:
    """Everything that decides what ``jaxmlp train`` computes.

    The defaults are the recipe of the default model: a 784-512-256-10 ReLU network with
    dropout 0.2 on the hidden layers, Adam (lr 1e-3) with cosine decay to 0 over 15 epochs of
    batch 128, on unit-scaled MNIST with the last 5000 training images held out for validation.
    """

    # Data
    dataset: str = _option("mnist", "dataset", group="data", choices=tuple(DATASETS))
    data_dir: str | None = _option(
        None,
        "extra data root searched first (<root>/<dataset>/<official files>)",
        group="data",
        metavar="DIR",
    )
    normalize: str = _option(
        "unit",
        "pixel scaling: unit x/255, standard (x/255-mean)/std, symmetric [-1, 1], none 0..255",
        group="data",
        choices=NORMALIZATIONS,
    )
    validation: int = _option(
        5000,
        "training examples held out for validation (the last ones); 0 for none",
        group="data",
        metavar="N",
    )
    train_limit: int | None = _option(
        None, "train on the first N training examples only", group="data", metavar="N"
    )
    test_limit: int | None = _option(
        None, "score the first N test examples only", group="data", metavar="N"
    )
    # Model
    hidden: tuple[int, ...] = _option(
        (512, 256), "hidden layer sizes (none: softmax regression)", group="model", metavar="N"
    )
    activation: str = _option(
        "relu", "hidden activation", group="model", choices=tuple(ACTIVATIONS)
    )
    output: str = _option(
        "softmax",
        "output layer and loss: softmax + cross-entropy, or sigmoid + logistic cost",
        group="model",
        choices=OUTPUTS,
    )
    init: str = _option(
        "he", "weight initialisation (normal: N(0, init_scale^2))", group="model", choices=INITS
    )
    init_scale: float = _option(
        0.01, "standard deviation of --init normal", group="model", metavar="STD"
    )
    dtype: str = _option("float32", "parameter and data dtype", group="model", choices=DTYPES)
    # Regularisation
    dropout: float = _option(
        0.2, "dropout rate of each hidden layer's output", group="reg", metavar="RATE"
    )
    input_dropout: float = _option(
        0.0, "dropout rate of the input pixels", group="reg", metavar="RATE"
    )
    l2: float = _option(
        0.0, "coefficient of 0.5 * sum(w^2) added to the loss", group="reg", metavar="LAMBDA"
    )
    max_norm: float | None = _option(
        None, "cap on each unit's incoming weight norm", group="reg", metavar="C"
    )
    augment_shift: int = _option(
        0,
        "random translation of training images by up to this many pixels",
        group="reg",
        metavar="PIXELS",
    )
    augment_rotate: float = _option(
        0.0,
        "random rotation of training images by up to this many degrees",
        group="reg",
        metavar="DEGREES",
    )
    augment_scale: float = _option(
        0.0,
        "random zoom of training images by a factor in [1 - S, 1 + S]",
        group="reg",
        metavar="S",
    )
    adversarial_epsilon: float = _option(
        0.0,
        "adversarial training: also train on inputs moved by EPS * sign(input gradient)",
        group="reg",
        metavar="EPS",
    )
    adversarial_weight: float = _option(
        0.5, "weight of the adversarial loss, in (0, 1]", group="reg", metavar="W"
    )
    vat_epsilon: float = _option(
        0.0,
        "virtual adversarial training: L2 radius of the perturbation (e.g. 2.0 for /255 pixels)",
        group="reg",
        metavar="EPS",
    )
    vat_weight: float = _option(
        1.0, "weight of the virtual adversarial loss", group="reg", metavar="W"
    )
    # Optimisation
    optimizer: str = _option("adam", "optimizer", group="opt", choices=OPTIMIZERS)
    learning_rate: float = _option(1e-3, "peak learning rate", group="opt", metavar="LR")
    momentum: float | None = _option(
        None, "momentum (sgd, rmsprop; momentum/nesterov use 0.9)", group="opt", metavar="MU"
    )
    beta1: float | None = _option(
        None, "first-moment decay b1 (adam family; optax default 0.9)", group="opt", metavar="B1"
    )
    beta2: float | None = _option(
        None, "second-moment decay b2 (adam family; optax default 0.999)", group="opt", metavar="B2"
    )
    eps: float | None = _option(
        None, "epsilon of adaptive optimizers (optax default)", group="opt", metavar="EPS"
    )
    decay: float | None = _option(
        None, "rmsprop's squared-gradient decay rho (optax default 0.9)", group="opt", metavar="RHO"
    )
    initial_accumulator: float | None = _option(
        None, "adagrad's initial accumulator (optax default 0.1)", group="opt", metavar="H0"
    )
    weight_decay: float | None = _option(
        None, "decoupled weight decay (adamw, lamb)", group="opt", metavar="WD"
    )
    schedule: str = _option(
        "cosine", "learning-rate schedule over all steps", group="opt", choices=SCHEDULES
    )
    warmup_steps: int = _option(
        0, "linear warm-up steps of --schedule warmup_cosine", group="opt", metavar="STEPS"
    )
    final_lr_fraction: float = _option(
        0.0,
        "final learning rate of the cosine schedules, as a fraction of the peak",
        group="opt",
        metavar="F",
    )
    decay_rate: float = _option(
        0.1, "total decay factor of --schedule exponential", group="opt", metavar="F"
    )
    batch_size: int = _option(128, "examples per optimizer step", group="opt", metavar="N")
    epochs: int = _option(15, "passes over the training set", group="opt", metavar="N")
    gradient: str = _option(
        "autodiff",
        "gradient: jax autodiff or the hand-derived backprop",
        group="opt",
        choices=GRADIENTS,
    )
    seed: int = _option(
        0, "seed of the initial parameters, data order and dropout", group="opt", metavar="SEED"
    )
    # Run
    keep_checkpoints: int = _option(
        3, "number of most recent epoch checkpoints kept", group="run", metavar="N"
    )

    def __post_init__(self):
        _check_values(self)

    @property
    def layer_sizes(self) -> tuple[int, ...]:
        """(784, *hidden, 10): MNIST and Fashion-MNIST both have 784 pixels and 10 classes."""
        from jaxmlp.data import NUM_CLASSES, NUM_PIXELS

        return (NUM_PIXELS, *self.hidden, NUM_CLASSES)

    def optimizer_hyperparameters(self) -> dict[str, float]:
        """The optax keyword arguments set in this config (unset ones keep optax's defaults)."""
        return {
            optax_name: getattr(self, name)
            for name, optax_name in OPTIMIZER_HYPERPARAMETERS.items()
            if getattr(self, name) is not None
        }

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict with every field (tuples as lists)."""
        out = dataclasses.asdict(self)
        out["hidden"] = list(self.hidden)
        return out

    def result_fields(self) -> dict[str, Any]:
        """The fields that decide the results (everything except locations and retention)."""
        return {k: v for k, v in self.to_dict().items() if k not in NON_RESULT_FIELDS}


FIELDS: dict[str, dataclasses.Field] = {f.name: f for f in dataclasses.fields(RunConfig)}
_TYPES: dict[str, Any] = typing.get_type_hints(RunConfig)


def field_kind(name: str) -> tuple[type, bool]:
    """(base type, optional) of a field: e.g. ``(float, True)`` for ``float | None``;
    ``tuple`` stands for a tuple of ints."""
    hint = _TYPES[name]
    args = typing.get_args(hint)
    optional = type(None) in args
    if optional:
        hint = next(a for a in args if a is not type(None))
    base = typing.get_origin(hint) or hint
    return base, optional


def _coerce(name: str, value: Any) -> Any:
    """``value`` converted to field ``name``'s type, or ConfigError naming what was expected."""
    base, optional = field_kind(name)
    if value is None:
        if optional:
            return None
        raise ConfigError(f"{name} must not be null")
    if base is tuple:
        if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
            raise ConfigError(f"{name} must be a list of integers, got {value!r}")
        return tuple(_coerce_int(f"{name}[{i}]", v) for i, v in enumerate(value))
    if base is int:
        return _coerce_int(name, value)
    if base is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{name} must be a number, got {value!r}")
        if not math.isfinite(value):
            raise ConfigError(f"{name} must be finite, got {value!r}")
        return float(value)
    if base is str:
        if not isinstance(value, str):
            raise ConfigError(f"{name} must be a string, got {value!r}")
        return value
    raise AssertionError(f"unhandled field type for {name}")  # pragma: no cover


def _coerce_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{name} must be an integer, got {value!r}")
    if isinstance(value, float):
        if not value.is_integer():
            raise ConfigError(f"{name} must be an integer, got {value!r}")
        value = int(value)
    return value


def _check_values(config: RunConfig) -> None:
    """Ranges and choices; raises ConfigError naming the field."""
    for name, f in FIELDS.items():
        value = getattr(config, name)
        # Coercion is idempotent, so this also type-checks a RunConfig built directly.
        object.__setattr__(config, name, _coerce(name, value))
        choices = f.metadata["choices"]
        if choices is not None and value not in choices:
            raise ConfigError(
                f"{name}={value!r} is not supported; expected one of {', '.join(choices)}"
            )

    def at_least(name: str, low: float, *, strict: bool = False) -> None:
        value = getattr(config, name)
        if value is None:
            return
        if value < low or (strict and value == low):
            relation = ">" if strict else ">="
            raise ConfigError(f"{name}={value!r} is invalid; expected {name} {relation} {low}")

    for name in ("epochs", "batch_size", "keep_checkpoints", "train_limit", "test_limit"):
        at_least(name, 1)
    for name in (
        "validation",
        "warmup_steps",
        "augment_shift",
        "augment_rotate",
        "augment_scale",
        "adversarial_epsilon",
        "vat_epsilon",
        "l2",
        "init_scale",
        "final_lr_fraction",
        "seed",
    ):
        at_least(name, 0)
    for name in ("learning_rate", "max_norm", "decay_rate", "init_scale", "vat_weight"):
        at_least(name, 0, strict=True)
    if config.augment_rotate > 180:
        raise ConfigError(
            f"augment_rotate={config.augment_rotate!r} is invalid; expected degrees in [0, 180]"
        )
    if config.augment_scale >= 1:
        raise ConfigError(
            f"augment_scale={config.augment_scale!r} is invalid; expected a fraction in [0, 1)"
        )
    if not 0 < config.adversarial_weight <= 1:
        raise ConfigError(
            f"adversarial_weight={config.adversarial_weight!r} is invalid; expected a weight "
            "in (0, 1]"
        )
    for name in ("adversarial_epsilon", "vat_epsilon"):
        if getattr(config, name) and config.gradient != "autodiff":
            raise ConfigError(
                f"{name}={getattr(config, name)!r} needs gradient=autodiff (the input gradient "
                f"comes from jax.grad); got gradient={config.gradient}"
            )
    if config.vat_epsilon and config.output != "softmax":
        raise ConfigError(
            f"vat_epsilon={config.vat_epsilon!r} needs output=softmax (it compares softmax "
            f"distributions); got output={config.output}"
        )
    for name in ("dropout", "input_dropout"):
        value = getattr(config, name)
        if not 0.0 <= value < 1.0:
            raise ConfigError(f"{name}={value!r} is outside [0, 1); expected a rate 0 <= r < 1")
    for size in config.hidden:
        if size < 1:
            raise ConfigError(
                f"hidden={list(config.hidden)} has a size < 1; every hidden layer "
                "needs at least one unit"
            )


def normalize_key(key: str) -> str:
    """Config keys may be written as on the command line (``learning-rate``)."""
    return key.replace("-", "_")


def from_mapping(
    values: Mapping[str, Any], *, base: RunConfig | None = None, source: str = "config"
) -> RunConfig:
    """``base`` (default: the defaults) with ``values`` applied; unknown keys are an error."""
    base = base if base is not None else RunConfig()
    prefix = f"{source}: " if source else ""
    updates = {}
    for key, value in values.items():
        name = normalize_key(str(key))
        if name not in FIELDS:
            raise ConfigError(f"{prefix}unknown key {key!r}; valid keys are {', '.join(FIELDS)}")
        try:
            updates[name] = _coerce(name, value)
        except ConfigError as e:
            raise ConfigError(f"{prefix}{e}") from None
    try:
        return dataclasses.replace(base, **updates)
    except ConfigError as e:
        raise ConfigError(f"{prefix}{e}") from None


def read_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The key/value table of a ``.toml`` or ``.json`` config file (not yet checked)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".toml", ".json"):
        raise ConfigError(f"{path}: config files must end in .toml or .json")
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: cannot read config file ({e})") from None
    try:
        values = tomllib.loads(text) if suffix == ".toml" else json.loads(text)
    except (tomllib.TOMLDecodeError, json.JSONDecodeError) as e:
        raise ConfigError(f"{path}: invalid {suffix[1:].upper()} ({e})") from None
    if not isinstance(values, dict):
        raise ConfigError(f"{path}: expected a table of keys and values at the top level")
    return values


def load(path: str | os.PathLike[str], *, base: RunConfig | None = None) -> RunConfig:
    """A RunConfig from a ``.toml`` or ``.json`` file (missing keys keep ``base``'s values)."""
    return from_mapping(read_file(path), base=base, source=str(path))
