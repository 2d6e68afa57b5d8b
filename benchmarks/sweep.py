"""Section ``sweep``: many small models trained as one stack against one by one.

What ``jaxmlp sweep`` does with N configurations that differ in learning rate, L2 coefficient
and seed: one vmapped program trains them all (:func:`jaxmlp.multi.fit`, the numbers held as
arrays). The alternative is what a loop over ``jaxmlp.fit`` does: each model its own optimizer,
its own compiled epoch, one after another. Both train the same models on the same data (a
784-64-10 ReLU network, Adam, batch 128, MNIST-sized synthetic data); per round, the two are
run back to back, and the figure is the median over rounds of the ratio with its spread.

Two times per approach: *end to end* (the compile included, as a user waits for it) and the
*epoch* (compiled, per epoch of all N models).
"""

from __future__ import annotations

import statistics
import time
from typing import Any

import jax
import numpy as np

import jaxmlp
from benchmarks.common import Mode, synthetic_mnist
from jaxmlp import multi
from jaxmlp.training import with_hyperparams

SIZES = (784, 64, 10)
BATCH = 128


def _configs(n: int) -> list[dict[str, float]]:
    rng = np.random.default_rng(n)
    return [
        {
            "learning_rate": float(f"{10 ** rng.uniform(-4, -2):.4g}"),
            "l2": float(f"{10 ** rng.uniform(-6, -4):.4g}"),
            "seed": seed,
        }
        for seed in range(n)
    ]


def _stack(configs, x, y, epochs: int) -> dict[str, float]:
    """One stack of every configuration: compile, then ``epochs`` epochs."""
    start = time.perf_counter()
    settings = jaxmlp.OptimizerSettings(learning_rate=1e-3)
    optimizer = multi.stackable_optimizer(settings, 1000, ("learning_rate",))
    states = multi.stack_states(
        [
            multi.set_optimizer_hyperparams(
                with_hyperparams(
                    jaxmlp.create_train_state(jax.random.key(c["seed"]), SIZES, optimizer),
                    l2=c["l2"],
                ),
                learning_rate=c["learning_rate"],
            )
            for c in configs
        ]
    )
    program = multi.stacked_epoch_program.lower(states, x, y, BATCH).compile()
    compiled = time.perf_counter()
    epoch_seconds = []
    for _ in range(epochs):
        begin = time.perf_counter()
        states, metrics = program(states, x, y)
        jax.block_until_ready((states, metrics))
        epoch_seconds.append(time.perf_counter() - begin)
    return {
        "end_to_end_s": time.perf_counter() - start,
        "compile_s": compiled - start,
        "epoch_s": statistics.median(epoch_seconds),
    }


def _one_by_one(configs, x, y, epochs: int) -> dict[str, float]:
    """Every configuration alone, as a loop over :func:`jaxmlp.fit` runs it: each its own
    optimizer (a static learning rate) and so its own compile."""
    start = time.perf_counter()
    compile_s = epoch_s = 0.0
    for c in configs:
        optimizer = jaxmlp.optimizer("adam", c["learning_rate"])
        _, history = jaxmlp.fit(
            jax.random.key(c["seed"]),
            SIZES,
            x,
            y,
            optimizer=optimizer,
            epochs=epochs,
            batch_size=BATCH,
            l2=c["l2"],
        )
        compile_s += history[0]["compile_seconds"]
        steady = [r["seconds"] for r in history[1:]] or [
            history[0]["seconds"] - history[0]["compile_seconds"]
        ]
        epoch_s += statistics.median(steady)
    return {"end_to_end_s": time.perf_counter() - start, "compile_s": compile_s, "epoch_s": epoch_s}


def _spread(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def run(mode: Mode, **_: Any) -> dict[str, Any]:
    counts = (2, 4) if mode.quick else (16, 64)
    rounds = 1 if mode.quick else 3
    epochs = 2
    examples = 512 if mode.quick else 10_000
    x, y = synthetic_mnist(examples)
    x, y = jax.numpy.asarray(x), jax.numpy.asarray(y)
    rows = []
    for n in counts:
        configs = _configs(n)
        stacked, alone = [], []
        for round_ in range(rounds):
            # Alternate which goes first, so that drift of the machine's speed hits both.
            order = (_stack, _one_by_one) if round_ % 2 == 0 else (_one_by_one, _stack)
            for approach in order:
                result = approach(configs, x, y, epochs)
                (stacked if approach is _stack else alone).append(result)
            print(
                f"  {n} models, round {round_ + 1}: stack {stacked[-1]['end_to_end_s']:.1f} s, "
                f"one by one {alone[-1]['end_to_end_s']:.1f} s",
                flush=True,
            )
        rows.append(
            {
                "models": n,
                "rounds": rounds,
                "epochs": epochs,
                "examples": examples,
                "stack": stacked,
                "one_by_one": alone,
                "end_to_end_speedup": _spread(
                    [
                        a["end_to_end_s"] / s["end_to_end_s"]
                        for s, a in zip(stacked, alone, strict=True)
                    ]
                ),
                "epoch_speedup": _spread(
                    [a["epoch_s"] / s["epoch_s"] for s, a in zip(stacked, alone, strict=True)]
                ),
            }
        )
    return {"model": "-".join(map(str, SIZES)), "batch_size": BATCH, "rows": rows}
