# %% [markdown]
# # Softmax regression and the Fashion-MNIST model
#
# d2l's chapter on softmax regression fits a single linear layer, 784 → 10, to Fashion-MNIST
# with SGD (learning rate 0.1, batch 256) and reaches about 82 % test accuracy; the PyTorch
# book's chapter 4 adds a hidden layer. In jaxmlp a model with no hidden layer *is* softmax
# regression: `layer_sizes=(784, 10)`.
#
# This page trains on 20,000 of the 60,000 training images, 5 epochs of softmax regression and
# 3 of the MLP, to run in seconds on a laptop CPU (`python -m experiments.d2l_softmax` and
# `python -m experiments.pytorch_ch4` run the texts' full settings).

# %%
import jax
import matplotlib.pyplot as plt
import numpy as np

import jaxmlp
from jaxmlp import data, metrics

ds = data.load("fashion_mnist", validation=5000)
x, y = ds.train.images[:20_000], ds.train.labels[:20_000]
validation = (ds.validation.images, ds.validation.labels)
print(ds.class_names)

fig, axes = plt.subplots(1, 10, figsize=(10, 1.5))
for label, ax in enumerate(axes):
    ax.imshow(x[np.flatnonzero(y == label)[0]].reshape(28, 28), cmap="gray_r")
    ax.set_title(ds.class_names[label], fontsize=8)
    ax.axis("off")
plt.show()

# %% [markdown]
# ## Softmax regression
#
# d2l initialises the weights from N(0, 0.01²) with zero biases; `init="glorot"` is close
# enough for a linear model, and `jaxmlp.fit` runs the epochs.

# %%
softmax_state, softmax_history = jaxmlp.fit(
    jax.random.key(0),
    (784, 10),
    x,
    y,
    optimizer=jaxmlp.optimizer("sgd", 0.1),
    epochs=5,
    batch_size=256,
    validation_data=validation,
    init="glorot",
)
print(jaxmlp.evaluate(softmax_state, ds.test.images, ds.test.labels))

# %% [markdown]
# ## One hidden layer
#
# The PyTorch book's model: 784-256-10 with ReLU and dropout. `fit` takes the model's options
# (`dropout_rate`, `l2`, `activation`, ...) as keywords, the fields of `jaxmlp.ModelOptions`.

# %%
mlp_state, mlp_history = jaxmlp.fit(
    jax.random.key(0),
    (784, 256, 10),
    x,
    y,
    optimizer=jaxmlp.optimizer("adam", 1e-3),
    epochs=3,
    batch_size=128,
    validation_data=validation,
    dropout_rate=0.2,
)
print(jaxmlp.evaluate(mlp_state, ds.test.images, ds.test.labels))

# %% [markdown]
# ## The learning curves
#
# `history` holds one record per epoch: training loss and accuracy (running, on the batches as
# trained) and the validation scores.

# %%
fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3))
for name, history in (("softmax regression", softmax_history), ("784-256-10", mlp_history)):
    epochs = [record["epoch"] for record in history]
    left.plot(epochs, [r["loss"] for r in history], "--", label=f"{name}, train")
    left.plot(epochs, [r["validation_loss"] for r in history], label=f"{name}, validation")
    right.plot(epochs, [r["validation_accuracy"] for r in history], label=name)
left.set(xlabel="epoch", ylabel="loss")
right.set(xlabel="epoch", ylabel="validation accuracy")
left.legend(fontsize=7)
right.legend(fontsize=7)
plt.show()

# %% [markdown]
# ## Which classes are confused
#
# `jaxmlp.metrics` gives the MLP's confusion matrix and per-class precision, recall and F1: the
# shirts are the hard class, mistaken for t-shirts, pullovers and coats.

# %%
predicted = np.asarray(jaxmlp.predict(mlp_state, ds.test.images))
matrix = metrics.confusion_matrix(ds.test.labels, predicted, 10)
per_class = metrics.per_class_metrics(matrix)
fig, ax = plt.subplots(figsize=(5, 5))
ax.imshow(np.log1p(matrix), cmap="Blues")
ax.set_xticks(range(10), ds.class_names, rotation=90)
ax.set_yticks(range(10), ds.class_names)
ax.set(xlabel="predicted", ylabel="true")
plt.show()
for name, recall in zip(ds.class_names, per_class["recall"], strict=True):
    print(f"{name:12s} recall {recall:.3f}")
