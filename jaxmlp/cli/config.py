"""The configuration of a ``jaxmlp train`` run: one frozen dataclass, loadable from TOML or JSON.

A run is data and architecture (its own fields), what each step computes (a
[`jaxmlp.ModelOptions`][]), the optimizer and its schedule (a
[`jaxmlp.OptimizerSettings`][]), and the loop (batch size, epochs, seed). Files, flags and the
run directory's ``config.json`` use one flat set of keys, the library's own names::

    # run.toml
    hidden = [512, 256]
    dropout_rate = 0.2
    optimizer = "adam"
    learning_rate = 1e-3

Each key is also a flag of ``jaxmlp train`` (``learning_rate`` is ``--learning-rate``; a file may
spell it either way). Values are checked here, at the boundary, by the rules of the classes that
own them, so a wrong key, type or combination is reported in one line before any data is loaded
or anything is compiled.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import os
import tomllib
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from jaxmlp._schema import option
from jaxmlp.data import DATASETS, NORMALIZATIONS, NUM_CLASSES, NUM_PIXELS
from jaxmlp.model import INITS
from jaxmlp.optimizers import OptimizerSettings
from jaxmlp.privacy import ACCOUNTANTS
from jaxmlp.training import MONITORS, ModelOptions

DTYPES = ("float32", "float64")

# Fields that change where things are or how many are kept, never what is computed: a run may
# be continued with different values of these.
NON_RESULT_FIELDS = frozenset({"data_dir", "keep_checkpoints", "log_every_steps"})

# Fields that decide how long a run trains and which of its epochs is the best, never what an
# epoch computes: ``--resume`` may change them.
RESUMABLE_FIELDS = frozenset({"epochs", "early_stopping_patience", "monitor", "min_delta"})


class ConfigError(ValueError):
    """A configuration value, key or file is invalid."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class RunConfig:
    """Everything that decides what ``jaxmlp train`` computes.

    The defaults are the recipe of the default model: a 784-512-256-10 ReLU network with
    dropout 0.2 on the hidden layers, Adam (lr 1e-3) with cosine decay to 0 over 15 epochs of
    batch 128, on unit-scaled MNIST with the last 5000 training images held out for validation.
    The fields of ``model`` and ``optimization`` read as the config's own (``config.dropout_rate``
    is ``config.model.dropout_rate``).
    """

    # Data
    dataset: str = option("mnist", "dataset", group="data", choices=tuple(DATASETS))
    data_dir: str | None = option(
        None,
        "extra data root searched first (<root>/<dataset>/<official files>)",
        group="data",
        metavar="DIR",
    )
    normalize: str = option(
        "unit",
        "pixel scaling: unit x/255, standard (x/255-mean)/std, symmetric [-1, 1], none 0..255",
        group="data",
        choices=NORMALIZATIONS,
    )
    validation: int = option(
        5000,
        "training examples held out for validation (the last ones); 0 for none",
        group="data",
        metavar="N",
    )
    train_limit: int | None = option(
        None, "train on the first N training examples only", group="data", metavar="N"
    )
    test_limit: int | None = option(
        None, "score the first N test examples only", group="data", metavar="N"
    )
    # Architecture
    hidden: tuple[int, ...] = option(
        (512, 256), "hidden layer sizes (none: softmax regression)", group="model", metavar="N"
    )
    init: str = option(
        "he", "weight initialisation (normal: N(0, init_scale^2))", group="model", choices=INITS
    )
    init_scale: float = option(
        0.01, "standard deviation of --init normal", group="model", metavar="STD"
    )
    dtype: str = option("float32", "parameter and data dtype", group="model", choices=DTYPES)
    # What a step computes, and the optimizer: their own classes, with the run's defaults.
    model: ModelOptions = dataclasses.field(default=ModelOptions(dropout_rate=0.2))
    optimization: OptimizerSettings = dataclasses.field(
        default=OptimizerSettings(schedule="cosine")
    )
    # The loop
    batch_size: int = option(128, "examples per optimizer step", group="opt", metavar="N")
    epochs: int = option(15, "passes over the training set", group="opt", metavar="N")
    seed: int = option(
        0, "seed of the initial parameters, data order and dropout", group="opt", metavar="SEED"
    )
    # Privacy accounting (the DP-SGD step's own options are ModelOptions')
    dp_delta: float = option(
        1e-5, "DP-SGD: the delta at which epsilon is reported", group="privacy", metavar="DELTA"
    )
    dp_target_epsilon: float | None = option(
        None,
        "DP-SGD: calibrate --dp-noise-multiplier so that the whole run spends this epsilon",
        group="privacy",
        metavar="EPS",
    )
    dp_accountant: str = option(
        "rdp", "DP-SGD: privacy accountant (dp-accounting)", group="privacy", choices=ACCOUNTANTS
    )
    # Early stopping and the best epoch
    early_stopping_patience: int | None = option(
        None,
        "stop after N epochs in a row without an improvement of --monitor (none: train all "
        "--epochs); needs validation data",
        group="stop",
        metavar="N",
    )
    monitor: str = option(
        "validation_accuracy",
        "what the best epoch is chosen by (evaluate, predict and export use it, and its "
        "checkpoint is always kept): the highest validation accuracy or the lowest loss",
        group="stop",
        choices=MONITORS,
    )
    min_delta: float = option(
        0.0,
        "the smallest change of --monitor that counts as an improvement (accuracy as a "
        "fraction: 0.001 is 0.1 points)",
        group="stop",
        metavar="DELTA",
    )
    keep_checkpoints: int = option(
        3,
        "number of most recent epoch checkpoints kept (and the best epoch's)",
        group="run",
        metavar="N",
    )
    log_every_steps: int | None = option(
        None,
        "also write train/step_loss and train/step_accuracy TensorBoard scalars every N "
        "optimizer steps, at the global step (into RUN/steps)",
        group="run",
        metavar="N",
    )

    def __post_init__(self):
        if not isinstance(self.model, ModelOptions):
            raise ConfigError(f"model must be a ModelOptions, got {type(self.model).__name__}")
        if not isinstance(self.optimization, OptimizerSettings):
            raise ConfigError(
                f"optimization must be an OptimizerSettings, got {type(self.optimization).__name__}"
            )
        _check_own_values(self)

    def __getattr__(self, name: str) -> Any:
        # Only called for names that are not the config's own fields.
        if name in _PARTS["model"]:
            return getattr(self.model, name)
        if name in _PARTS["optimization"]:
            return getattr(self.optimization, name)
        raise AttributeError(f"RunConfig has no field {name!r}")

    @property
    def layer_sizes(self) -> tuple[int, ...]:
        """(784, *hidden, 10): MNIST and Fashion-MNIST both have 784 pixels and 10 classes."""
        return (NUM_PIXELS, *self.hidden, NUM_CLASSES)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict with every key, flat (tuples as lists); a valid config file."""
        return {name: _plain(getattr(self, name)) for name in FIELDS}

    def result_fields(self) -> dict[str, Any]:
        """The fields that decide the results (everything except locations and retention)."""
        return {k: v for k, v in self.to_dict().items() if k not in NON_RESULT_FIELDS}


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


_NESTED = {"model": ModelOptions, "optimization": OptimizerSettings}
_PARTS: dict[str, dict[str, dataclasses.Field]] = {
    "run": {f.name: f for f in dataclasses.fields(RunConfig) if f.name not in _NESTED},
    **{part: {f.name: f for f in dataclasses.fields(cls)} for part, cls in _NESTED.items()},
}
FIELDS: dict[str, dataclasses.Field] = {
    name: field for fields in _PARTS.values() for name, field in fields.items()
}
"""Every key of a run configuration, flat: the run's own, then the model's, then the
optimizer's. Each field's metadata holds its help text, group and choices."""
assert len(FIELDS) == sum(map(len, _PARTS.values())), "a key is defined twice"
PART_OF: dict[str, str] = {name: part for part, fields in _PARTS.items() for name in fields}
_TYPES: dict[str, Any] = {
    **typing.get_type_hints(RunConfig),
    **typing.get_type_hints(ModelOptions),
    **typing.get_type_hints(OptimizerSettings),
}


def default_value(name: str) -> Any:
    """The run's default for key ``name`` (the model's and optimizer's as the run sets them)."""
    return getattr(_DEFAULT, name)


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


