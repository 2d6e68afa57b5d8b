"""Plain-MLP records on MNIST and Fashion-MNIST: dropout + max-norm MLPs, several seeds at once.

The recipe (Srivastava et al. 2014's dropout MLPs, with Adam and a cosine schedule):
  784-1024-1024-10, ReLU, He init; inverted dropout on the pixels and on each hidden layer;
  after every step each unit's incoming weight vector is rescaled to norm <= 3; Adam(1e-3)
  with cosine decay to 0 over the run; batch 128; pixels / 255; 100 epochs.
  ``--task mnist``: dropout 0.2 on the pixels, 0.5 on the hidden layers, no augmentation.
  ``--task mnist_augment``: dropout 0.1 / 0.3, and each training image rotated by up to
  +-10 degrees, zoomed by up to +-10 % and shifted by up to +-2 pixels inside the compiled step.
  ``--task fashion``: Fashion-MNIST, dropout 0.1 / 0.3, no augmentation.
  ``--task mnist_vat``: no augmentation and no dropout; virtual adversarial training instead
  (Miyato et al. 2016: the KL divergence between the softmax at each image and at the image
  moved by L2 distance 2.0 in its most sensitive direction is added to the loss); 70 epochs,
  which fit 20 minutes on 2 cores (a step costs about 2.5 plain ones).
The dropout rates, the augmentation and the VAT recipe were chosen on the validation split by
:mod:`experiments.records_search` (results in ``results/search/``). Training uses the first
55000 training images; the last 5000 are the validation set, scored after every epoch; the
official test set is scored once, at the end, and never used to choose anything. On an
accelerator the seeds train together, one ``jax.vmap`` over their train states per epoch
(:mod:`jaxmlp.multi`); on CPU they train in turn, each epoch.
``--all-train`` then trains the same recipe, unchanged, on all 60000 training images (the usual
last step once the choices are made; there is no validation curve then).
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np

import jaxmlp
import jaxmlp.multi
from experiments import common

TASKS = {
    "mnist": {
        "dataset": "mnist",
        "dropout_rate": 0.5,
        "input_dropout_rate": 0.2,
        "augment": {},
        "target": 0.990,
    },
    "mnist_vat": {
        "dataset": "mnist",
        "dropout_rate": 0.0,
        "input_dropout_rate": 0.0,
        "augment": {},
        "regularizer": {"vat_epsilon": 2.0},
        "epochs": 70,
        "target": 0.990,
    },
    "mnist_augment": {
        "dataset": "mnist",
        "dropout_rate": 0.3,
        "input_dropout_rate": 0.1,
        "augment": {"augment_shift": 2, "augment_rotate": 10.0, "augment_scale": 0.1},
        "target": 0.993,
    },
    "fashion": {
        "dataset": "fashion_mnist",
        "dropout_rate": 0.3,
        "input_dropout_rate": 0.1,
        "augment": {},
        "target": 0.910,
    },
}
EPOCHS = 100
WIDTH = 1024


def extra(parser):
    parser.add_argument("--task", choices=TASKS, default="mnist")
    parser.add_argument("--epochs", type=int, help="default: the task's (100 unless stated)")
    parser.add_argument(
        "--seeds", type=int, help="number of seeds (0, 1, ...); default 3, 1 with --quick"
    )
    parser.add_argument("--width", type=int, help="default: the task's (1024 unless stated)")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument(
        "--all-train",
        action="store_true",
        help="train on all 60000 training images (the recipe as chosen on the split, unchanged); "
        "no validation curve",
    )


def main():
    args = common.arguments(__doc__.splitlines()[0], extra)
    task = TASKS[args.task]
    task_epochs = task.get("epochs", EPOCHS)
    epochs = 1 if args.quick else (args.epochs or task_epochs)
    width = 64 if args.quick else (args.width or task.get("width", WIDTH))
    seeds = list(range(args.seeds or (1 if args.quick else 3)))
    name = f"records_{args.task}{'_all' if args.all_train else ''}"
    ds = common.load(task["dataset"], normalize="unit", validation=5000)
    x, y = jnp.asarray(ds.train.images), jnp.asarray(ds.train.labels)
    if args.all_train:
        x = jnp.concatenate([x, jnp.asarray(ds.validation.images)])
        y = jnp.concatenate([y, jnp.asarray(ds.validation.labels)])
    if args.quick:
        x, y = x[:2000], y[:2000]
    steps = epochs * -(-x.shape[0] // args.batch)
    options = jaxmlp.ModelOptions(
        activation="relu",
        dropout_rate=task["dropout_rate"],
        input_dropout_rate=task["input_dropout_rate"],
        max_norm=3.0,
        **task["augment"],
        **task.get("regularizer", {}),
    )
    optimizer = jaxmlp.optimizer("adam", jaxmlp.schedule("cosine", args.lr, steps))
    sizes = (784, width, width, 10)
    # On accelerators the seeds train together, one vmapped program per epoch. On CPU they train
    # in turn each epoch: for models this large the vmapped program is no faster there (three
    # 784-1024-1024-10 models: 7.27 s stacked, 7.18 s in turn, per 12800 examples), and each
    # seed's training time is then its own, what a one-seed command spends.
    groups = [seeds] if jax.default_backend() != "cpu" else [[s] for s in seeds]
    groups = [
        jaxmlp.multi.stack_states(
            [
                jaxmlp.create_train_state(jax.random.key(s), sizes, optimizer, options=options)
                for s in group
            ]
        )
        for group in groups
    ]

    def each(function, *arguments):
        return [function(states, *arguments) for states in groups]

    def joined(results, key):
        return np.concatenate([np.asarray(r[key]) for r in results])

    xv, yv = jnp.asarray(ds.validation.images), jnp.asarray(ds.validation.labels)
    history = []
    start = time.perf_counter()
    train_seconds = np.zeros(len(groups))  # each group's own training time

    def train(i, states):
        tic = time.perf_counter()
        states, metrics = jaxmlp.multi.train_epoch(states, x, y, batch_size=args.batch)
        jax.block_until_ready(states)
        train_seconds[i] += time.perf_counter() - tic
        return states, metrics

    for e in range(1, epochs + 1):
        groups, metrics = zip(*[train(i, states) for i, states in enumerate(groups)], strict=True)
        entry = {"epoch": e, "loss": joined(metrics, "loss")}
        if not args.all_train:
            entry["validation_accuracy"] = joined(each(jaxmlp.multi.evaluate, xv, yv), "accuracy")
        entry["seconds"] = time.perf_counter() - start
        history.append(entry)
        valid = entry.get("validation_accuracy")
        print(
            f"epoch {e:3d} loss {entry['loss'].round(4)}"
            f"{'' if valid is None else f' valid {valid.round(4)}'} ({entry['seconds']:.0f} s)",
            flush=True,
        )
    wall = time.perf_counter() - start
    accuracies = joined(each(jaxmlp.multi.evaluate, ds.test.images, ds.test.labels), "accuracy")
    summary = common.mean_std(accuracies)
    # Not the record (that is per model): the seeds' mean softmax as one ensemble, for reference.
    logits = np.concatenate(each(jaxmlp.multi.predict_logits, ds.test.images))
    ensemble = float(
        np.mean(np.argmax(jax.nn.softmax(logits).mean(0), -1) == np.asarray(ds.test.labels))
    )
    print(
        f"test accuracy per seed {accuracies}, {summary}; ensemble of the seeds {ensemble:.4f}; "
        f"{wall:.0f} s",
        flush=True,
    )

    plt = common.pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    title = f"{args.task}: 784-{width}-{width}-10, {len(seeds)} seed(s)"
    if args.all_train:
        ax.plot(range(1, epochs + 1), np.array([h["loss"] for h in history]))
        ax.set(yscale="log", xlabel="epoch", ylabel="training loss", title=title + ", all 60000")
    else:
        valid_curves = np.array([h["validation_accuracy"] for h in history])
        ax.plot(range(1, epochs + 1), 1 - valid_curves)
        ax.axhline(1 - task["target"], color="grey", ls=":", label="target error")
        ax.set(yscale="log", xlabel="epoch", ylabel="validation error", title=title)
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
                "dropout_rate": task["dropout_rate"],
                "input_dropout_rate": task["input_dropout_rate"],
                "max_norm": 3.0,
                **task["augment"],
                **task.get("regularizer", {}),
                "optimizer": "adam",
                "lr": args.lr,
                "schedule": "cosine to 0",
                "batch_size": args.batch,
                "epochs": epochs,
                "task_default_epochs": task_epochs,
                "seeds": seeds,
                "train": x.shape[0],
                "validation": "none (trained on all 60000)"
                if args.all_train
                else "last 5000 training images",
            },
            "target": task["target"],
            "test_accuracy_per_seed": accuracies,
            "test_accuracy": summary,
            "ensemble_test_accuracy": ensemble,
            "reached_target": bool(summary["mean"] >= task["target"]),
            "history": history,
            "wall_seconds": wall,
            # Training time of each program (one per seed on CPU, all seeds on an accelerator).
            "train_seconds_per_program": train_seconds,
        },
        args.out,
        args.quick,
    )


if __name__ == "__main__":
    main()
