"""Raschka's ``NeuralNetMLP`` (Python Machine Learning, ch. 12) on MNIST, translated to jaxmlp.

The text's settings:
  784-100-10; sigmoid hidden units and sigmoid output units scored by the logistic cost over
  one-hot targets; weights ~ N(0, 0.1^2), biases 0, drawn from ``np.random.RandomState(1)``
  (hidden layer first); ``l2 = 0.01``; ``eta = 0.0005`` applied to gradients *summed* over
  minibatches of 100; the same RandomState shuffles the 55000 training images each epoch;
  200 epochs; pixels scaled to [-1, 1]; the first 55000 training images train, the last 5000
  validate. Reported: train 99.28 %, validation 97.98 %, test 97.54 %.

The translation. The text updates, for every weight matrix W of a minibatch of B = 100,

    W <- W - eta * (sum_i g_i + l2 * W),          g_i = gradient of example i's logistic cost,

and leaves the biases unregularised. jaxmlp minimises the batch *mean* plus
``l2_mean * 0.5 * sum(W^2)``, so its SGD step is

    W <- W - lr * (mean_i g_i + l2_mean * W) = W - lr * ((1/B) sum_i g_i + l2_mean * W).

The two agree for every W and every minibatch iff lr / B = eta and lr * l2_mean = eta * l2:

    lr = eta * B = 0.05,        l2_mean = l2 / B = 1e-4,

and the bias updates (no l2 on either side) agree with the same lr. ``prove_translation``
checks it: a NumPy port of the text's ``fit`` loop and jaxmlp, started from the same weights
and fed the same minibatches, hold the same parameters step after step.

The text's per-epoch cost is the *sum* of the logistic cost over the 55000 training images
plus ``l2 * (sum W_h^2 + sum W_out^2)`` (no 1/2 there, although the gradient uses
``l2 * W``); we report it with that definition so the curves are comparable.
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np

import jaxmlp
from experiments import common

SIZES = (784, 100, 10)
ETA, L2_TEXT, BATCH, EPOCHS, SEED = 0.0005, 0.01, 100, 200, 1
LR, L2_MEAN = ETA * BATCH, L2_TEXT / BATCH
REPORTED = {"train_accuracy": 0.9928, "validation_accuracy": 0.9798, "test_accuracy": 0.9754}
OPTIONS = jaxmlp.ModelOptions(activation="sigmoid", output="sigmoid", l2=L2_MEAN)


# ---------------------------------------------------------------------------------------------
# The text's NumPy code, kept as close to the original as a port allows


def text_init(rng: np.random.RandomState, n_features=784, n_hidden=100, n_output=10):
    """``NeuralNetMLP.fit``'s initialisation, in its order of draws."""
    b_h = np.zeros(n_hidden)
    w_h = rng.normal(loc=0.0, scale=0.1, size=(n_features, n_hidden))
    b_out = np.zeros(n_output)
    w_out = rng.normal(loc=0.0, scale=0.1, size=(n_hidden, n_output))
    return {"w_h": w_h, "b_h": b_h, "w_out": w_out, "b_out": b_out}


def _sigmoid(z):
    return 1.0 / (1.0 + np.exp(-np.clip(z, -250, 250)))


def text_step(p: dict, x: np.ndarray, y_enc: np.ndarray, eta=ETA, l2=L2_TEXT) -> dict:
    """One minibatch of the text's ``fit`` loop (summed gradients, then the l2 term)."""
    a_h = _sigmoid(x @ p["w_h"] + p["b_h"])
    a_out = _sigmoid(a_h @ p["w_out"] + p["b_out"])
    delta_out = a_out - y_enc
    delta_h = (delta_out @ p["w_out"].T) * (a_h * (1.0 - a_h))
    grad_w_h, grad_b_h = x.T @ delta_h, np.sum(delta_h, axis=0)
    grad_w_out, grad_b_out = a_h.T @ delta_out, np.sum(delta_out, axis=0)
    return {
        "w_h": p["w_h"] - eta * (grad_w_h + l2 * p["w_h"]),
        "b_h": p["b_h"] - eta * grad_b_h,
        "w_out": p["w_out"] - eta * (grad_w_out + l2 * p["w_out"]),
        "b_out": p["b_out"] - eta * grad_b_out,
    }


