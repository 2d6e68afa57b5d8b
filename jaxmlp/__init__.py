"""jaxmlp: multi-layer perceptrons as pure JAX functions.

The model is a list of ``{"w", "b"}`` layers; everything else is a function of it:

    params = jaxmlp.init_mlp(jax.random.key(0), (784, 256, 10))
    logits = jaxmlp.forward(params, x)
    value = jaxmlp.loss(params, x, y, l2=1e-4)
    grads = jax.grad(jaxmlp.loss)(params, x, y)          # autodiff
    value, grads = jaxmlp.backprop(params, x, y)         # derived by hand
    state, history = jaxmlp.fit(key, (784, 256, 10), x, y, optimizer=jaxmlp.optimizer("adam",
                                1e-3), epochs=5, batch_size=128)

Every function here works inside the caller's own ``jax.jit``, ``jax.vmap``, ``jax.grad`` and
``lax.scan``. The submodules [`jaxmlp.data`][] (the datasets), [`jaxmlp.multi`][] (many
models in one vmapped program), [`jaxmlp.checkpoints`][], [`jaxmlp.sharding`][],
[`jaxmlp.metrics`][], [`jaxmlp.privacy`][], [`jaxmlp.loggers`][] (TensorBoard events),
[`jaxmlp.export`][] (ONNX and ``jax.export``),
[`jaxmlp.plots`][] and [`jaxmlp.images`][] are attributes of the package, imported on first
use so that ``import jaxmlp`` stays quick.
"""

import importlib
import importlib.metadata
from typing import TYPE_CHECKING

from jaxmlp.backprop import backprop
from jaxmlp.losses import (
    cross_entropy,
    l2_penalty,
    log_softmax,
    loss,
    loss_and_logits,
    sigmoid_cross_entropy,
    softmax,
)
from jaxmlp.model import ACTIVATIONS, forward, init_mlp, layer_sizes_of, parameter_count
from jaxmlp.numerical import grad_check, numerical_grad
from jaxmlp.optimizers import OPTIMIZERS, OptimizerSettings, optimizer, schedule
from jaxmlp.per_example import per_example_grad_norms, per_example_grads
from jaxmlp.training import (
    MONITORS,
    DivergenceError,
    ModelOptions,
    TrainState,
    best_epoch,
    create_train_state,
    evaluate,
    fit,
    predict,
    probabilities,
    should_stop,
    steps_per_epoch,
    train_epoch,
    train_step,
)

if TYPE_CHECKING:
    from jaxmlp import (
        checkpoints,
        data,
        export,
        images,
        loggers,
        metrics,
        multi,
        plots,
        privacy,
        sharding,
    )

__version__ = importlib.metadata.version("jaxmlp")

_SUBMODULES = (
    "checkpoints",
    "data",
    "export",
    "images",
    "loggers",
    "metrics",
    "multi",
    "plots",
    "privacy",
    "sharding",
)


def __getattr__(name: str):
    # PEP 562: the heavier submodules load on first access (jaxmlp.data, jaxmlp.sharding, ...).
    if name in _SUBMODULES:
        return importlib.import_module(f"jaxmlp.{name}")
    raise AttributeError(f"module 'jaxmlp' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_SUBMODULES))


__all__ = [
    "ACTIVATIONS",
    "MONITORS",
    "OPTIMIZERS",
    "OptimizerSettings",
    "DivergenceError",
    "ModelOptions",
    "TrainState",
    "backprop",
    "best_epoch",
    "checkpoints",
    "create_train_state",
    "cross_entropy",
    "data",
    "evaluate",
    "export",
    "fit",
    "forward",
    "grad_check",
    "images",
    "init_mlp",
    "loggers",
    "l2_penalty",
    "layer_sizes_of",
    "log_softmax",
    "loss",
    "loss_and_logits",
    "metrics",
    "multi",
    "numerical_grad",
    "optimizer",
    "parameter_count",
    "per_example_grad_norms",
    "per_example_grads",
    "plots",
    "predict",
    "privacy",
    "probabilities",
    "schedule",
    "sharding",
    "should_stop",
    "sigmoid_cross_entropy",
    "softmax",
    "steps_per_epoch",
    "train_epoch",
    "train_step",
]
