"""d2l's softmax regression on Fashion-MNIST (from scratch and with Gluon), with jaxmlp.

The text's settings:
  one dense layer 784-10 (``jaxmlp`` sizes (784, 10): no hidden layer); W ~ N(0, 0.01^2),
  b = 0; pixels / 255; minibatches of 512, shuffled, the short last batch kept
  (60000 = 117 * 512 + 96); SGD with learning rate 0.2 on the batch-mean cross-entropy;
  5 epochs. Reported test accuracy: 0.821 (from scratch), 0.840 (Gluon). The two versions
  differ only in the framework's loss and update code, so their gap measures run-to-run noise
  and numerical details; we run several seeds to see the spread.
"""

from __future__ import annotations

import jax
import numpy as np

import jaxmlp
from experiments import common

SIZES = (784, 10)
LR, BATCH, EPOCHS, SCALE = 0.2, 512, 5, 0.01
REPORTED = {"scratch": 0.821, "gluon": 0.840}


def main():
    args = common.arguments(__doc__.splitlines()[0])
    name = "d2l_softmax"
    ds = common.load("fashion_mnist", normalize="unit")
    seeds = [0] if args.quick else list(range(5))
    epochs = 1 if args.quick else EPOCHS
    runs = []
    for seed in seeds:
        init_key, train_key = jax.random.split(jax.random.key(seed))
        params = common.zero_biases(
            jaxmlp.init_mlp(init_key, SIZES, init="normal", init_scale=SCALE)
        )
        state = jaxmlp.create_train_state(
            train_key, SIZES, jaxmlp.optimizer("sgd", LR), params=params
        )
        with common.timer() as t:
            state, history = jaxmlp.fit(
                None,
                SIZES,
                ds.train.images,
                ds.train.labels,
                optimizer=state.optimizer,
                epochs=epochs,
                batch_size=BATCH,
                state=state,
                evaluate_train=True,
                validation_data=(ds.test.images, ds.test.labels),
            )
        predicted = jaxmlp.predict(state.params, ds.test.images)
        per_class = {
            ds.class_names[c]: float(np.mean(predicted[ds.test.labels == c] == c))
            for c in range(10)
        }
        runs.append(
            {
                "seed": seed,
                "history": history,
                "test_accuracy": history[-1]["validation_accuracy"],
                "per_class_accuracy": per_class,
                "seconds": t["seconds"],
            }
        )
        print(
            f"seed {seed}: "
            + ", ".join(
                f"epoch {h['epoch']} loss {h['loss']:.3f} train {h['train_accuracy']:.3f} "
                f"test {h['validation_accuracy']:.3f}"
                for h in history
            )
        )

    plt = common.pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    for run in runs:
        e = [h["epoch"] for h in run["history"]]
        axes[0].plot(e, [h["loss"] for h in run["history"]], "C0", alpha=0.5)
        axes[0].plot(e, [h["train_accuracy"] for h in run["history"]], "C1--", alpha=0.5)
        axes[0].plot(e, [h["validation_accuracy"] for h in run["history"]], "C2-.", alpha=0.5)
    axes[0].legend(["train loss", "train acc", "test acc"])
    axes[0].axhline(REPORTED["scratch"], color="grey", lw=0.8)
    axes[0].axhline(REPORTED["gluon"], color="grey", lw=0.8, ls=":")
    axes[0].set(xlabel="epoch", title="softmax regression, Fashion-MNIST (grey: text)")
    names = list(ds.class_names)
    mean_class = [np.mean([run["per_class_accuracy"][c] for run in runs]) for c in names]
    axes[1].barh(names, mean_class)
    axes[1].set(xlabel="test accuracy per class (mean over seeds)", xlim=(0, 1))
    fig.tight_layout()
    fig.savefig(common.figure_path(name, args.out, args.quick))
    final = common.mean_std([run["test_accuracy"] for run in runs])
    print("test accuracy", final)
    common.save(
        name,
        {
            "config": {
                "sizes": SIZES,
                "init": "W ~ N(0, 0.01^2), b = 0",
                "lr": LR,
                "batch_size": BATCH,
                "epochs": epochs,
                "pixels": "x / 255",
                "seeds": seeds,
            },
            "reported": REPORTED,
            "test_accuracy": final,
            "per_class_accuracy_mean": dict(zip(names, mean_class, strict=True)),
            "runs": runs,
        },
        args.out,
        args.quick,
    )


if __name__ == "__main__":
    main()
