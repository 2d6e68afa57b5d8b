"""Section 3: examples per second for a whole MNIST-sized epoch (60000 x 784, float32).

Implementations, all with the same data, model, batch size, optimizer and initial weights:

* ``jaxmlp.train_epoch``: the library's epoch, one compiled ``lax.scan``.
* ``scan`` variants: copies of that epoch with its extras switched off one by one (the
  divergence guard, the running accuracy, the padded last batch, the per-step gather), to
  measure what each costs.
* ``jit step loop``: a jitted step called from a Python loop over host batches, the way the
  flax and JAX examples train (the remainder batch is dropped, as they do).
* ``numpy``: :mod:`benchmarks.numpy_reference`.
* ``torch eager`` and ``torch.compile`` (when PyTorch is installed), on the JAX backend's kind
  of device.

The first epoch is timed on its own (it includes compiling); the figure is the median of the
following epochs. Compile time is reported as first epoch minus that median.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

import jaxmlp
from benchmarks import numpy_reference
from benchmarks.common import Mode, sizes_label, step_flops, synthetic_mnist

LEARNING_RATES = {"adam": 1e-3, "sgd": 0.05}

# (sizes, batch, optimizer, implementations); "scan*" expands to the scan variants.
FULL_CONFIGS = [
    (
        (784, 256, 256, 10),
        128,
        "adam",
        [
            "jaxmlp",
            "jaxmlp backprop",
            "scan*",
            "jit step loop",
            "numpy",
            "torch eager",
            "torch.compile",
        ],
    ),
    (
        (784, 1024, 1024, 10),
        128,
        "sgd",
        ["jaxmlp", "scan bare", "jit step loop", "numpy", "torch eager"],
    ),
    ((784, 1024, 1024, 10), 128, "adam", ["jaxmlp", "scan bare", "torch eager"]),
    ((784, 100, 10), 128, "sgd", ["jaxmlp", "scan bare", "jit step loop", "numpy", "torch eager"]),
]
QUICK_CONFIGS = [
    (
        (784, 256, 256, 10),
        128,
        "adam",
        ["jaxmlp", "scan bare", "jit step loop", "numpy", "torch eager"],
    ),
]

# name -> (guard, accuracy, tail, gather): what the copy of the library's epoch keeps.
SCAN_VARIANTS = {
    "scan like jaxmlp": ("cond", True, "pad", "index"),
    "scan no guard": ("none", True, "pad", "index"),
    "scan where guard": ("where", True, "pad", "index"),
    "scan no accuracy": ("cond", False, "pad", "index"),
    "scan drop tail": ("cond", True, "drop", "index"),
    "scan bare": ("none", False, "drop", "index"),
    "scan bare permuted": ("none", False, "drop", "permute"),
}


def config_name(sizes, batch: int, optimizer: str) -> str:
    return f"{sizes_label(sizes)} b{batch} {optimizer}"


def _loss_logits(params, x, y, weights):
    logits = jaxmlp.forward(params, x)
    return jaxmlp.cross_entropy(logits, y, weights=weights), logits


def make_scan_epoch(
    optimizer: optax.GradientTransformation,
    batch_size: int,
    *,
    guard: str,
    accuracy: bool,
    tail: str,
    gather: str,
) -> Callable:
    """A jitted epoch like ``jaxmlp.train_epoch`` with chosen extras.

    guard: ``cond`` keeps the old state when a step's loss or gradient is not finite (via
    ``lax.cond``, as jaxmlp does), ``where`` does it with a select, ``none`` not at all.
    accuracy: count correct predictions of the training forward pass.
    tail: ``pad`` the last batch with zero-weight examples (every example used), or ``drop``
    the remainder. gather: ``index`` rows per step, or ``permute`` the data once per epoch.
    """

    def epoch(params, opt_state, key, x, y):
        n = x.shape[0]
        steps = -(-n // batch_size) if tail == "pad" else n // batch_size
        order = jax.random.permutation(key, n)
        if tail == "pad":
            order = jnp.concatenate([order, jnp.zeros(steps * batch_size - n, order.dtype)])
            valid = (jnp.arange(steps * batch_size) < n).astype(x.dtype)
            valid = valid.reshape(steps, batch_size)
        order = order[: steps * batch_size].reshape(steps, batch_size)
        if gather == "permute":
            xs, ys = x[order], y[order]

        def body(carry, index):
            params, opt_state = carry
            if gather == "permute":
                xb, yb = xs[index], ys[index]
            else:
                xb, yb = x[order[index]], y[order[index]]
            weights = valid[index] if tail == "pad" else None
            (loss, logits), grads = jax.value_and_grad(_loss_logits, has_aux=True)(
                params, xb, yb, weights
            )
            updates, new_opt_state = optimizer.update(grads, opt_state, params)
            new_params = optax.apply_updates(params, updates)
            new = (new_params, new_opt_state)
            if guard != "none":
                finite = jnp.isfinite(loss) & jnp.isfinite(optax.global_norm(grads))
                if guard == "cond":
                    new = jax.lax.cond(finite, lambda: new, lambda: (params, opt_state))
                else:
                    new = jax.tree.map(
                        lambda a, b: jnp.where(finite, a, b), new, (params, opt_state)
                    )
            outputs = {"loss": loss}
            if accuracy:
                hits = (jnp.argmax(logits, -1) == yb).astype(jnp.float32)
                outputs["correct"] = jnp.sum(hits if weights is None else hits * weights)
            return new, outputs

        (params, opt_state), outputs = jax.lax.scan(body, (params, opt_state), jnp.arange(steps))
        return params, opt_state, jnp.mean(outputs["loss"])

    return jax.jit(epoch, donate_argnums=(0, 1))


def _time_epochs(run_epoch: Callable[[int], Any], repeats: int) -> dict[str, Any]:
    """Time a warm-up epoch, then ``repeats`` epochs; run_epoch(i) must finish its work."""
    start = time.perf_counter()
    final_loss = run_epoch(0)
    first = time.perf_counter() - start
    seconds = []
    for index in range(repeats):
        start = time.perf_counter()
        final_loss = run_epoch(index + 1)
        seconds.append(time.perf_counter() - start)
    median = statistics.median(seconds)
    return {
        "epoch_s": median,
        "epoch_s_all": seconds,
        "first_epoch_s": first,
        "compile_s": max(first - median, 0.0),
        "final_loss": float(final_loss),
    }


def _jaxmlp(sizes, batch, optimizer_name, x, y, repeats, gradient="autodiff"):
    state = jaxmlp.create_train_state(
        jax.random.key(0),
        sizes,
        jaxmlp.optimizer(optimizer_name, LEARNING_RATES[optimizer_name]),
        options=jaxmlp.ModelOptions(gradient=gradient),
    )
    box = {"state": state}

    def run_epoch(_):
        box["state"], metrics = jaxmlp.train_epoch(box["state"], x, y, batch_size=batch)
        return jax.block_until_ready(metrics)["loss"]

    return {**_time_epochs(run_epoch, repeats), "examples": x.shape[0]}


def _scan(variant, sizes, batch, optimizer_name, x, y, repeats):
    guard, accuracy, tail, gather = SCAN_VARIANTS[variant]
    optimizer = jaxmlp.optimizer(optimizer_name, LEARNING_RATES[optimizer_name])
    epoch = make_scan_epoch(
        optimizer, batch, guard=guard, accuracy=accuracy, tail=tail, gather=gather
    )
    params = jaxmlp.init_mlp(jax.random.key(0), sizes)
    box = {"params": params, "opt_state": optimizer.init(params)}

    def run_epoch(index):
        box["params"], box["opt_state"], loss = epoch(
            box["params"], box["opt_state"], jax.random.key(index), x, y
        )
        return jax.block_until_ready(loss)

    examples = x.shape[0] if tail == "pad" else (x.shape[0] // batch) * batch
    return {**_time_epochs(run_epoch, repeats), "examples": examples}


def _step_loop(sizes, batch, optimizer_name, x_np, y_np, repeats):
    optimizer = jaxmlp.optimizer(optimizer_name, LEARNING_RATES[optimizer_name])

    @jax.jit
    def step(params, opt_state, xb, yb):
        loss, grads = jax.value_and_grad(lambda p: _loss_logits(p, xb, yb, None)[0])(params)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    step = jax.jit(step, donate_argnums=(0, 1))
    params = jaxmlp.init_mlp(jax.random.key(0), sizes)
    box = {"params": params, "opt_state": optimizer.init(params)}
    steps = x_np.shape[0] // batch

    def run_epoch(index):
        order = np.random.default_rng(index).permutation(x_np.shape[0])
        loss = None
        for i in range(steps):
            rows = order[i * batch : (i + 1) * batch]
            box["params"], box["opt_state"], loss = step(
                box["params"], box["opt_state"], x_np[rows], y_np[rows]
            )
        return jax.block_until_ready(loss)

    return {**_time_epochs(run_epoch, repeats), "examples": steps * batch}


def _numpy(sizes, batch, optimizer_name, x_np, y_np, repeats):
    params = numpy_reference.to_numpy(jaxmlp.init_mlp(jax.random.key(0), sizes))
    state = numpy_reference.adam_init(params) if optimizer_name == "adam" else None

    def run_epoch(index):
        return numpy_reference.train_epoch(
            params,
            state,
            x_np,
            y_np,
            batch_size=batch,
            optimizer=optimizer_name,
            learning_rate=LEARNING_RATES[optimizer_name],
            rng=np.random.default_rng(index),
        )

    return {**_time_epochs(run_epoch, repeats), "examples": x_np.shape[0]}


def _torch(sizes, batch, optimizer_name, x_np, y_np, repeats, compiled: bool):
    import torch

    device = "cuda" if jax.default_backend() == "gpu" and torch.cuda.is_available() else "cpu"
    layers: list[torch.nn.Module] = []
    for n_in, n_out in zip(sizes[:-1], sizes[1:], strict=True):
        layers += [torch.nn.Linear(n_in, n_out), torch.nn.ReLU()]
    model = torch.nn.Sequential(*layers[:-1]).to(device)
    # Start from the very weights jaxmlp starts from (torch stores W transposed).
    linears = [layer for layer in model if isinstance(layer, torch.nn.Linear)]
    with torch.no_grad():
        for linear, layer in zip(linears, jaxmlp.init_mlp(jax.random.key(0), sizes), strict=True):
            linear.weight.copy_(torch.from_numpy(np.asarray(layer["w"]).T.copy()))
            linear.bias.copy_(torch.from_numpy(np.array(layer["b"])))
    lr = LEARNING_RATES[optimizer_name]
    if optimizer_name == "adam":
        optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    else:
        optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    forward = torch.compile(model) if compiled else model
    x = torch.from_numpy(x_np).to(device)
    y = torch.from_numpy(y_np.astype(np.int64)).to(device)
    n = x.shape[0]

    def run_epoch(index):
        generator = torch.Generator().manual_seed(index)
        order = torch.randperm(n, generator=generator).to(device)
        loss = None
        for start in range(0, n, batch):
            rows = order[start : start + batch]
            loss = torch.nn.functional.cross_entropy(forward(x[rows]), y[rows])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        if device == "cuda":
            torch.cuda.synchronize()
        return loss.item()

    result = _time_epochs(run_epoch, repeats)
    return {**result, "examples": n, "device": device, "threads": torch.get_num_threads()}


def _torch_available() -> bool:
    try:
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


def run_config(
    sizes, batch, optimizer_name, implementations, mode: Mode, use_torch: bool
) -> dict[str, Any]:
    x_np, y_np = synthetic_mnist(mode.epoch_examples, sizes[0], sizes[-1], seed=3)
    x, y = jnp.asarray(x_np), jnp.asarray(y_np)
    big = step_flops(sizes, batch) > 5e8
    repeats = max(1, mode.epoch_repeats - 1) if big else mode.epoch_repeats
    expanded = []
    for name in implementations:
        expanded += list(SCAN_VARIANTS) if name == "scan*" else [name]
    rows: dict[str, Any] = {}
    for name in expanded:
        try:
            if name == "jaxmlp":
                row = _jaxmlp(sizes, batch, optimizer_name, x, y, repeats)
            elif name == "jaxmlp backprop":
                row = _jaxmlp(sizes, batch, optimizer_name, x, y, repeats, gradient="backprop")
            elif name in SCAN_VARIANTS:
                row = _scan(name, sizes, batch, optimizer_name, x, y, repeats)
            elif name == "jit step loop":
                row = _step_loop(sizes, batch, optimizer_name, x_np, y_np, repeats)
            elif name == "numpy":
                row = _numpy(sizes, batch, optimizer_name, x_np, y_np, repeats)
            elif name.startswith("torch"):
                if not use_torch or not _torch_available():
                    rows[name] = {
                        "skipped": "PyTorch is not installed (pip install torch)"
                        if use_torch
                        else "--no-torch"
                    }
                    continue
                row = _torch(
                    sizes,
                    batch,
                    optimizer_name,
                    x_np,
                    y_np,
                    repeats,
                    compiled=name == "torch.compile",
                )
            else:
                raise ValueError(name)
        except Exception as error:  # a peer failing (e.g. no C++ compiler) must not stop the run
            rows[name] = {"skipped": f"{type(error).__name__}: {error}"[:300]}
            print(f"    {name}: skipped ({rows[name]['skipped']})", flush=True)
            continue
        row["examples_per_s"] = row["examples"] / row["epoch_s"]
        rows[name] = row
        print(
            f"    {name}: {row['epoch_s']:.3f} s/epoch, {row['examples_per_s']:,.0f} ex/s, "
            f"compile {row['compile_s']:.2f} s",
            flush=True,
        )
    return {
        "name": config_name(sizes, batch, optimizer_name),
        "sizes": list(sizes),
        "batch": batch,
        "optimizer": optimizer_name,
        "learning_rate": LEARNING_RATES[optimizer_name],
        "examples": mode.epoch_examples,
        "steps": math.ceil(mode.epoch_examples / batch),
        "step_matmul_flops": step_flops(sizes, batch),
        "implementations": rows,
    }


def run(mode: Mode, *, use_torch: bool = True, **_: Any) -> dict[str, Any]:
    configs = QUICK_CONFIGS if mode.quick else FULL_CONFIGS
    results = []
    for sizes, batch, optimizer_name, implementations in configs:
        print(f"  {config_name(sizes, batch, optimizer_name)}", flush=True)
        results.append(run_config(sizes, batch, optimizer_name, implementations, mode, use_torch))
    headline = results[0]["implementations"]
    goal: dict[str, Any] = {"config": results[0]["name"], "required_speedup": 2.5}
    if "epoch_s" in headline.get("torch eager", {}):
        speedup = headline["torch eager"]["epoch_s"] / headline["jaxmlp"]["epoch_s"]
        goal.update(speedup_vs_torch_eager=speedup, met=speedup >= 2.5)
    if "epoch_s" in headline.get("torch.compile", {}):
        goal["speedup_vs_torch_compile"] = (
            headline["torch.compile"]["epoch_s"] / headline["jaxmlp"]["epoch_s"]
        )
    return {"configs": results, "goal_vs_torch": goal}