def _check_own_values(config: RunConfig) -> None:
    """Types, ranges and choices of the run's own fields; raises ConfigError naming the field
    (the model's and the optimizer's are checked by their own classes)."""
    for name, f in _PARTS["run"].items():
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

    for name in (
        "epochs",
        "batch_size",
        "keep_checkpoints",
        "train_limit",
        "test_limit",
        "early_stopping_patience",
        "log_every_steps",
    ):
        at_least(name, 1)
    at_least("min_delta", 0)
    if config.optimization.schedule == "plateau" and (
        config.model.is_private or config.dp_target_epsilon is not None
    ):
        raise ConfigError(
            "schedule='plateau' lowers the learning rate on the training loss of the private "
            "batches, which DP-SGD does not make private (the accountant would not count it); "
            "choose another schedule for DP-SGD"
        )
    if config.early_stopping_patience is not None and config.validation == 0:
        raise ConfigError(
            f"early_stopping_patience={config.early_stopping_patience} watches {config.monitor}, "
            "but validation=0 holds out no validation data; hold some out (e.g. validation = "
            "5000) or drop early_stopping_patience"
        )
    for name in ("validation", "seed"):
        at_least(name, 0)
    at_least("init_scale", 0, strict=True)
    at_least("dp_target_epsilon", 0, strict=True)
    if not 0 < config.dp_delta < 1:
        raise ConfigError(f"dp_delta={config.dp_delta!r} is invalid; expected 0 < dp_delta < 1")
    if config.dp_target_epsilon is not None and config.model.dp_clip_norm is None:
        raise ConfigError(
            f"dp_target_epsilon={config.dp_target_epsilon!r} needs dp_clip_norm (DP-SGD clips "
            "each example's gradient to that norm before the calibrated noise is added)"
        )
    for size in config.hidden:
        if size < 1:
            raise ConfigError(
                f"hidden={list(config.hidden)} has a size < 1; every hidden layer "
                "needs at least one unit"
            )


