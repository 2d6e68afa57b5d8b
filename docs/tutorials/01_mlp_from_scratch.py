# %% [markdown]
# # An MLP from scratch
#
# The MXNet text "multilayer perceptrons from scratch" builds a 784-256-10 ReLU network out of
# nothing but arrays: parameters drawn from N(0, 0.01²), a forward pass, softmax cross-entropy,
# and a plain SGD step written by hand. jaxmlp keeps that shape: the model is a list of
# `{"w", "b"}` dicts and everything else is a function of it. Here we write the training loop
# ourselves with `jax.grad` and `jax.jit`, using only jaxmlp's maths functions.
#
# To run in seconds on a laptop CPU, this page trains on the first 10,000 MNIST training images
# for 3 epochs (the text trains on all 60,000 for 10; `python -m experiments.mxnet_scratch` does
# that, 97.48 % test accuracy).

# %%
import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np

import jaxmlp
from jaxmlp import data

ds = data.load("mnist")  # the verified official files, as float32 in [0, 1]
x_train, y_train = jnp.asarray(ds.train.images[:10_000]), jnp.asarray(ds.train.labels[:10_000])
x_test, y_test = jnp.asarray(ds.test.images), jnp.asarray(ds.test.labels)
print(x_train.shape, x_train.dtype, y_train[:10])

# %% [markdown]
# ## The parameters
#
# `init_mlp(..., init="normal", init_scale=0.01)` draws every weight and bias from
# N(0, 0.01²), as the text does. The result is an ordinary list of dicts: nothing is hidden.

# %%
params = jaxmlp.init_mlp(jax.random.key(0), (784, 256, 10), init="normal", init_scale=0.01)
print([{name: leaf.shape for name, leaf in layer.items()} for layer in params])
print("parameters:", jaxmlp.parameter_count(params))

# %% [markdown]
# ## Forward pass and loss
#
# `forward` computes the logits, `ReLU(x W₁ + b₁) W₂ + b₂`; `loss` is the batch mean of
# softmax cross-entropy, computed stably through `log_softmax`. Before training, the network
# guesses: the loss is close to log 10 ≈ 2.303.

# %%
logits = jaxmlp.forward(params, x_train[:5])
print(logits.shape, jaxmlp.softmax(logits).sum(axis=1))
print("initial loss:", float(jaxmlp.loss(params, x_train, y_train)), "log 10 =", np.log(10))

# %% [markdown]
# ## The SGD step, by hand
#
# The text minimises the *summed* loss with a learning rate of 0.001 per example; jaxmlp's
# loss is the batch mean, so the same step is `lr = 0.001 × 64 = 0.064` on batches of 64.
# The whole update is a `jax.tree.map` over the parameter list.

# %%
learning_rate, batch_size = 0.064, 64


@jax.jit
def sgd_step(params, x, y):
    value, grads = jax.value_and_grad(jaxmlp.loss)(params, x, y)
    return jax.tree.map(lambda p, g: p - learning_rate * g, params, grads), value


losses, accuracies = [], []
for epoch in range(3):
    order = jax.random.permutation(jax.random.key(epoch), x_train.shape[0])
    for start in range(0, x_train.shape[0], batch_size):
        batch = order[start : start + batch_size]
        params, value = sgd_step(params, x_train[batch], y_train[batch])
        losses.append(float(value))
    accuracy = float(jnp.mean(jaxmlp.predict(params, x_test) == y_test))
    accuracies.append(accuracy)
    print(f"epoch {epoch + 1}: last batch loss {losses[-1]:.4f}, test accuracy {accuracy:.4f}")

# %% [markdown]
# The loss per step, smoothed over 50 steps, falls from log 10 as the text's curve does:

# %%
smooth = np.convolve(losses, np.ones(50) / 50, mode="valid")
fig, ax = plt.subplots(figsize=(6, 3))
ax.plot(losses, alpha=0.3, label="batch loss")
ax.plot(np.arange(49, len(losses)), smooth, label="mean of 50 steps")
ax.set(xlabel="step", ylabel="cross-entropy", yscale="log")
ax.legend()
plt.show()

# %% [markdown]
# ## What the network gets wrong
#
# `predict` gives class ids; the first misclassified test digits, titled true / predicted:

# %%
predicted = np.asarray(jaxmlp.predict(params, x_test))
wrong = np.flatnonzero(predicted != ds.test.labels)[:8]
fig, axes = plt.subplots(1, 8, figsize=(8, 1.4))
for ax, i in zip(axes, wrong, strict=True):
    ax.imshow(ds.test.images[i].reshape(28, 28), cmap="gray_r")
    ax.set_title(f"{ds.test.labels[i]} / {predicted[i]}", fontsize=9)
    ax.axis("off")
plt.show()
print(f"{len(np.flatnonzero(predicted != ds.test.labels))} of 10,000 test digits misclassified")

# %% [markdown]
# ## The same with the library's loop
#
# `jaxmlp.fit` is that loop, compiled as one `lax.scan` per epoch, with the optimizer from
# optax: `jaxmlp.optimizer("sgd", 0.064)` is the step above.

# %%
state, history = jaxmlp.fit(
    jax.random.key(0),
    (784, 256, 10),
    x_train,
    y_train,
    optimizer=jaxmlp.optimizer("sgd", learning_rate),
    epochs=3,
    batch_size=batch_size,
    init="normal",
    init_scale=0.01,
)
print([round(record["loss"], 4) for record in history])
print(jaxmlp.evaluate(state, x_test, y_test))