def text_epoch_orders(rng: np.random.RandomState, n: int, epochs: int, batch=BATCH):
    """The minibatch indices of each epoch: ``rng.shuffle`` of arange(n), remainder dropped."""
    for _ in range(epochs):
        indices = np.arange(n)
        rng.shuffle(indices)
        steps = n // batch
        yield indices[: steps * batch].reshape(steps, batch)


def to_jaxmlp(p: dict, dtype=jnp.float32):
    return [
        {"w": jnp.asarray(p["w_h"], dtype), "b": jnp.asarray(p["b_h"], dtype)},
        {"w": jnp.asarray(p["w_out"], dtype), "b": jnp.asarray(p["b_out"], dtype)},
    ]


def text_cost(params, x, y, l2=L2_TEXT) -> float:
    """The text's ``_compute_cost``: summed logistic cost + l2 * sum of squared weights."""
    data = float(jaxmlp.loss(params, x, y, activation="sigmoid", output="sigmoid")) * x.shape[0]
    return data + l2 * sum(float(jnp.sum(layer["w"] ** 2)) for layer in params)


# ---------------------------------------------------------------------------------------------
# The proof of the translation


def prove_translation(x: np.ndarray, y: np.ndarray, steps: int = 20, dtype=jnp.float64) -> dict:
    """Run ``steps`` minibatches of the text's NumPy loop and of jaxmlp's SGD step from the same
    initial weights on the same order; return the largest parameter difference after each step.

    Use float64 (inside ``jax.enable_x64(True)``) for an exact comparison: float32 agrees to
    about 1e-6 instead.
    """
    rng = np.random.RandomState(SEED)
    text = text_init(rng, x.shape[1])
    order = next(text_epoch_orders(rng, x.shape[0], 1))[:steps]
    y_enc = np.eye(10)[y]
    state = jaxmlp.create_train_state(
        jax.random.key(0),
        SIZES,
        jaxmlp.optimizer("sgd", LR),
        options=OPTIONS,
        params=to_jaxmlp(text, dtype),
    )
    xj, yj = jnp.asarray(x, dtype), jnp.asarray(y)
    differences = []
    for batch in order:
        text = text_step(text, x[batch].astype(np.float64), y_enc[batch])
        state, _ = jaxmlp.train_step(state, xj[batch], yj[batch])
        ours = state.params
        differences.append(
            max(
                float(np.max(np.abs(np.asarray(ours[0]["w"]) - text["w_h"]))),
                float(np.max(np.abs(np.asarray(ours[0]["b"]) - text["b_h"]))),
                float(np.max(np.abs(np.asarray(ours[1]["w"]) - text["w_out"]))),
                float(np.max(np.abs(np.asarray(ours[1]["b"]) - text["b_out"]))),
            )
        )
    moved = float(np.max(np.abs(text["w_h"] - text_init(np.random.RandomState(SEED))["w_h"])))
    return {
        "steps": steps,
        "dtype": str(jnp.dtype(dtype)),
        "max_abs_difference": differences,
        "max_abs_change_of_w_h": moved,
    }


# ---------------------------------------------------------------------------------------------
# The 200-epoch run


@jax.jit
def _epoch(state, images, labels, order):
    """One epoch on the text's minibatch order: ``jaxmlp.train_step`` inside ``lax.scan``."""

    def body(state, batch):
        state, metrics = jaxmlp.train_step(state, images[batch], labels[batch])
        return state, metrics["loss"]

    return jax.lax.scan(body, state, order)


def train(ds, epochs: int) -> tuple[list, list[dict], float]:
    rng = np.random.RandomState(SEED)
    params = to_jaxmlp(text_init(rng))
    state = jaxmlp.create_train_state(
        jax.random.key(SEED), SIZES, jaxmlp.optimizer("sgd", LR), options=OPTIONS, params=params
    )
    x, y = jnp.asarray(ds.train.images), jnp.asarray(ds.train.labels)
    history = []
    start = time.perf_counter()
    for epoch, order in enumerate(text_epoch_orders(rng, x.shape[0], epochs), start=1):
        state, _ = _epoch(state, x, y, jnp.asarray(order))
        train = jaxmlp.evaluate(state.params, x, y, options=OPTIONS)
        valid = jaxmlp.evaluate(
            state.params, ds.validation.images, ds.validation.labels, options=OPTIONS
        )
        history.append(
            {
                "epoch": epoch,
                "cost": text_cost(state.params, x, y),
                "train_accuracy": train["accuracy"],
                "validation_accuracy": valid["accuracy"],
                "seconds": time.perf_counter() - start,
            }
        )
        if epoch % 10 == 0 or epoch == epochs:
            h = history[-1]
            print(
                f"{epoch:03d}/{epochs} cost {h['cost']:.2f} train {h['train_accuracy']:.4f} "
                f"valid {h['validation_accuracy']:.4f} ({h['seconds']:.0f} s)",
                flush=True,
            )
    return state.params, history, time.perf_counter() - start


