# %% [markdown]
# # Many models at once
#
# Five seeds of one model, or six learning rates, need not be five or six training runs:
# their train states stack along a leading *model* axis, and `jax.vmap` turns one epoch into an
# epoch of all of them, in one compiled program. `jaxmlp.multi` packages that: each stacked
# model shuffles and drops out with its own key and ends where it would have alone.
#
# Here every model trains on 10,000 MNIST images for 2 epochs, to run in seconds on a laptop
# CPU (`python -m experiments.multimodel` times the full setting against a loop).

# %%
import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np
import optax

import jaxmlp
from jaxmlp import data, multi

ds = data.load("mnist", validation=5000)
x, y = ds.train.images[:10_000], ds.train.labels[:10_000]
xv, yv = ds.validation.images, ds.validation.labels
sizes = (784, 128, 10)

# %% [markdown]
# ## An ensemble of five seeds
#
# The states must share one optimizer *object* and one set of options (they are static parts
# of the compiled program); everything else (parameters, optimizer state, key) is stacked.

# %%
optimizer = jaxmlp.optimizer("adam", 1e-3)
options = jaxmlp.ModelOptions(dropout_rate=0.2)
states = multi.stack_states(
    [
        jaxmlp.create_train_state(jax.random.key(seed), sizes, optimizer, options=options)
        for seed in range(5)
    ]
)
print("models:", multi.count(states), "first weight:", states.params[0]["w"].shape)
for epoch in range(2):
    states, metrics = multi.train_epoch(states, x, y, batch_size=128)
    print(f"epoch {epoch + 1}: training loss per model", np.asarray(metrics["loss"]).round(4))
scores = multi.evaluate(states, ds.test.images, ds.test.labels)
print("test accuracy per model:", np.asarray(scores["accuracy"]).round(4))

# %% [markdown]
# The ensemble predicts the class of the five models' mean probability:

# %%
logits = multi.predict_logits(states, ds.test.images)  # (models, examples, classes)
votes = np.argmax(jax.nn.softmax(jnp.asarray(logits)).mean(0), -1)
print("ensemble of the five:", float(np.mean(votes == ds.test.labels)))
print("best single model:   ", float(np.max(scores["accuracy"])))

# %% [markdown]
# ## A learning-rate sweep in one program
#
# Numbers that are leaves of the optimizer state may differ between stacked models: with
# `optax.inject_hyperparams` the learning rate is such a leaf. One optimizer object, six
# states, each given its own rate:

# %%
rates = np.geomspace(1e-4, 3e-2, 6)
sweep_optimizer = optax.inject_hyperparams(optax.adam)(learning_rate=1e-3)
sweep = []
for rate in rates:
    state = jaxmlp.create_train_state(jax.random.key(0), sizes, sweep_optimizer)
    hyperparams = dict(state.opt_state.hyperparams, learning_rate=jnp.asarray(rate, jnp.float32))
    sweep.append(state.replace(opt_state=state.opt_state._replace(hyperparams=hyperparams)))
sweep = multi.stack_states(sweep)
for _ in range(2):
    sweep, _ = multi.train_epoch(sweep, x, y, batch_size=128)
accuracy = np.asarray(multi.evaluate(sweep, xv, yv)["accuracy"])
for rate, value in zip(rates, accuracy, strict=True):
    print(f"learning rate {rate:.1e}: validation accuracy {value:.4f}")

# %%
fig, ax = plt.subplots(figsize=(6, 3))
ax.semilogx(rates, accuracy, "o-")
ax.set(xlabel="Adam learning rate", ylabel="validation accuracy", title="6 models, 1 program")
plt.show()

# %% [markdown]
# ## Back to single states
#
# `unstack_states` gives the models back as ordinary train states, for `jaxmlp.evaluate`,
# `jaxmlp.checkpoints` or export:

# %%
best = multi.unstack_states(sweep)[int(np.argmax(accuracy))]
print(f"best rate {rates[int(np.argmax(accuracy))]:.1e}:", jaxmlp.evaluate(best, xv, yv))
