"""Plain-MLP records on MNIST and Fashion-MNIST: dropout + max-norm MLPs, several seeds at once.

The recipe (Srivastava et al. 2014's dropout MLPs, with Adam and a cosine schedule):
  784-1024-1024-10, ReLU, He init; inverted dropout 0.2 on the pixels and 0.5 on each hidden
  layer; after every step each unit's incoming weight vector is rescaled to norm <= 3;
  Adam(1e-3) with cosine decay to 0 over the run; batch 128; pixels / 255.
  ``--task mnist``: no augmentation. ``--task mnist_shift``: each training image shifted by up to
  +-2 pixels on each axis inside the compiled step. ``--task fashion``: Fashion-MNIST, no
  augmentation.
Training uses the first 55000 training images; the last 5000 are the validation set, scored
after every epoch; the official test set is scored once, at the end, and never used to choose
anything. The seeds train together: one ``jax.vmap`` over their train states per epoch.
"""

from __future__ import annotations

import functools
import time

import jax
import jax.numpy as jnp
import numpy as np

import jaxmlp
import jaxmlp.training
from experiments import common, dlfs

TASKS = {
    "mnist": {"dataset": "mnist", "augment_shift": 0, "epochs": 100, "target": 0.990},
    "mnist_shift": {"dataset": "mnist", "augment_shift": 2, "epochs": 60, "target": 0.993},
    "fashion": {"dataset": "fashion_mnist", "augment_shift": 0, "epochs": 100, "target": 0.910},
}


def extra(parser):
    parser.add_argument("--task", choices=TASKS, default="mnist")
    parser.add_argument("--epochs", type=int, default=None, help="default: the task's")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--width", type=int, default=1024)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--lr", type=float, default=1e-3)


def main():
    args = common.arguments(__doc__.splitlines()[0], extra)
    task = TASKS[args.task]
    epochs = 1 if args.quick else (args.epochs or task["epochs"])
    width = 64 if args.quick else args.width
    seeds = list(range(1 if args.quick else args.seeds))
    name = f"records_{args.task}"
    ds = common.load(task["dataset"], normalize="unit", validation=5000)
    x, y = jnp.asarray(ds.train.images), jnp.asarray(ds.train.labels)
    if args.quick:
        x, y = x[:2000], y[:2000]
    steps = epochs * -(-x.shape[0] // args.batch)
    options = jaxmlp.ModelOptions(
        activation="relu",
        dropout_rate=0.5,
        input_dropout_rate=0.2,
        max_norm=3.0,
        augment_shift=task["augment_shift"],
    )
    optimizer = jaxmlp.optimizer("adam", jaxmlp.schedule("cosine", args.lr, steps))
    sizes = (784, width, width, 10)
    states = dlfs.stack(
        [
            jaxmlp.create_train_state(jax.random.key(s), sizes, optimizer, options=options)
            for s in seeds
        ]
    )
    epoch = jax.jit(
        jax.vmap(
            functools.partial(
                jaxmlp.training._train_epoch,
                batch_size=args.batch,
                progress=None,
                progress_every=50,
            ),
            in_axes=(0, None, None),
        )
    )
    score = jax.jit(
        jax.vmap(
            lambda p, images, labels: jaxmlp.training._evaluate(p, images, labels, options, 1000),
            in_axes=(0, None, None),
        )
    )
    xv, yv = jnp.asarray(ds.validation.images), jnp.asarray(ds.validation.labels)
    history = []
    start = time.perf_counter()
    for e in range(1, epochs + 1):
        states, metrics = epoch(states, x, y)
        valid = score(states.params, xv, yv)
        history.append(
            {
                "epoch": e,
                "loss": np.asarray(metrics["loss"]),
                "validation_accuracy": np.asarray(valid["accuracy"]),
                "seconds": time.perf_counter() - start,
            }
        )
        print(
            f"epoch {e:3d} loss {np.asarray(metrics['loss']).round(4)} valid "
            f"{np.asarray(valid['accuracy']).round(4)} ({history[-1]['seconds']:.0f} s)",
            flush=True,
        )
    wall = time.perf_counter() - start
    test = score(states.params, jnp.asarray(ds.test.images), jnp.asarray(ds.test.labels))
    accuracies = np.asarray(test["accuracy"])
    summary = common.mean_std(accuracies)
    print(f"test accuracy per seed {accuracies}, {summary}; {wall:.0f} s", flush=True)

    plt = common.pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    valid_curves = np.array([h["validation_accuracy"] for h in history])
    ax.plot(range(1, epochs + 1), 1 - valid_curves)
    ax.axhline(1 - task["target"], color="grey", ls=":", label="target error")
    ax.set(
        yscale="log",
        xlabel="epoch",
        ylabel="validation error",
        title=f"{args.task}: 784-{width}-{width}-10, {len(seeds)} seed(s)",
    )
    ax.legend()
    fig.tight_layout()
    fig.savefig(common.figure_path(name, args.out, args.quick))
    common.save(
        name,
        {
            "config": {
                "task": args.task,
                "dataset": task["dataset"],
                "sizes": sizes,
                "activation": "relu",
                "dropout": 0.5,
                "input_dropout": 0.2,
                "max_norm": 3.0,
                "augment_shift": task["augment_shift"],
                "optimizer": "adam",
                "lr": args.lr,
                "schedule": "cosine to 0",
                "batch_size": args.batch,
                "epochs": epochs,
                "task_default_epochs": task["epochs"],
                "seeds": seeds,
                "train": x.shape[0],
                "validation": "last 5000 training images",
            },
            "target": task["target"],
            "test_accuracy_per_seed": accuracies,
            "test_accuracy": summary,
            "reached_target": bool(summary["mean"] >= task["target"]),
            "history": history,
            "wall_seconds": wall,
        },
        args.out,
        args.quick,
    )


if __name__ == "__main__":
    main()
