"""deep-learning-from-scratch (Saito), chapters 4-6, with jaxmlp: TwoLayerNet training, the
gradient check, and the optimizer comparison.

The text's settings:
  * TwoLayerNet (ch. 4/5, ``train_neuralnet.py``): 784-50-10, ReLU, weights 0.01 * N(0, 1),
    biases 0; pixels / 255; minibatches of 100 drawn *with replacement*
    (``np.random.choice(60000, 100)``); SGD lr 0.1 on the batch-mean cross-entropy; 10000
    iterations; train and test accuracy every 600 iterations. The book's runs end near 0.98
    train / 0.97 test.
  * Gradient check (``gradient_check.py``): the same net, 3 training images, backprop against
    the central-difference gradient with h = 1e-4, in NumPy float64. The book prints mean
    absolute differences of about W1 1.8e-6, b1 2.4e-5, W2 6.2e-9, b2 1.4e-7. Its loss is
    ``-sum(t * log(y + 1e-7)) / B``, while its backward pass is the exact gradient of the loss
    *without* the 1e-7, so part of its difference comes from that constant; we check both
    losses, in float64 and float32, and then jax.grad against both.
  * Optimizer comparison (ch. 6, ``optimizer_compare_mnist.py``): 784-100-100-100-100-10,
    ReLU, He init (N(0, 2 / n_in), zero biases), batches of 128 drawn with replacement, 2000
    iterations, the minibatch loss recorded after each update and smoothed with the book's
    Kaiser window. SGD(0.01), Momentum(0.01, 0.9), AdaGrad(0.01), Adam(0.001) and RMSprop(0.01,
    decay 0.99). The book's losses at iteration 1900: SGD 0.150, Momentum 0.050, AdaGrad 0.016,
    Adam 0.032 (one run).

Matching the book's optimizers with optax (through ``jaxmlp.optimizer``):
  * Momentum: the book's v <- 0.9 v - lr g, w <- w + v is optax's trace v <- g + 0.9 v,
    w <- w - lr v with v_optax = -v_book / lr: identical.
  * AdaGrad: the book's h starts at 0 and divides by sqrt(h) + 1e-7; optax's adagrad starts at
    ``initial_accumulator_value`` (0.1 by default) and divides by sqrt(h + eps). We set
    ``initial_accumulator_value=0, eps=1e-7``: the two differ only where h ~ 1e-7 (a relative
    1e-7 / (2 h) change), and both leave an exactly-zero gradient history at zero.
  * Adam: the book's lr_t = lr sqrt(1 - b2^t) / (1 - b1^t), w -= lr_t m / (sqrt(v) + 1e-7) is
    optax's bias-corrected form with eps = 1e-7 / sqrt(1 - b2^t); we use ``eps=1e-7``: the same
    once sqrt(v_hat) >> 1e-7, i.e. after the first few steps.
  * RMSprop: h <- 0.99 h + 0.01 g^2, w -= lr g / (sqrt(h) + 1e-7); optax ``decay=0.99,
    eps=1e-7`` (eps inside the root).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

import jaxmlp
import jaxmlp.multi
from experiments import common

BOOK_GRAD_CHECK = {"W1": 1.8e-6, "b1": 2.4e-5, "W2": 6.2e-9, "b2": 1.4e-7}
BOOK_LOSS_1900 = {"SGD": 0.150, "Momentum": 0.050, "AdaGrad": 0.016, "Adam": 0.032}
OPTIMIZERS = {
    "SGD": ("sgd", 0.01, {}),
    "Momentum": ("momentum", 0.01, {"momentum": 0.9}),
    "AdaGrad": ("adagrad", 0.01, {"initial_accumulator_value": 0.0, "eps": 1e-7}),
    "Adam": ("adam", 0.001, {"eps": 1e-7}),
    "RMSprop": ("rmsprop", 0.01, {"decay": 0.99, "eps": 1e-7}),
}


@functools.partial(jax.jit, static_argnames=("batch_size", "steps"))
def sample_and_train(state, images, labels, batch_size, steps):
    """``steps`` updates on minibatches drawn with replacement; returns the minibatch loss
    *after* each update, as the book records it (``network.loss`` after ``optimizer.update``)."""
    n = images.shape[0]

    def body(state, _):
        key = jax.random.fold_in(jax.random.wrap_key_data(state.key), state.step)
        index = jax.random.randint(jax.random.fold_in(key, 1), (batch_size,), 0, n)
        xb, yb = images[index], labels[index]
        state, _ = jaxmlp.train_step(state, xb, yb)
        return state, jaxmlp.loss(state.params, xb, yb, activation=state.options.activation)

    return jax.lax.scan(body, state, None, length=steps)


# ---------------------------------------------------------------------------------------------


def two_layer_net(ds, iterations: int, seed: int = 0) -> dict:
    init_key, train_key = jax.random.split(jax.random.key(seed))
    params = common.zero_biases(
        jaxmlp.init_mlp(init_key, (784, 50, 10), init="normal", init_scale=0.01)
    )
    state = jaxmlp.create_train_state(
        train_key, (784, 50, 10), jaxmlp.optimizer("sgd", 0.1), params=params
    )
    x, y = jnp.asarray(ds.train.images), jnp.asarray(ds.train.labels)
    history, done = [], 0
    losses = []
    with common.timer() as t:
        while done < iterations:
            steps = min(600, iterations - done)
            state, loss = sample_and_train(state, x, y, 100, steps)
            losses.append(np.asarray(loss))
            done += steps
            train = jaxmlp.evaluate(state.params, x, y)["accuracy"]
            test = jaxmlp.evaluate(state.params, ds.test.images, ds.test.labels)["accuracy"]
            history.append({"iteration": done, "train_accuracy": train, "test_accuracy": test})
            print(f"iteration {done:5d}: train acc, test acc | {train:.4f}, {test:.4f}", flush=True)
    return {"history": history, "loss": np.concatenate(losses), "seconds": t["seconds"]}


def gradient_check(ds) -> dict:
    """Backprop vs the central difference (h = 1e-4) on 3 training images, then jax.grad."""
    names = ["W1", "b1", "W2", "b2"]

    def flat(report):
        values = _ordered(list(report.values()), report)
        return {n: v["mean_abs_diff"] for n, v in zip(names, values, strict=True)}

    results = {}
    for dtype_name in ("float64", "float32"):
        with jax.enable_x64(dtype_name == "float64"):
            dtype = jnp.dtype(dtype_name)
            p = common.zero_biases(
                jaxmlp.init_mlp(
                    jax.random.key(0), (784, 50, 10), init="normal", init_scale=0.01, dtype=dtype
                )
            )
            x = jnp.asarray(ds.train.images[:3], dtype)
            y = jnp.asarray(ds.train.labels[:3])
            t = jax.nn.one_hot(y, 10, dtype=dtype)

            def ours(q, x=x, y=y):
                return jaxmlp.loss(q, x, y)

            def book(q, x=x, t=t):
                probabilities = jax.nn.softmax(jaxmlp.forward(q, x), axis=-1)
                return -jnp.sum(t * jnp.log(probabilities + 1e-7)) / x.shape[0]

            _, by_hand = jaxmlp.backprop(p, x, y)
            autodiff = jax.grad(ours)(p)
            numerical = jaxmlp.numerical_grad(ours, p, 1e-4)
            numerical_book = jaxmlp.numerical_grad(book, p, 1e-4)
            results[dtype_name] = {
                "backprop vs numerical (book's loss with +1e-7)": flat(
                    jaxmlp.grad_check(by_hand, numerical_book)
                ),
                "backprop vs numerical": flat(jaxmlp.grad_check(by_hand, numerical)),
                "autodiff vs numerical": flat(jaxmlp.grad_check(autodiff, numerical)),
                "autodiff vs backprop": flat(jaxmlp.grad_check(autodiff, by_hand)),
                "mean |gradient|": {
                    n: float(jnp.mean(jnp.abs(g)))
                    for n, g in zip(
                        names,
                        [autodiff[0]["w"], autodiff[0]["b"], autodiff[1]["w"], autodiff[1]["b"]],
                        strict=True,
                    )
                },
            }
    return results


def kink_fraction(ds, inits: int = 1000, h: float = 1e-4) -> dict:
    """How often a random TwoLayerNet init puts a hidden pre-activation of the 3 check images
    within h of ReLU's kink, where the central difference straddles it and is wrong."""
    x = jnp.asarray(ds.train.images[:3])
    counts = np.array(
        [
            int(
                jnp.sum(
                    jnp.abs(
                        x
                        @ jaxmlp.init_mlp(
                            jax.random.key(s), (784, 50, 10), init="normal", init_scale=0.01
                        )[0]["w"]
                    )
                    < h
                )
            )
            for s in range(inits)
        ]
    )
    return {
        "inits": inits,
        "h": h,
        "fraction_with_a_unit_within_h": float(np.mean(counts > 0)),
        "mean_units_within_h": float(counts.mean()),
    }