def plot(history, params, ds, path, name):
    plt = common.pyplot()
    epochs = [h["epoch"] for h in history]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    axes[0].plot(epochs, [h["cost"] for h in history])
    axes[0].set(xlabel="Epochs", ylabel="Cost", title="cost per epoch (summed, as in the text)")
    axes[1].plot(epochs, [h["train_accuracy"] for h in history], label="training")
    axes[1].plot(epochs, [h["validation_accuracy"] for h in history], "--", label="validation")
    axes[1].set(xlabel="Epochs", ylabel="Accuracy", title="accuracy")
    axes[1].legend()
    fig.tight_layout()
    fig.savefig(path(""))
    plt.close(fig)

    predicted = jaxmlp.predict(params, ds.test.images, activation="sigmoid")
    wrong = np.flatnonzero(predicted != ds.test.labels)[:25]
    fig, axes = plt.subplots(5, 5, figsize=(6, 6.4), sharex=True, sharey=True)
    for ax, index in zip(axes.ravel(), wrong, strict=False):
        ax.imshow(ds.test.images[index].reshape(28, 28), cmap="Greys", interpolation="nearest")
        ax.set_title(f"{index}) t: {ds.test.labels[index]} p: {predicted[index]}", fontsize=8)
    axes[0, 0].set_xticks([])
    axes[0, 0].set_yticks([])
    fig.tight_layout()
    fig.savefig(path("_misclassified"))
    plt.close(fig)
    return wrong


def main():
    args = common.arguments(__doc__.splitlines()[0])
    name = "raschka"
    ds = common.load("mnist", normalize="symmetric", validation=5000)
    with jax.enable_x64(True):
        proof64 = prove_translation(ds.train.images, ds.train.labels, steps=20, dtype=jnp.float64)
    proof32 = prove_translation(ds.train.images, ds.train.labels, steps=20, dtype=jnp.float32)
    print(
        f"translation proof: float64 max difference {max(proof64['max_abs_difference']):.2e}, "
        f"float32 {max(proof32['max_abs_difference']):.2e}"
    )
    epochs = 3 if args.quick else EPOCHS
    params, history, seconds = train(ds, epochs)
    test = jaxmlp.evaluate(params, ds.test.images, ds.test.labels, options=OPTIONS)
    wrong = plot(
        history,
        params,
        ds,
        lambda suffix: common.figure_path(name, args.out, args.quick, suffix),
        name,
    )
    final = {
        "train_accuracy": history[-1]["train_accuracy"],
        "validation_accuracy": history[-1]["validation_accuracy"],
        "test_accuracy": test["accuracy"],
        "test_correct": test["correct"],
    }
    print("final", final, f"{seconds:.0f} s")
    common.save(
        name,
        {
            "config": {
                "sizes": SIZES,
                "activation": "sigmoid",
                "output": "sigmoid (logistic cost)",
                "init": "N(0, 0.1^2) weights from RandomState(1), zero biases",
                "eta_summed": ETA,
                "l2_summed": L2_TEXT,
                "batch_size": BATCH,
                "lr_mean": LR,
                "l2_mean": L2_MEAN,
                "epochs": epochs,
                "seed": SEED,
                "pixels": "[-1, 1]",
                "split": "55000 train / last 5000 validation",
                "minibatch_order": "the text's RandomState(1) shuffles, replayed",
            },
            "reported": REPORTED,
            "final": final,
            "history": history,
            "translation_proof": {"float64": proof64, "float32": proof32},
            "misclassified_test_indices": wrong,
            "wall_seconds": seconds,
        },
        args.out,
        args.quick,
    )


if __name__ == "__main__":
    main()
