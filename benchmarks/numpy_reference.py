"""The textbook MLP in plain NumPy: forward pass, softmax cross-entropy, backward pass by hand.

This is the seed texts' two-layer network (Nielsen's and Raschka's ``backprop``) generalised to
any number of hidden layers, with no JAX anywhere. It works in whatever float dtype the
parameters and inputs have (float32 or float64). Parameters use jaxmlp's layout, a list of
``{"w": (n_in, n_out), "b": (n_out,)}`` dicts, so gradients compare leaf by leaf.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

Params = list[dict[str, np.ndarray]]


def _sigmoid(z: np.ndarray) -> np.ndarray:
    # Split by sign so that exp never overflows.
    out = np.empty_like(z)
    positive = z >= 0
    out[positive] = 1.0 / (1.0 + np.exp(-z[positive]))
    exp_z = np.exp(z[~positive])
    out[~positive] = exp_z / (1.0 + exp_z)
    return out


ACTIVATIONS = {
    "relu": (lambda z: np.maximum(z, 0), lambda z: (z > 0).astype(z.dtype)),
    "sigmoid": (_sigmoid, lambda z: _sigmoid(z) * (1 - _sigmoid(z))),
    "tanh": (np.tanh, lambda z: 1 - np.tanh(z) ** 2),
}


def to_numpy(params, dtype=None) -> Params:
    """A NumPy copy of a jaxmlp parameter list (optionally cast)."""
    return [
        {name: np.array(value, dtype=dtype) for name, value in layer.items()} for layer in params
    ]


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=1, keepdims=True)


def loss_and_grads(
    params: Params,
    x: np.ndarray,
    labels: np.ndarray,
    *,
    activation: str = "relu",
    l2: float = 0.0,
    masks: Sequence[np.ndarray | None] | None = None,
) -> tuple[float, Params]:
    """Mean softmax cross-entropy (+ ``l2 * 0.5 * sum w**2``) and its gradient, by hand.

    ``masks`` are inverted-dropout masks (already scaled by 1 / (1 - rate)), one for the input
    and one per hidden layer's output, or ``None`` entries; they are passed in so a comparison
    uses the very masks the JAX side drew.
    """
    phi, phi_prime = ACTIVATIONS[activation]
    masks = masks if masks is not None else [None] * len(params)
    batch = x.shape[0]

    # Forward: remember each layer's input a and pre-activation z.
    inputs, pre_activations = [], []
    a = x
    for index, layer in enumerate(params):
        if masks[index] is not None:
            a = a * masks[index]
        inputs.append(a)
        z = a @ layer["w"] + layer["b"]
        pre_activations.append(z)
        if index < len(params) - 1:
            a = phi(z)
    logits = pre_activations[-1]

    probabilities = softmax(logits)
    rows = np.arange(batch)
    # log p[label] from the shifted logits, so a tiny probability does not become log(0).
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_likelihood = shifted[rows, labels] - np.log(np.exp(shifted).sum(axis=1))
    loss = -log_likelihood.mean()
    if l2:
        loss = loss + l2 * 0.5 * sum(np.sum(layer["w"] ** 2) for layer in params)

    # Backward: delta = dL/dz of the current layer, starting at the softmax output.
    delta = probabilities
    delta[rows, labels] -= 1
    delta /= batch
    grads: Params = [{} for _ in params]
    for index in reversed(range(len(params))):
        w = params[index]["w"]
        grads[index]["w"] = inputs[index].T @ delta + (l2 * w if l2 else 0)
        grads[index]["b"] = delta.sum(axis=0)
        if index > 0:
            delta = delta @ w.T
            if masks[index] is not None:
                delta = delta * masks[index]
            delta = delta * phi_prime(pre_activations[index - 1])
    return float(loss), grads


# ---------------------------------------------------------------------------------------------
# Optimizers, written the way a NumPy training loop would: in place, on the parameter arrays.


def sgd_update(params: Params, grads: Params, learning_rate: float) -> None:
    for layer, grad in zip(params, grads, strict=True):
        for name in layer:
            layer[name] -= learning_rate * grad[name]


def adam_init(params: Params) -> dict:
    zeros = [{name: np.zeros_like(value) for name, value in layer.items()} for layer in params]
    return {
        "m": zeros,
        "v": [{n: np.zeros_like(v) for n, v in layer.items()} for layer in params],
        "t": 0,
    }


def adam_update(
    params: Params,
    grads: Params,
    state: dict,
    learning_rate: float,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
) -> None:
    """Adam with bias correction and eps outside the root (optax's and PyTorch's convention)."""
    state["t"] += 1
    correction1 = 1 - b1 ** state["t"]
    correction2 = 1 - b2 ** state["t"]
    for layer, grad, m, v in zip(params, grads, state["m"], state["v"], strict=True):
        for name in layer:
            m[name] *= b1
            m[name] += (1 - b1) * grad[name]
            v[name] *= b2
            v[name] += (1 - b2) * grad[name] ** 2
            step = (m[name] / correction1) / (np.sqrt(v[name] / correction2) + eps)
            layer[name] -= learning_rate * step


def train_epoch(
    params: Params,
    optimizer_state: dict | None,
    x: np.ndarray,
    labels: np.ndarray,
    *,
    batch_size: int,
    optimizer: str,
    learning_rate: float,
    rng: np.random.Generator,
) -> float:
    """One shuffled epoch of minibatch training, updating ``params`` in place; the mean loss.

    The last batch is simply shorter when the batch size does not divide the data.
    """
    order = rng.permutation(x.shape[0])
    total = 0.0
    for start in range(0, x.shape[0], batch_size):
        batch = order[start : start + batch_size]
        loss, grads = loss_and_grads(params, x[batch], labels[batch])
        if optimizer == "adam":
            adam_update(params, grads, optimizer_state, learning_rate)
        else:
            sgd_update(params, grads, learning_rate)
        total += loss * len(batch)
    return total / x.shape[0]