def _ordered(values, report):
    """grad_check's keys are pytree paths ([0]['b'], [0]['w'], ...): order them W1 b1 W2 b2."""
    keys = list(report)
    order = [k for layer in range(2) for k in (f"[{layer}]['w']", f"[{layer}]['b']")]
    return [values[keys.index(k)] for k in order]


def optimizer_comparison(ds, seeds: list[int], iterations: int, out, quick) -> dict:
    sizes = (784, 100, 100, 100, 100, 10)
    x, y = jnp.asarray(ds.train.images), jnp.asarray(ds.train.labels)
    results = {}
    for name, (kind, lr, hp) in OPTIMIZERS.items():
        optimizer = jaxmlp.optimizer(kind, lr, **hp)
        states = jaxmlp.multi.stack_states(
            [
                jaxmlp.create_train_state(jax.random.key(seed), sizes, optimizer, init="he")
                for seed in seeds
            ]
        )
        run = jax.jit(
            jax.vmap(
                lambda s, x, y: sample_and_train(s, x, y, 128, iterations), in_axes=(0, None, None)
            )
        )
        with common.timer() as t:
            states, losses = common.block(run(states, x, y))
        losses = np.asarray(losses)
        at = min(1900, iterations - 1)
        results[name] = {
            "optimizer": kind,
            "lr": lr,
            "hyperparameters": hp,
            "seeds": seeds,
            "loss": losses,
            "loss_at_1900": common.mean_std(losses[:, at]),
            "loss_at_1900_seed0": float(losses[0, at]),
            "smoothed_last_100_mean": common.mean_std(losses[:, -100:].mean(axis=1)),
            "seconds": t["seconds"],
        }
        print(
            f"{name:9s} loss@{at}: seed0 {losses[0, at]:.3f}, mean {losses[:, at].mean():.3f} "
            f"+- {losses[:, at].std(ddof=1) if len(seeds) > 1 else 0:.3f}; last-100 mean "
            f"{losses[:, -100:].mean():.3f} ({t['seconds']:.0f} s)",
            flush=True,
        )
    return results


