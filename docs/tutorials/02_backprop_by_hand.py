# %% [markdown]
# # Backprop by hand, against autodiff and central differences
#
# Raschka's `NeuralNetMLP` and deep-learning-from-scratch derive the backward pass of an MLP by
# hand and check it against a numerical gradient. jaxmlp has all three: `jax.grad(jaxmlp.loss)`,
# `jaxmlp.backprop` (the pass derived by hand) and `jaxmlp.numerical_grad` (central
# differences), and `jaxmlp.grad_check` compares any two, one line per tensor.
#
# Central differences cost two loss evaluations per parameter, so this page checks a small
# network, 784-8-10 on 32 images (6,370 parameters), in float64.

# %%
import jax

jax.config.update("jax_enable_x64", True)  # before any array is made

import jax.numpy as jnp  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

import jaxmlp  # noqa: E402
from jaxmlp import data  # noqa: E402

ds = data.load("mnist")
x = jnp.asarray(ds.train.images[:32], dtype=jnp.float64)
y = jnp.asarray(ds.train.labels[:32])
params = jaxmlp.init_mlp(jax.random.key(0), (784, 8, 10), dtype=jnp.float64)

# %% [markdown]
# ## The backward pass
#
# For logits z₂ = a₁ W₂ + b₂ with a₁ = φ(z₁), z₁ = x W₁ + b₁, and the mean cross-entropy over a
# batch of B examples with one-hot targets Y:
#
# $$\delta_2 = \frac{\mathrm{softmax}(z_2) - Y}{B}, \qquad
#   \delta_1 = (\delta_2 W_2^\top) \odot \varphi'(z_1),$$
#
# $$\frac{\partial L}{\partial W_l} = a_{l-1}^\top \delta_l + \lambda W_l, \qquad
#   \frac{\partial L}{\partial b_l} = \textstyle\sum_i \delta_{l,i}.$$
#
# Written out for this two-layer ReLU network (λ is the L2 weight, biases are not
# regularised):

# %%
l2 = 1e-3


def backward_by_hand(params, x, y):
    (w1, b1), (w2, b2) = ((layer["w"], layer["b"]) for layer in params)
    z1 = x @ w1 + b1
    a1 = jnp.maximum(z1, 0)
    z2 = a1 @ w2 + b2
    delta2 = (jax.nn.softmax(z2) - jax.nn.one_hot(y, 10)) / x.shape[0]
    delta1 = (delta2 @ w2.T) * (z1 > 0)
    return [
        {"w": x.T @ delta1 + l2 * w1, "b": delta1.sum(0)},
        {"w": a1.T @ delta2 + l2 * w2, "b": delta2.sum(0)},
    ]


ours = backward_by_hand(params, x, y)
value, by_hand = jaxmlp.backprop(params, x, y, l2=l2)
autodiff = jax.grad(jaxmlp.loss)(params, x, y, l2=l2)
print("loss", float(value))

# %% [markdown]
# ## Three gradients, compared
#
# `grad_check` reports, per tensor, the largest and mean absolute difference and the relative
# error ‖a − b‖ / (‖a‖ + ‖b‖). The hand-written cell, `jaxmlp.backprop` and `jax.grad` agree
# to float64 rounding:

# %%
for name, report in jaxmlp.grad_check(ours, by_hand).items():
    print("this page vs jaxmlp.backprop", name, f"{report['relative_error']:.1e}")
for name, report in jaxmlp.grad_check(autodiff, by_hand).items():
    print("jax.grad vs jaxmlp.backprop  ", name, f"{report['relative_error']:.1e}")

# %% [markdown]
# Central differences, (L(θ + h) − L(θ − h)) / 2h for every parameter θ, with h = 1e-4 as the
# texts use. Pass the data through `args` rather than a closure: XLA would otherwise fold the
# captured arrays as constants, slowly.

# %%
numerical = jaxmlp.numerical_grad(
    lambda p, x, y: jaxmlp.loss(p, x, y, l2=l2), params, 1e-4, args=(x, y)
)
check64 = jaxmlp.grad_check(numerical, by_hand)
for name, report in check64.items():
    print("numerical vs backprop, float64", name, f"{report['relative_error']:.1e}")

# %% [markdown]
# ## Why the texts check in float64
#
# The same check in float32: the rounding error of the loss (about 1e-7 relative), divided by
# 2h, swamps the truncation error of the central difference: the relative error grows from
# about 1e-9 to about 1e-2, and a float32 check cannot tell a small bug from rounding.

# %%
params32 = jax.tree.map(lambda leaf: leaf.astype(jnp.float32), params)
x32 = x.astype(jnp.float32)
_, by_hand32 = jaxmlp.backprop(params32, x32, y, l2=l2)
numerical32 = jaxmlp.numerical_grad(
    lambda p, x, y: jaxmlp.loss(p, x, y, l2=l2), params32, 1e-4, args=(x32, y)
)
check32 = jaxmlp.grad_check(numerical32, by_hand32)
for name, report in check32.items():
    print("numerical vs backprop, float32", name, f"{report['relative_error']:.1e}")

names = list(check64)
fig, ax = plt.subplots(figsize=(6, 3))
positions = np.arange(len(names))
ax.bar(positions - 0.2, [check64[n]["relative_error"] for n in names], 0.4, label="float64")
ax.bar(positions + 0.2, [check32[n]["relative_error"] for n in names], 0.4, label="float32")
ax.set_xticks(positions, names)
ax.set(yscale="log", ylabel="relative error", title="central differences vs backprop")
ax.legend()
plt.show()

# %% [markdown]
# ## One example at a time
#
# `backprop` and `loss` take a single example `(features,)` as well as a batch, so the
# per-example gradients are a `vmap` away, and their mean is the batch gradient:

# %%
per_example = jax.vmap(lambda xi, yi: jaxmlp.backprop(params, xi, yi)[1])(x, y)
mean = jax.tree.map(lambda g: g.mean(0), per_example)
batch = jaxmlp.backprop(params, x, y)[1]
print(per_example[0]["w"].shape)
print(max(r["max_abs_diff"] for r in jaxmlp.grad_check(mean, batch).values()))
