"""jaxmlp: multi-layer perceptrons as pure JAX functions.

The model is a list of ``{"w", "b"}`` layers; everything else is a function of it:

    params = jaxmlp.init_mlp(jax.random.key(0), (784, 256, 10))
    logits = jaxmlp.forward(params, x)
    value = jaxmlp.loss(params, x, y, l2=1e-4)
    grads = jax.grad(jaxmlp.loss)(params, x, y)          # autodiff
    value, grads = jaxmlp.backprop(params, x, y)         # derived by hand
    state, history = jaxmlp.fit(key, (784, 256, 10), x, y, optimizer=jaxmlp.optimizer("adam",
                                1e-3), epochs=5, batch_size=128)

Data lives in :mod:`jaxmlp.data`; many models trained together in one vmapped program in
:mod:`jaxmlp.multi`.
"""

from jaxmlp import multi
from jaxmlp.backprop import backprop
from jaxmlp.losses import (
    cross_entropy,
    l2_penalty,
    log_softmax,
    loss,
    sigmoid_cross_entropy,
    softmax,
)
from jaxmlp.model import ACTIVATIONS, forward, init_mlp, layer_sizes_of, parameter_count
from jaxmlp.numerical import grad_check, numerical_grad
from jaxmlp.optimizers import OPTIMIZERS, optimizer, schedule
from jaxmlp.training import (
    DivergenceError,
    ModelOptions,
    TrainState,
    create_train_state,
    evaluate,
    fit,
    predict,
    train_epoch,
    train_step,
)

__version__ = "0.1.0"

__all__ = [
    "ACTIVATIONS",
    "OPTIMIZERS",
    "DivergenceError",
    "ModelOptions",
    "TrainState",
    "backprop",
    "create_train_state",
    "cross_entropy",
    "evaluate",
    "fit",
    "forward",
    "grad_check",
    "init_mlp",
    "l2_penalty",
    "layer_sizes_of",
    "log_softmax",
    "loss",
    "multi",
    "numerical_grad",
    "optimizer",
    "parameter_count",
    "predict",
    "schedule",
    "sigmoid_cross_entropy",
    "softmax",
    "train_epoch",
    "train_step",
]