def plot(two, opt, path):
    plt = common.pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(16, 4))
    its = [h["iteration"] for h in two["history"]]
    axes[0].plot(its, [h["train_accuracy"] for h in two["history"]], "o-", label="train acc")
    axes[0].plot(its, [h["test_accuracy"] for h in two["history"]], "s--", label="test acc")
    axes[0].set(
        xlabel="iterations", ylabel="accuracy", ylim=(0, 1), title="TwoLayerNet 784-50-10, SGD 0.1"
    )
    axes[0].legend(loc="lower right")
    markers = {"SGD": "o", "Momentum": "x", "AdaGrad": "s", "Adam": "D", "RMSprop": "v"}
    for name, r in opt.items():
        loss = np.asarray(r["loss"])
        steps = np.arange(loss.shape[1])
        axes[1].plot(
            steps, common.smooth_curve(loss[0]), marker=markers[name], markevery=100, label=name
        )
        mean = np.array([common.smooth_curve(run) for run in loss])
        axes[2].plot(steps, mean.mean(0), label=name)
        axes[2].fill_between(
            steps, np.percentile(mean, 10, 0), np.percentile(mean, 90, 0), alpha=0.2
        )
    axes[1].set(xlabel="iterations", ylabel="loss", ylim=(0, 1), title="one run (seed 0)")
    axes[2].set(
        xlabel="iterations",
        ylabel="loss",
        ylim=(0, 1),
        title=f"mean and 10-90 % band over {loss.shape[0]} seeds",
    )
    axes[1].legend()
    axes[2].legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main():
    def extra(parser):
        parser.add_argument(
            "--seeds", type=int, default=10, help="seeds of the optimizer comparison"
        )
        parser.add_argument(
            "--kinks-only",
            action="store_true",
            help="only count ReLU kinks within h of the gradient check's inputs",
        )

    args = common.arguments(__doc__.splitlines()[0], extra)
    name = "dlfs"
    ds = common.load("mnist", normalize="unit")
    if args.kinks_only:
        common.save("dlfs_kinks", kink_fraction(ds), args.out, args.quick)
        return
    result: dict = {
        "reported": {
            "grad_check": BOOK_GRAD_CHECK,
            "loss_at_1900": BOOK_LOSS_1900,
            "two_layer_net_test_accuracy": 0.97,
        }
    }
    with common.timer() as total:
        result["gradient_check"] = gradient_check(ds)
        for dtype, rows in result["gradient_check"].items():
            for row, values in rows.items():
                print(
                    dtype,
                    f"{row:48s}",
                    " ".join(f"{k} {v:.1e}" for k, v in values.items()),
                    flush=True,
                )
        common.save(name, result, args.out, args.quick)
        result["two_layer_net"] = two_layer_net(ds, 1200 if args.quick else 10000)
        common.save(name, result, args.out, args.quick)
        seeds = list(range(2 if args.quick else args.seeds))
        result["optimizer_comparison"] = optimizer_comparison(
            ds, seeds, 200 if args.quick else 2000, args.out, args.quick
        )
    result["wall_seconds"] = total["seconds"]
    plot(
        result["two_layer_net"],
        result["optimizer_comparison"],
        common.figure_path(name, args.out, args.quick),
    )
    common.save(name, result, args.out, args.quick)


if __name__ == "__main__":
    main()
