"""Many models in one compiled program: ``jax.vmap`` over train states, against a Python loop.

Two cases, each timed both ways (compile and run reported separately), with a check that the
vmapped models end where the one-by-one models end:
  * seeds: the deep-learning-from-scratch optimizer comparison's network (784-100-100-100-100-10,
    ReLU, He init, Adam 0.001 with eps 1e-7, batches of 128 drawn with replacement), 10 seeds;
  * learning rates: SGD on a 784-100-10 ReLU MLP over whole epochs (``train_epoch``'s scan,
    batch 100), 8 learning rates from 0.01 to 1.0. The learning rate is a leaf of the optimizer
    state (``optax.inject_hyperparams``), so one optimizer, hence one compiled step, serves all
    of them and vmap maps over the rates like over any other leaf.
A train state's static fields (optimizer, model options) must be the same object for all the
stacked states; everything that differs (parameters, keys, learning rates) is a leaf.
"""

from __future__ import annotations

import functools
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

import jaxmlp
import jaxmlp.multi
from experiments import common, dlfs


def _timed(function, *args):
    """(outputs, compile seconds, run seconds) of ``jax.jit(function)(*args)``."""
    start = time.perf_counter()
    compiled = jax.jit(function).lower(*args).compile()
    compile_seconds = time.perf_counter() - start
    start = time.perf_counter()
    outputs = common.block(compiled(*args))
    return outputs, compile_seconds, time.perf_counter() - start


def seeds_case(ds, n_seeds: int, steps: int) -> dict:
    x, y = jnp.asarray(ds.train.images), jnp.asarray(ds.train.labels)
    optimizer = jaxmlp.optimizer("adam", 1e-3, eps=1e-7)
    sizes = (784, 100, 100, 100, 100, 10)
    states = [
        jaxmlp.create_train_state(jax.random.key(s), sizes, optimizer) for s in range(n_seeds)
    ]

    def one(state, x, y):
        return dlfs.sample_and_train(state, x, y, 128, steps)

    start = time.perf_counter()
    compiled = jax.jit(one).lower(states[0], x, y).compile()
    sequential_compile = time.perf_counter() - start
    start = time.perf_counter()
    sequential = [common.block(compiled(s, x, y))[1] for s in states]
    sequential_run = time.perf_counter() - start
    (_, vmapped), vmap_compile, vmap_run = _timed(
        jax.vmap(one, in_axes=(0, None, None)), jaxmlp.multi.stack_states(states), x, y
    )
    difference = float(np.max(np.abs(np.asarray(vmapped) - np.stack(sequential))))
    return {
        "models": n_seeds,
        "steps": steps,
        "batch_size": 128,
        "network": sizes,
        "sequential": {"compile_seconds": sequential_compile, "run_seconds": sequential_run},
        "vmapped": {"compile_seconds": vmap_compile, "run_seconds": vmap_run},
        "max_abs_loss_difference": difference,
        "final_loss_mean": float(np.asarray(vmapped)[:, -100:].mean()),
    }


def learning_rate_case(ds, learning_rates, epochs: int) -> dict:
    x, y = jnp.asarray(ds.train.images), jnp.asarray(ds.train.labels)
    sizes = (784, 100, 10)
    optimizer = optax.inject_hyperparams(optax.sgd)(learning_rate=0.1)

    def state_for(lr):
        state = jaxmlp.create_train_state(jax.random.key(0), sizes, optimizer)
        opt_state = state.opt_state
        opt_state.hyperparams["learning_rate"] = jnp.asarray(lr, jnp.float32)
        return state.replace(opt_state=opt_state)

    states = [state_for(lr) for lr in learning_rates]
    epoch = functools.partial(jaxmlp.train_epoch, batch_size=100)

    def train(state, x, y):
        losses = []
        for _ in range(epochs):
            state, metrics = epoch(state, x, y)
            losses.append(metrics["loss"])
        return state, jnp.stack(losses)

    start = time.perf_counter()
    compiled = jax.jit(train).lower(states[0], x, y).compile()
    sequential_compile = time.perf_counter() - start
    start = time.perf_counter()
    sequential = [common.block(compiled(s, x, y)) for s in states]
    sequential_run = time.perf_counter() - start
    (final, losses), vmap_compile, vmap_run = _timed(
        jax.vmap(train, in_axes=(0, None, None)), jaxmlp.multi.stack_states(states), x, y
    )
    difference = float(
        max(
            np.max(np.abs(np.asarray(a) - np.asarray(b)))
            for s, i in zip(sequential, range(len(states)), strict=True)
            for a, b in zip(
                jax.tree.leaves(s[0].params),
                jax.tree.leaves(jax.tree.map(lambda leaf, i=i: leaf[i], final.params)),
                strict=True,
            )
        )
    )
    evaluate = jax.vmap(
        lambda state: jaxmlp.evaluate(state, ds.test.images, ds.test.labels, batch_size=2000)
    )
    test = evaluate(final)
    return {
        "models": len(learning_rates),
        "epochs": epochs,
        "batch_size": 100,
        "network": sizes,
        "learning_rates": list(learning_rates),
        "test_accuracy": np.asarray(test["accuracy"]),
        "train_loss_per_epoch": np.asarray(losses),
        "sequential": {"compile_seconds": sequential_compile, "run_seconds": sequential_run},
        "vmapped": {"compile_seconds": vmap_compile, "run_seconds": vmap_run},
        "max_abs_parameter_difference": difference,
    }


def main():
    args = common.arguments(__doc__.splitlines()[0])
    name = "multimodel"
    ds = common.load("mnist", normalize="unit")
    quick = args.quick
    result = {"seeds": seeds_case(ds, 3 if quick else 10, 50 if quick else 300)}
    print("seeds", result["seeds"], flush=True)
    rates = [0.01, 0.03, 0.1, 0.3, 1.0] if quick else [0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 1.0]
    result["learning_rates"] = learning_rate_case(ds, rates, 1 if quick else 2)
    print("learning rates", result["learning_rates"], flush=True)
    common.save(name, result, args.out, quick)

    plt = common.pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    labels = [
        f"{result['seeds']['models']} seeds\n(Adam, {result['seeds']['steps']} steps)",
        f"{len(rates)} learning rates\n(SGD, {result['learning_rates']['epochs']} epochs)",
    ]
    for offset, mode in ((-0.2, "sequential"), (0.2, "vmapped")):
        axes[0].bar(
            np.arange(2) + offset,
            [result[c][mode]["run_seconds"] for c in ("seeds", "learning_rates")],
            0.4,
            label=f"{mode} (run)",
        )
    axes[0].set_xticks(np.arange(2), labels)
    axes[0].set(ylabel="wall seconds (compile excluded)")
    axes[0].legend()
    lr = result["learning_rates"]
    axes[1].semilogx(lr["learning_rates"], lr["test_accuracy"], "o-")
    axes[1].set(
        xlabel="learning rate",
        ylabel="test accuracy",
        title="SGD learning-rate sweep, 784-100-10, one vmapped program",
    )
    fig.tight_layout()
    fig.savefig(common.figure_path(name, args.out, quick))


if __name__ == "__main__":
    main()
