# %% [markdown]
# # Comparing optimizers
#
# Chapter 6 of deep-learning-from-scratch trains one network with SGD, Momentum, AdaGrad and
# Adam on MNIST batches of 128 and plots the loss of each step. `jaxmlp.optimizer` gives each as
# an optax transformation with the book's hyperparameters, and `jaxmlp.train_step`, run inside
# our own `lax.scan`, trains a whole run as one compiled program.
#
# The book uses a 784-100-100-100-100-10 ReLU network and 2,000 steps; to stay within seconds on
# a laptop CPU this page trains 784-100-100-10 for 500 steps (`python -m experiments.dlfs`
# runs the book's setting over 10 seeds).

# %%
import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np

import jaxmlp
from jaxmlp import data

ds = data.load("mnist")
x, y = jnp.asarray(ds.train.images), jnp.asarray(ds.train.labels)

# The book's settings, in optax's terms (see experiments/dlfs.py for the derivations).
OPTIMIZERS = {
    "SGD": jaxmlp.optimizer("sgd", 0.01),
    "Momentum": jaxmlp.optimizer("momentum", 0.01, momentum=0.9),
    "AdaGrad": jaxmlp.optimizer("adagrad", 0.01, initial_accumulator_value=0.0, eps=1e-7),
    "Adam": jaxmlp.optimizer("adam", 0.001, eps=1e-7),
}
steps, batch_size, sizes = 500, 128, (784, 100, 100, 10)

# %% [markdown]
# ## One run, one program
#
# Each step draws a random batch of 128 (as the book does, with replacement across steps) and
# applies `train_step`, which returns the new state and the batch's loss. `lax.scan` over the
# steps compiles the run once per optimizer; every optimizer starts from the same He-initialised
# parameters.

# %%


@jax.jit
def run(state, x, y):
    def step(state, key):
        batch = jax.random.randint(key, (batch_size,), 0, x.shape[0])
        state, metrics = jaxmlp.train_step(state, x[batch], y[batch])
        return state, metrics["loss"]

    keys = jax.random.split(jax.random.key(1), steps)
    return jax.lax.scan(step, state, keys)


losses = {}
for name, optimizer in OPTIMIZERS.items():
    state = jaxmlp.create_train_state(jax.random.key(0), sizes, optimizer)
    state, losses[name] = run(state, x, y)
    # Bare parameters are scored with the default options (ReLU, softmax): one compiled
    # program for all four, where each state's own optimizer would compile its own.
    accuracy = jaxmlp.evaluate(state.params, ds.test.images, ds.test.labels)["accuracy"]
    print(
        f"{name:9s} loss of the last 50 steps {float(losses[name][-50:].mean()):.3f}, "
        f"test accuracy {accuracy:.4f}"
    )

# %% [markdown]
# ## The curves
#
# As in the book's figure 6-9, plain SGD is the slowest, Momentum comes next, and AdaGrad and
# Adam fall fastest at these learning rates (the book's values at step 1900: SGD 0.150,
# Momentum 0.050, AdaGrad 0.016, Adam 0.032; one seed's curves are noisy, the experiment
# averages 10).

# %%
fig, ax = plt.subplots(figsize=(7, 3.5))
window = 20
for name, curve in losses.items():
    curve = np.asarray(curve)
    ax.plot(np.convolve(curve, np.ones(window) / window, mode="valid"), label=name)
ax.set(xlabel="step", ylabel=f"training loss (mean of {window} steps)", yscale="log")
ax.legend()
plt.show()

# %% [markdown]
# ## With a schedule
#
# Any optimizer also takes an optax schedule as its learning rate; `jaxmlp.schedule` names the
# common ones, sized in optimizer steps (`jaxmlp.steps_per_epoch` counts an epoch's):

# %%
cosine = jaxmlp.schedule("warmup_cosine", 1e-3, steps, warmup_steps=50)
print([round(float(cosine(s)), 6) for s in (0, 25, 50, 250, 499)])
print(jaxmlp.steps_per_epoch(55_000, 128), "steps per epoch of 55,000 images in batches of 128")
adam_with_schedule = jaxmlp.optimizer("adam", cosine)
