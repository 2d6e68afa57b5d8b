"""Section 6: per-example gradients and DP-SGD, by hand against autodiff, and against Opacus.

1. Per-example gradients and their norms: ``jaxmlp.per_example_grads`` /
   ``per_example_grad_norms`` with ``method="backprop"`` (outer products; norms from
   ||a|| ||delta|| without materialising a gradient) against ``method="autodiff"``
   (``jax.vmap(jax.grad)``), for 784-W-W-10 over batch sizes and widths: seconds per call
   (median, compile excluded) and XLA's own estimate of the working memory of the compiled
   call (``memory_analysis()``: temporaries + outputs). A call whose estimate exceeds the
   memory cap is compiled (for the estimate) but not run.
2. A whole DP-SGD epoch (clip 1, noise 1, batch 128, 55,000 MNIST-sized examples; the median
   of three epochs) against the non-private epoch of the same model, for 784-256-256-10 and
   784-1024-1024-10: the clipped sum by hand and by ``vmap(grad)``, and clipping alone (noise
   0), which separates the cost of the per-example work from the cost of drawing a Gaussian
   for every parameter every step.
   Slow variants are timed on a prefix of the epoch and scaled (``scaled_from_steps``).
3. Opacus (PyTorch) on the same model in the same run: its per-sample gradients compared
   numerically with jaxmlp's, and its DP-SGD epoch and plain SGD epoch timed the same way.
"""

from __future__ import annotations

import math
import statistics
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

import jaxmlp
from benchmarks.common import Mode, sizes_label, synthetic_mnist
from benchmarks.timing import compile_seconds, measure

FULL_GRID = {"widths": (256, 1024, 4096), "batches": (32, 128, 512, 1024)}
QUICK_GRID = {"widths": (64,), "batches": (32,)}
MEMORY_CAP = 6 * 2**30  # bytes; larger calls are estimated, not run
EPOCH_MODELS = ((784, 256, 256, 10), (784, 1024, 1024, 10))
QUICK_EPOCH_MODELS = ((784, 64, 10),)
BATCH, CLIP, SIGMA, LEARNING_RATE = 128, 1.0, 1.0, 0.1
EPOCH_EXAMPLES = 55_000


def _memory(compiled) -> int | None:
    analysis = compiled.memory_analysis()
    if analysis is None:
        return None
    return int(analysis.temp_size_in_bytes + analysis.output_size_in_bytes)


def per_example_point(width: int, batch: int, mode: Mode) -> dict[str, Any]:
    sizes = (784, width, width, 10)
    x_np, y_np = synthetic_mnist(batch, seed=2)
    x, y = jnp.asarray(x_np), jnp.asarray(y_np)
    params = jaxmlp.init_mlp(jax.random.key(0), sizes)
    row: dict[str, Any] = {"architecture": sizes_label(sizes), "batch": batch}
    for kind, function in (
        ("grads", jaxmlp.per_example_grads),
        ("norms", jaxmlp.per_example_grad_norms),
    ):
        for method in ("autodiff", "backprop"):
            jitted = jax.jit(lambda p, x, y, f=function, m=method: f(p, x, y, method=m))
            compiled, seconds = compile_seconds(jitted, params, x, y)
            memory = _memory(compiled)
            entry: dict[str, Any] = {"compile_s": seconds, "memory_bytes": memory}
            if memory is not None and memory > MEMORY_CAP:
                entry["skipped"] = f"needs about {memory / 2**30:.1f} GiB"
            else:
                entry.update(
                    measure(
                        lambda c=compiled: c(params, x, y),
                        repeats=mode.repeats,
                        min_repeat_s=mode.min_repeat_s,
                        budget_s=mode.budget_s,
                    )
                )
            row[f"{kind}_{method}"] = entry
    return row


def _epoch_seconds(sizes, x, y, options: jaxmlp.ModelOptions, max_steps: int | None, repeats: int):
    """Seconds of one epoch of train_epoch, the median of ``repeats`` epochs after a warm-up
    epoch that compiles it; on the first ``max_steps`` batches when given (one timed pass),
    scaled to the whole epoch."""
    steps = math.ceil(x.shape[0] / BATCH)
    if max_steps is not None and max_steps < steps:
        x, y = x[: max_steps * BATCH], y[: max_steps * BATCH]
    state = jaxmlp.create_train_state(
        jax.random.key(0), sizes, jaxmlp.optimizer("sgd", LEARNING_RATE), options=options
    )
    state, metrics = jaxmlp.train_epoch(state, x, y, batch_size=BATCH)
    jax.block_until_ready(metrics)
    timings = []
    for _ in range(1 if max_steps is not None else repeats):
        start = time.perf_counter()
        state, metrics = jaxmlp.train_epoch(state, x, y, batch_size=BATCH)
        jax.block_until_ready((state, metrics))
        timings.append(time.perf_counter() - start)
    seconds = statistics.median(timings)
    run_steps = math.ceil(x.shape[0] / BATCH)
    return {
        "seconds": seconds * steps / run_steps,
        "scaled_from_steps": run_steps if run_steps < steps else None,
        "final_loss": float(metrics["loss"]),
    }


