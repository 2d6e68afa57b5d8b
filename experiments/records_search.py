"""The search behind the record recipes: candidate settings scored on the validation split only.

Every candidate trains on the first 55000 training images (two seeds at once, one ``jax.vmap``)
and is scored on the last 5000 after every epoch; the official test set is never loaded here.
The recipe that :mod:`experiments.records` uses for each task is the best candidate by final
validation accuracy (mean of the seeds) among those whose 2-core wall time fits the budget.

    python -m experiments.records_search --task mnist [--only base,w2048] [--seeds 2]
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np

import jaxmlp
import jaxmlp.multi
from experiments import common

BASE = {
    "width": 1024,
    "depth": 2,
    "dropout_rate": 0.5,
    "input_dropout_rate": 0.2,
    "max_norm": 3.0,
    "lr": 1e-3,
    "batch": 128,
    "epochs": 100,
    "augment_shift": 0,
    "augment_rotate": 0.0,
    "augment_scale": 0.0,
    "smoothing": 0.0,
    "optimizer": "adam",
    "adversarial_epsilon": 0.0,
    "vat_epsilon": 0.0,
}
SMALL = {"width": 512, "epochs": 20}
NO_DROPOUT = {"dropout_rate": 0.0, "input_dropout_rate": 0.0}

AFFINE = {"augment_shift": 2, "augment_rotate": 10.0, "augment_scale": 0.1}

GRIDS = {
    "mnist": {
        "base": {},
        "w2048": {"width": 2048},
        "e200": {"epochs": 200},
        "smooth0.1": {"smoothing": 0.1},
        "lr2e-3": {"lr": 2e-3},
        "maxnorm2": {"max_norm": 2.0},
        "maxnorm4": {"max_norm": 4.0},
        "depth3": {"depth": 3},
        "batch64": {"batch": 64},
        "batch256_lr2e-3": {"batch": 256, "lr": 2e-3},
        # second round
        "dropout0.3": {"dropout_rate": 0.3, "input_dropout_rate": 0.1},
        "dropout0.4": {"dropout_rate": 0.4, "input_dropout_rate": 0.2},
        "input0.1": {"input_dropout_rate": 0.1},
        "w1536_e150": {"width": 1536, "epochs": 150},
        # third round: beyond what fits 20 minutes on 2 cores, to see where the recipe goes
        "w4096": {"width": 4096},
        "w2048_e300": {"width": 2048, "epochs": 300},
        "nesterov_lr0.1": {"optimizer": "nesterov", "lr": 0.1},
        # fourth round (2-core CPU, one seed): adversarial regularisers, screened on a small,
        # short run (784-512-512-10, 20 epochs) before any full-size candidate
        "small": SMALL,
        "small_fgsm0.05": {**SMALL, "adversarial_epsilon": 0.05},
        "small_fgsm0.1": {**SMALL, "adversarial_epsilon": 0.1},
        "small_vat2": {**SMALL, "vat_epsilon": 2.0},
        "small_vat1": {**SMALL, "vat_epsilon": 1.0},
        "small_vat2_nodropout": {**SMALL, **NO_DROPOUT, "vat_epsilon": 2.0},
        "small_vat1.5_nodropout": {**SMALL, **NO_DROPOUT, "vat_epsilon": 1.5},
        "small_vat3_nodropout": {**SMALL, **NO_DROPOUT, "vat_epsilon": 3.0},
        "small_vat2_dropout0.1": {
            **SMALL,
            "dropout_rate": 0.1,
            "input_dropout_rate": 0.0,
            "vat_epsilon": 2.0,
        },
        "small_vat2_nodropout_e40": {**SMALL, **NO_DROPOUT, "vat_epsilon": 2.0, "epochs": 40},
        # ... then full-length candidates that fit 20 minutes on 2 cores
        "vat2_w512_e200": {**NO_DROPOUT, "vat_epsilon": 2.0, "width": 512, "epochs": 200},
        "vat2_e70": {**NO_DROPOUT, "vat_epsilon": 2.0, "epochs": 70},
    },
    "mnist_augment": {
        "shift2": {"augment_shift": 2},
        "affine": AFFINE,
        "affine15": {"augment_shift": 2, "augment_rotate": 15.0, "augment_scale": 0.15},
        "affine_shift1": {"augment_shift": 1, "augment_rotate": 10.0, "augment_scale": 0.1},
        "affine_e200": {**AFFINE, "epochs": 200},
        "affine_w2048": {**AFFINE, "width": 2048},
        "affine_smooth0.1": {**AFFINE, "smoothing": 0.1},
        "affine_dropout0.3": {**AFFINE, "dropout_rate": 0.3, "input_dropout_rate": 0.1},
        # second round
        "affine_dropout0.2_0": {**AFFINE, "dropout_rate": 0.2, "input_dropout_rate": 0.0},
        "affine_dropout0.3_e150": {
            **AFFINE,
            "dropout_rate": 0.3,
            "input_dropout_rate": 0.1,
            "epochs": 150,
        },
        "affine_dropout0.3_w2048": {
            **AFFINE,
            "dropout_rate": 0.3,
            "input_dropout_rate": 0.1,
            "width": 2048,
        },
        "affine15_dropout0.3": {
            "augment_shift": 2,
            "augment_rotate": 15.0,
            "augment_scale": 0.15,
            "dropout_rate": 0.3,
            "input_dropout_rate": 0.1,
        },
        "affine_shift3_dropout0.3": {
            **AFFINE,
            "augment_shift": 3,
            "dropout_rate": 0.3,
            "input_dropout_rate": 0.1,
        },
    },
    "fashion": {
        "base": {},
        "w2048": {"width": 2048},
        "e200": {"epochs": 200},
        "dropout0.3": {"dropout_rate": 0.3, "input_dropout_rate": 0.1},
        "smooth0.1": {"smoothing": 0.1},
        "shift1": {"augment_shift": 1},
        "affine_small": {"augment_shift": 1, "augment_rotate": 5.0, "augment_scale": 0.05},
        "depth3": {"depth": 3},
        "lr2e-3": {"lr": 2e-3},
        # second round
        "dropout0.2_0": {"dropout_rate": 0.2, "input_dropout_rate": 0.0},
        "dropout0.4_0.1": {"dropout_rate": 0.4, "input_dropout_rate": 0.1},
        "dropout0.3_e200": {"dropout_rate": 0.3, "input_dropout_rate": 0.1, "epochs": 200},
        "dropout0.3_w2048": {"dropout_rate": 0.3, "input_dropout_rate": 0.1, "width": 2048},
        "dropout0.3_smooth0.1": {"dropout_rate": 0.3, "input_dropout_rate": 0.1, "smoothing": 0.1},
    },
}
DATASET = {"mnist": "mnist", "mnist_augment": "mnist", "fashion": "fashion_mnist"}


# The keys of a candidate that are ModelOptions fields, by their own names.
OPTION_KEYS = (
    "dropout_rate",
    "input_dropout_rate",
    "max_norm",
    "augment_shift",
    "augment_rotate",
    "augment_scale",
    "adversarial_epsilon",
    "vat_epsilon",
)


def options_of(c: dict) -> jaxmlp.ModelOptions:
    return jaxmlp.ModelOptions(activation="relu", **{key: c[key] for key in OPTION_KEYS})


def smoothed(labels, smoothing: float, classes: int = 10):
    """Integer labels, or label-smoothed probability rows when ``smoothing`` > 0."""
    if not smoothing:
        return labels
    return jax.nn.one_hot(labels, classes) * (1 - smoothing) + smoothing / classes


def train(c: dict, x, y, xv, yv, seeds, log_every: int = 10) -> dict:
    """Train the stacked seeds of one setting; validation accuracy after every epoch."""
    sizes = (784, *[c["width"]] * c["depth"], 10)
    steps = c["epochs"] * -(-x.shape[0] // c["batch"])
    optimizer = jaxmlp.optimizer(c["optimizer"], jaxmlp.schedule("cosine", c["lr"], steps))
    options = options_of(c)
    states = jaxmlp.multi.stack_states(
        [
            jaxmlp.create_train_state(jax.random.key(s), sizes, optimizer, options=options)
            for s in seeds
        ]
    )
    labels = smoothed(y, c["smoothing"])
    curve, start = [], time.perf_counter()
    for epoch in range(1, c["epochs"] + 1):
        states, metrics = jaxmlp.multi.train_epoch(states, x, labels, batch_size=c["batch"])
        valid = jaxmlp.multi.evaluate(states, xv, yv)["accuracy"]
        curve.append(valid)
        if epoch % log_every == 0 or epoch == c["epochs"]:
            print(
                f"  epoch {epoch:3d} loss {np.asarray(metrics['loss']).round(4)} valid "
                f"{valid.round(4)} ({time.perf_counter() - start:.0f} s)",
                flush=True,
            )
    return {
        "config": c,
        "validation_curve": np.array(curve),
        "final_validation": curve[-1],
        "final_validation_mean": float(np.mean(curve[-1])),
        "seconds": time.perf_counter() - start,
    }


def extra(parser):
    parser.add_argument("--task", choices=GRIDS, default="mnist")
    parser.add_argument("--only", default="", help="comma-separated candidate names")
    parser.add_argument("--seeds", type=int, default=2)


def main():
    args = common.arguments(__doc__.splitlines()[0], extra)
    grid = GRIDS[args.task]
    names = [n for n in args.only.split(",") if n] or list(grid)
    unknown = sorted(set(names) - set(grid))
    if unknown:
        raise SystemExit(f"unknown candidates {unknown}; expected some of {list(grid)}")
    ds = common.load(DATASET[args.task], normalize="unit", validation=5000)
    x, y = jnp.asarray(ds.train.images), jnp.asarray(ds.train.labels)
    xv, yv = jnp.asarray(ds.validation.images), jnp.asarray(ds.validation.labels)
    seeds = list(range(1 if args.quick else args.seeds))
    results = {}
    for name in names:
        c = {**BASE, **grid[name]}
        if args.quick:
            c.update(epochs=1, width=32)
            x, y = x[:2000], y[:2000]
        print(f"{args.task} {name}: {c}", flush=True)
        results[name] = train(c, x, y, xv, yv, seeds)
        r = results[name]
        print(
            f"{name}: final validation {r['final_validation']} mean "
            f"{r['final_validation_mean']:.4f} ({r['seconds']:.0f} s)",
            flush=True,
        )
    ranking = sorted(results, key=lambda n: -results[n]["final_validation_mean"])
    for name in ranking:
        print(f"{name:22s} {results[name]['final_validation_mean']:.4f}")
    common.save(
        f"records_search_{args.task}",
        {
            "seeds": seeds,
            "validation": "last 5000 training images",
            "candidates": results,
            "ranking": ranking,
        },
        args.out,
        args.quick,
    )


if __name__ == "__main__":
    main()
