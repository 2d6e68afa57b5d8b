"""PyTorch and Opacus counterparts of jaxmlp's per-example gradients and DP-SGD.

Every function takes and returns NumPy arrays in jaxmlp's layout: parameters are a list of
``{"w": (n_in, n_out), "b": (n_out,)}`` layers, the forward pass is ``a = act(a @ w + b)`` on the
hidden layers and linear on the last, and the loss is the batch mean of softmax cross-entropy
with integer labels. Nothing here imports jaxmlp, so the privacy benchmark can hold one side
against the other.

DP-SGD, as Opacus computes it and as it is compared here: each example's gradient ``g_i`` (of its
own loss) is clipped to global L2 norm ``C`` over all weights and biases, the clipped gradients
are summed, Gaussian noise is added and the sum is divided by the batch size ``B``::

    g = (sum_i g_i * min(1, C / (||g_i|| + 1e-6)) + N(0, sigma^2 C^2 I)) / B

(the ``1e-6`` is Opacus's guard against a zero norm). PyTorch and Opacus are optional
(``pip install -e .[bench]``); :func:`available` says whether they can be imported.
"""

from __future__ import annotations

import contextlib
import os
import time
import warnings
from typing import Any

import numpy as np

Params = list[dict[str, np.ndarray]]

ACTIVATIONS = ("relu", "tanh", "sigmoid")


def available() -> bool:
    """Whether PyTorch and Opacus can both be imported."""
    try:
        import opacus  # noqa: F401
        import torch  # noqa: F401
    except (ImportError, OSError):
        return False
    return True


def versions() -> dict[str, str]:
    """The versions of torch and opacus in use."""
    import opacus
    import torch

    return {"torch": torch.__version__, "opacus": opacus.__version__}


def torch_mlp(params: Params, activation: str = "relu"):
    """An ``nn.Sequential`` of ``nn.Linear`` layers (with ``activation`` between them) computing
    the same function as jaxmlp's forward pass with ``params``.

    torch stores a linear layer's weight as ``(n_out, n_in)``, the transpose of jaxmlp's ``w``.
    The model's dtype is the parameters' (float32 or float64); its parameters are copies.
    """
    import torch

    activation_layer = {"relu": torch.nn.ReLU, "tanh": torch.nn.Tanh, "sigmoid": torch.nn.Sigmoid}
    if activation not in activation_layer:
        raise ValueError(f"activation must be one of {ACTIVATIONS}, not {activation!r}")
    dtype = _torch_dtype(params)
    layers: list[torch.nn.Module] = []
    for index, layer in enumerate(params):
        w, b = np.asarray(layer["w"]), np.asarray(layer["b"])
        if w.ndim != 2 or b.shape != (w.shape[1],):
            raise ValueError(
                f"layer {index}: w must be (n_in, n_out) and b (n_out,), got w {w.shape} and "
                f"b {b.shape}"
            )
        if index and w.shape[0] != np.shape(params[index - 1]["w"])[1]:
            raise ValueError(
                f"layer {index} takes {w.shape[0]} inputs but layer {index - 1} gives "
                f"{np.shape(params[index - 1]['w'])[1]}"
            )
        linear = torch.nn.Linear(w.shape[0], w.shape[1], dtype=dtype)
        with torch.no_grad():
            linear.weight.copy_(torch.from_numpy(np.array(w.T, order="C")))
            linear.bias.copy_(torch.from_numpy(np.array(b, order="C")))
        layers.append(linear)
        if index < len(params) - 1:
            layers.append(activation_layer[activation]())
    return torch.nn.Sequential(*layers)


def numpy_params(model) -> Params:
    """The parameters of a model built by :func:`torch_mlp` (or of Opacus's wrapper around it)
    as NumPy copies in jaxmlp's layout."""
    import torch

    return [
        {
            "w": module.weight.detach().cpu().numpy().T.copy(),
            "b": module.bias.detach().cpu().numpy().copy(),
        }
        for module in model.modules()
        if isinstance(module, torch.nn.Linear)
    ]