_DEFAULT = RunConfig()


def normalize_key(key: str) -> str:
    """The name of a key written as on the command line (``learning-rate``)."""
    return key.replace("-", "_")


def _unknown_key(key: str, prefix: str) -> ConfigError:
    close = difflib.get_close_matches(normalize_key(key), FIELDS, n=1)
    hint = f" (did you mean {close[0]}?)" if close else ""
    return ConfigError(f"{prefix}unknown key {key!r}{hint}; valid keys are {', '.join(FIELDS)}")


def from_mapping(
    values: Mapping[str, Any], *, base: RunConfig | None = None, source: str = "config"
) -> RunConfig:
    """``base`` (default: the defaults) with ``values`` applied; unknown keys are an error."""
    base = base if base is not None else _DEFAULT
    prefix = f"{source}: " if source else ""
    updates: dict[str, dict[str, Any]] = {part: {} for part in _PARTS}
    for key, value in values.items():
        name = normalize_key(str(key))
        if name not in FIELDS:
            raise _unknown_key(str(key), prefix)
        try:
            updates[PART_OF[name]][name] = _coerce(name, value)
        except ConfigError as e:
            raise ConfigError(f"{prefix}{e}") from None
    try:
        return dataclasses.replace(
            base,
            **updates["run"],
            model=dataclasses.replace(base.model, **updates["model"]),
            optimization=dataclasses.replace(base.optimization, **updates["optimization"]),
        )
    except (ValueError, TypeError) as e:  # ConfigError, and the rules of the option classes
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
