"""The MXNet/Gluon "multilayer perceptrons from scratch" tutorial, translated to jaxmlp.

The text's settings:
  784-256-256-10 with ReLU hidden layers; *every* weight and bias drawn from N(0, 0.01^2)
  (``nd.random_normal(scale=0.01)``); softmax cross-entropy; plain SGD with learning rate
  0.001 applied to the loss *summed* over a batch of 64 (``loss.backward()`` on the per-example
  losses, then ``param -= lr * param.grad``); 10 epochs; pixels / 255; the DataLoader shuffles
  and keeps the short last batch (60000 = 937 * 64 + 32). It prints the average training loss
  per epoch (the summed loss over the epoch / 60000).

The translation. A step on the summed loss is lr_sum * sum_i g_i = (lr_sum * B) * mean_i g_i,
so on jaxmlp's batch-mean loss the same step has lr = 0.001 * 64 = 0.064. On the short last
batch of 32 the text's step is half as long (lr_sum * 32 * mean); jaxmlp scores that batch as a
mean over its 32 examples with the same lr, one step in 938 per epoch.
"""

from __future__ import annotations

import jax

import jaxmlp
from experiments import common

SIZES = (784, 256, 256, 10)
LR_SUM, BATCH, EPOCHS, SCALE = 0.001, 64, 10, 0.01
LR = LR_SUM * BATCH


def main():
    args = common.arguments(__doc__.splitlines()[0])
    name = "mxnet_scratch"
    ds = common.load("mnist", normalize="unit")
    x, y = ds.train.images, ds.train.labels
    if args.quick:
        x, y = x[:2000], y[:2000]
    seeds = [0] if args.quick else [0, 1]
    epochs = 2 if args.quick else EPOCHS
    runs = []
    for seed in seeds:
        with common.timer() as t:
            state, history = jaxmlp.fit(
                jax.random.key(seed),
                SIZES,
                x,
                y,
                optimizer=jaxmlp.optimizer("sgd", LR),
                epochs=epochs,
                batch_size=BATCH,
                init="normal",
                init_scale=SCALE,
                activation="relu",
                validation_data=(ds.test.images, ds.test.labels),
            )
        test = jaxmlp.evaluate(state.params, ds.test.images, ds.test.labels)
        runs.append({"seed": seed, "history": history, "test": test, "seconds": t["seconds"]})
        for h in history:
            print(
                f"seed {seed} Epoch {h['epoch'] - 1}. Loss: {h['loss']:.6f}, "
                f"Train_acc {h['train_accuracy']:.4f}, Test_acc {h['validation_accuracy']:.4f}"
            )

    plt = common.pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for run in runs:
        epochs_axis = [h["epoch"] for h in run["history"]]
        axes[0].plot(
            epochs_axis,
            [h["loss"] for h in run["history"]],
            marker="o",
            label=f"seed {run['seed']}",
        )
        axes[1].plot(
            epochs_axis,
            [h["validation_accuracy"] for h in run["history"]],
            marker="o",
            label=f"seed {run['seed']}",
        )
    axes[0].set(
        xlabel="epoch",
        ylabel="average training loss",
        yscale="log",
        title="784-256-256-10, N(0, 0.01^2) init, SGD",
    )
    axes[1].set(xlabel="epoch", ylabel="test accuracy")
    axes[0].legend()
    fig.tight_layout()
    fig.savefig(common.figure_path(name, args.out, args.quick))
    accuracies = [run["test"]["accuracy"] for run in runs]
    print("test accuracy", common.mean_std(accuracies))
    common.save(
        name,
        {
            "config": {
                "sizes": SIZES,
                "activation": "relu",
                "init": "N(0, 0.01^2) weights and biases",
                "lr_summed": LR_SUM,
                "lr_mean": LR,
                "batch_size": BATCH,
                "epochs": epochs,
                "pixels": "x / 255",
                "seeds": seeds,
            },
            "runs": runs,
            "test_accuracy": common.mean_std(accuracies),
        },
        args.out,
        args.quick,
    )


if __name__ == "__main__":
    main()
