"""Training: one immutable train state, a jitted step, a whole epoch inside one ``lax.scan``,
exact evaluation, and ``fit``, the one training loop.

The state that travels between steps (parameters, optimizer state, step count, PRNG key) is one
``flax.struct`` pytree; the optimizer and the model options ride along as static fields, so a
state fully describes what its step computes and ``jax.jit`` compiles once per configuration.
Nothing here donates or overwrites an array the caller holds.

Modules, one concern each: ``_options`` ([`ModelOptions`][jaxmlp.ModelOptions]), ``_regularizers``
(augmentation, max-norm, fast gradient sign, virtual adversarial), ``_state``
([`TrainState`][jaxmlp.TrainState]), ``_step``, ``_epoch``, ``_evaluate`` and ``_fit``.
"""

from jaxmlp.training._epoch import steps_per_epoch as steps_per_epoch
from jaxmlp.training._epoch import train_epoch as train_epoch
from jaxmlp.training._evaluate import evaluate as evaluate
from jaxmlp.training._evaluate import predict as predict
from jaxmlp.training._evaluate import probabilities as probabilities
from jaxmlp.training._fit import MONITORS as MONITORS
from jaxmlp.training._fit import DivergenceError as DivergenceError
from jaxmlp.training._fit import best_epoch as best_epoch
from jaxmlp.training._fit import fit as fit
from jaxmlp.training._fit import should_stop as should_stop
from jaxmlp.training._options import BATCH_SAMPLINGS as BATCH_SAMPLINGS
from jaxmlp.training._options import GRADIENTS as GRADIENTS
from jaxmlp.training._options import ModelOptions as ModelOptions
from jaxmlp.training._state import TRACED_OPTIONS as TRACED_OPTIONS
from jaxmlp.training._state import TrainState as TrainState
from jaxmlp.training._state import create_train_state as create_train_state
from jaxmlp.training._state import step_options as step_options
from jaxmlp.training._state import with_hyperparams as with_hyperparams
from jaxmlp.training._step import train_step as train_step