def dp_epochs(sizes, mode: Mode, use_torch: bool) -> dict[str, Any]:
    n = 2_000 if mode.quick else EPOCH_EXAMPLES
    x_np, y_np = synthetic_mnist(n, sizes[0], sizes[-1], seed=3)
    x, y = jnp.asarray(x_np), jnp.asarray(y_np)
    dp = {"dp_clip_norm": CLIP, "dp_noise_multiplier": SIGMA}
    wide = max(sizes) >= 1024
    variants = {
        "plain_autodiff": ({}, None),
        "plain_backprop": ({"gradient": "backprop"}, None),
        "dp_backprop": ({**dp, "gradient": "backprop"}, None),
        "dp_backprop_clip_only": ({"dp_clip_norm": CLIP, "gradient": "backprop"}, None),
        "dp_autodiff": (dp, 40 if wide else 100),
    }
    result: dict[str, Any] = {
        "architecture": sizes_label(sizes),
        "parameters": jaxmlp.parameter_count(sizes),
        "examples": n,
        "batch": BATCH,
        "clip": CLIP,
        "noise_multiplier": SIGMA,
    }
    for name, (options, max_steps) in variants.items():
        result[name] = _epoch_seconds(
            sizes,
            x,
            y,
            jaxmlp.ModelOptions(**options),
            None if mode.quick else max_steps,
            mode.epoch_repeats,
        )
        print(f"  {sizes_label(sizes)} {name}: {result[name]['seconds']:.2f} s", flush=True)
    base = result["plain_autodiff"]["seconds"]
    hand = result["dp_backprop"]["seconds"]
    result["ratios"] = {
        "dp_backprop_over_plain": hand / base,
        "dp_backprop_over_plain_backprop": hand / result["plain_backprop"]["seconds"],
        "dp_clip_only_over_plain": result["dp_backprop_clip_only"]["seconds"] / base,
        "dp_autodiff_over_dp_backprop": result["dp_autodiff"]["seconds"] / hand,
    }
    if use_torch:
        result["opacus"] = _opacus(sizes, x_np, y_np, mode, hand, wide)
    return result


def _opacus(sizes, x_np, y_np, mode: Mode, hand_seconds: float, wide: bool) -> dict[str, Any]:
    from benchmarks import privacy_torch

    if not privacy_torch.available():
        return {"skipped": "torch and opacus are not installed (pip install -e '.[bench]')"}
    params = jax.tree.map(np.asarray, jaxmlp.init_mlp(jax.random.key(0), sizes))
    sample_x, sample_y = x_np[:64], y_np[:64]
    ours = jaxmlp.per_example_grads(params, sample_x, sample_y)
    theirs = privacy_torch.opacus_per_example_grads(params, sample_x, sample_y)
    differences = [
        float(np.max(np.abs(np.asarray(a) - b)) / max(float(np.max(np.abs(b))), 1e-30))
        for a, b in zip(jax.tree.leaves(ours), jax.tree.leaves(theirs), strict=True)
    ]
    max_steps = None if mode.quick else (20 if wide else 60)
    common = dict(batch_size=BATCH, learning_rate=LEARNING_RATE, max_steps=max_steps)
    dp = privacy_torch.opacus_dp_epoch(
        params, x_np, y_np, clip_norm=CLIP, noise_multiplier=SIGMA, **common
    )
    plain = privacy_torch.torch_epoch(params, x_np, y_np, **common)

    def epoch(run):
        return run["seconds"] / run["steps"] * run["steps_per_epoch"]

    return {
        "per_sample_max_relative_difference": max(differences),
        "dp_epoch_seconds": epoch(dp),
        "plain_epoch_seconds": epoch(plain),
        "scaled_from_steps": dp["steps"] if dp["steps"] < dp["steps_per_epoch"] else None,
        "opacus_over_jaxmlp_dp_backprop": epoch(dp) / hand_seconds,
        "versions": privacy_torch.versions(),
    }


def run(mode: Mode, *, results: dict[str, Any], use_torch: bool = True) -> dict[str, Any]:
    grid = QUICK_GRID if mode.quick else FULL_GRID
    points = []
    for width in grid["widths"]:
        for batch in grid["batches"]:
            points.append(per_example_point(width, batch, mode))
            print(f"  per-example 784-{width}-{width}-10 batch {batch}", flush=True)
    models = QUICK_EPOCH_MODELS if mode.quick else EPOCH_MODELS
    epochs = [dp_epochs(sizes, mode, use_torch) for sizes in models]
    return {"per_example": points, "epochs": epochs, "memory_cap_bytes": MEMORY_CAP}