def opacus_per_example_grads(
    params: Params, x: np.ndarray, labels: np.ndarray, *, activation: str = "relu"
) -> Params:
    """Each example's gradient of its own loss, computed by Opacus's ``GradSampleModule``.

    ``x`` is ``(B, n_in)`` and ``labels`` ``(B,)`` integers. The loss backpropagated is the batch
    mean, as jaxmlp's, so its per-sample gradients are each ``1/B`` of an example's own; Opacus
    told ``loss_reduction="mean"`` multiplies them back by ``B``. Returned in jaxmlp's layout,
    with a leading batch axis: ``[{"w": (B, n_in, n_out), "b": (B, n_out)}, ...]``.
    """
    import torch
    from opacus import GradSampleModule

    model = GradSampleModule(torch_mlp(params, activation), loss_reduction="mean")
    inputs, targets = _tensors(params, x, labels)
    with _known_opacus_warnings_silenced():
        torch.nn.functional.cross_entropy(model(inputs), targets).backward()
    return [
        {
            "w": module.weight.grad_sample.detach().numpy().transpose(0, 2, 1).copy(),
            "b": module.bias.grad_sample.detach().numpy().copy(),
        }
        for module in model.modules()
        if isinstance(module, torch.nn.Linear)
    ]


def opacus_per_example_norms(
    params: Params, x: np.ndarray, labels: np.ndarray, *, activation: str = "relu"
) -> np.ndarray:
    """``(B,)``: the global L2 norm of each example's gradient over all weights and biases,
    ``||g_i|| = sqrt(sum_l ||dloss_i/dw_l||_F^2 + ||dloss_i/db_l||^2)``, from
    :func:`opacus_per_example_grads`; the norm DP-SGD clips."""
    grads = opacus_per_example_grads(params, x, labels, activation=activation)
    batch = np.shape(x)[0]
    squares = sum(
        np.sum(np.square(leaf.reshape(batch, -1)), axis=1)
        for layer in grads
        for leaf in layer.values()
    )
    return np.sqrt(squares)


def opacus_dp_epoch(
    params: Params,
    x: np.ndarray,
    labels: np.ndarray,
    *,
    batch_size: int,
    clip_norm: float,
    noise_multiplier: float,
    learning_rate: float,
    poisson: bool = False,
    seed: int = 0,
    activation: str = "relu",
    threads: int | None = None,
    max_steps: int | None = None,
    device: str = "cpu",
) -> dict[str, Any]:
    """One epoch of DP-SGD (plain SGD on the clipped, noised gradient of the module docstring)
    through Opacus's ``PrivacyEngine.make_private`` with flat clipping at ``clip_norm`` and noise
    standard deviation ``noise_multiplier * clip_norm``.

    ``poisson=False`` draws shuffled batches of ``batch_size`` (``ceil(N / batch_size)`` steps,
    the last one shorter); ``poisson=True`` draws as many Poisson batches, each example in each
    with probability ``1 / steps``. Either way the sum is divided by ``batch_size`` (Opacus would
    divide by ``int(N / steps)``, 127 for 55,000 examples in batches of 128). ``seed`` fixes the
    shuffle, the Poisson draws and the noise; with the same seed the shuffled order is
    :func:`torch_epoch`'s.

    ``threads`` sets ``torch.set_num_threads`` for the whole process (default
    ``os.cpu_count()``). ``max_steps`` stops the epoch early, for timing a part of it.

    Returns ``{"seconds", "steps", "steps_per_epoch", "examples", "final_loss", "params"}``: the
    wall time of the steps taken, the data loader's batching and the first step's allocations
    included (building the model, the loader and the privacy engine excluded), their
    number, the epoch's, the examples they used (random under Poisson sampling), the last step's
    batch loss before its update and the trained parameters in jaxmlp's layout.
    Extrapolate to a full epoch as ``seconds / steps * steps_per_epoch``. The noise comes from
    torch's ordinary generator (Opacus's default, ``secure_mode=False``).
    """
    import torch
    from opacus import PrivacyEngine

    _set_threads(threads)
    model = torch_mlp(params, activation).to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=learning_rate)
    loader = _shuffled_loader(params, x, labels, batch_size, seed)
    with _known_opacus_warnings_silenced():
        model, optimizer, loader = PrivacyEngine().make_private(
            module=model,
            optimizer=optimizer,
            data_loader=loader,
            noise_multiplier=noise_multiplier,
            max_grad_norm=clip_norm,
            poisson_sampling=poisson,
            noise_generator=torch.Generator(device).manual_seed(seed + 1),
        )
        optimizer.expected_batch_size = batch_size
        return _train(model, optimizer, loader, max_steps, device)


def torch_epoch(
    params: Params,
    x: np.ndarray,
    labels: np.ndarray,
    *,
    batch_size: int,
    learning_rate: float,
    seed: int = 0,
    activation: str = "relu",
    threads: int | None = None,
    max_steps: int | None = None,
    device: str = "cpu",
) -> dict[str, Any]:
    """One epoch of plain SGD on the batch-mean loss over shuffled batches, through the same
    data loader as :func:`opacus_dp_epoch` (the same order for the same ``seed``): the baseline
    for DP-SGD's overhead. Arguments and result as :func:`opacus_dp_epoch`'s; the time includes
    the data loader."""
    import torch

    _set_threads(threads)
    model = torch_mlp(params, activation).to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=learning_rate)
    loader = _shuffled_loader(params, x, labels, batch_size, seed)
    return _train(model, optimizer, loader, max_steps, device)


@contextlib.contextmanager
def _known_opacus_warnings_silenced():
    with warnings.catch_warnings():
        # Opacus's per-sample hooks fire on module outputs because the inputs need no gradient,
        # which torch reports at the first backward; and the engine reminds that secure_mode is
        # off: the benchmark measures Opacus's default, non-cryptographic noise.
        warnings.filterwarnings("ignore", message="Full backward hook is firing")
        warnings.filterwarnings("ignore", message="Secure RNG turned off")
        yield


def _torch_dtype(params: Params):
    import torch

    dtype = np.asarray(params[0]["w"]).dtype
    if dtype == np.float32:
        return torch.float32
    if dtype == np.float64:
        return torch.float64
    raise ValueError(f"parameters must be float32 or float64, not {dtype}")


def _tensors(params: Params, x: np.ndarray, labels: np.ndarray):
    """``x`` in the parameters' dtype and ``labels`` as int64, checked against each other."""
    import torch

    x = np.asarray(x)
    labels = np.asarray(labels)
    if x.ndim != 2 or labels.shape != (x.shape[0],):
        raise ValueError(f"x must be (B, n_in) and labels (B,), got {x.shape} and {labels.shape}")
    dtype = _torch_dtype(params)
    inputs = torch.from_numpy(np.ascontiguousarray(x)).to(dtype)
    return inputs, torch.from_numpy(labels.astype(np.int64))


def _shuffled_loader(params: Params, x: np.ndarray, labels: np.ndarray, batch_size: int, seed):
    import torch

    inputs, targets = _tensors(params, x, labels)
    return torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(inputs, targets),
        batch_size=batch_size,
        shuffle=True,
        generator=torch.Generator().manual_seed(seed),
    )


def _set_threads(threads: int | None) -> None:
    import torch

    torch.set_num_threads(threads or os.cpu_count() or 1)


def _train(model, optimizer, loader, max_steps: int | None, device: str) -> dict[str, Any]:
    import torch

    steps_per_epoch = len(loader)
    steps = examples = 0
    loss = torch.tensor(float("nan"))
    start = time.perf_counter()
    for inputs, targets in loader:
        inputs, targets = inputs.to(device), targets.to(device)
        optimizer.zero_grad(set_to_none=True)
        loss = torch.nn.functional.cross_entropy(model(inputs), targets)
        loss.backward()
        optimizer.step()
        steps += 1
        examples += len(targets)
        if steps == max_steps:
            break
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    return {
        "seconds": seconds,
        "steps": steps,
        "steps_per_epoch": steps_per_epoch,
        "examples": examples,
        "final_loss": float(loss.item()),
        "params": numpy_params(model),
    }
