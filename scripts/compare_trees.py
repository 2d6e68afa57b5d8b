"""Compare two source trees of jaxmlp on this machine, in one run: epoch time and numbers.

A change that reorganises code must change no number and cost no time. This script runs the
same work from two checkouts, interleaved (A B A B ...) so that drift of the machine's speed hits
both alike:

- ``epoch``: one 784-256-256-10 Adam model (or ``--hidden``) trained with ``jaxmlp.train_epoch``
  on MNIST (55,000 images, batch 128): a warm-up epoch (the compile), then ``--epochs`` timed
  epochs per round; per tree the median epoch time, the ratio B / A, and whether the final
  parameters are bit-identical;
- ``train``: the default ``jaxmlp train`` (``--no-plots --json``) from each tree, and its
  history compared field by field (everything but wall times);
- ``numbers``: fingerprints (sha256 of the bytes) of what the core computes on fixed synthetic
  data: loss, gradients, backprop (batch and one example), forward with dropout, per-example
  gradients and norms by both methods, two-epoch ``fit`` runs in eight configurations (dropout,
  L2 with sigmoid outputs by backprop, DP-SGD shuffled and Poisson by both gradient methods,
  fast gradient sign, VAT, max-norm) with their histories, a stacked ``multi`` epoch and
  ``evaluate``; each value of A against B.

Usage::

    git worktree add /tmp/before <commit>
    python scripts/compare_trees.py epoch /tmp/before . --rounds 5
    python scripts/compare_trees.py train /tmp/before .
    python scripts/compare_trees.py numbers /tmp/before .

Only APIs that both trees have are used (``jaxmlp.create_train_state``, ``jaxmlp.train_epoch``,
``jaxmlp.data.load``, the ``jaxmlp train`` command).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

EPOCH_CHILD = r"""
import hashlib, json, sys, time
import jax, numpy as np
import jaxmlp
from jaxmlp import data
hidden, epochs, batch = json.loads(sys.argv[1])
ds = data.load("mnist", validation=5000)
sizes = (784, *hidden, 10)
state = jaxmlp.create_train_state(jax.random.key(0), sizes, jaxmlp.optimizer("adam", 1e-3))
x, y = jax.numpy.asarray(ds.train.images), jax.numpy.asarray(ds.train.labels)
state, metrics = jaxmlp.train_epoch(state, x, y, batch_size=batch)
jax.block_until_ready(metrics)
seconds = []
for _ in range(epochs):
    start = time.perf_counter()
    state, metrics = jaxmlp.train_epoch(state, x, y, batch_size=batch)
    jax.block_until_ready((state, metrics))
    seconds.append(time.perf_counter() - start)
digest = hashlib.sha256()
for leaf in jax.tree.leaves(state.params):
    digest.update(np.asarray(leaf).tobytes())
print(json.dumps({"seconds": seconds, "params_sha256": digest.hexdigest(),
                  "loss": float(metrics["loss"])}))
"""

NUMBERS_CHILD = r"""
import hashlib, json
import jax, numpy as np
import jaxmlp, jaxmlp.multi
def h(tree):
    digest = hashlib.sha256()
    for leaf in jax.tree.leaves(tree):
        digest.update(np.asarray(leaf).tobytes())
    return digest.hexdigest()[:16]
rng = np.random.default_rng(0)
x = rng.random((1000, 64), dtype=np.float32)
y = rng.integers(0, 10, 1000).astype(np.int32)
p = jaxmlp.init_mlp(jax.random.key(1), (64, 32, 16, 10))
key = jax.random.key(2)
kw = dict(dropout_rate=0.3, input_dropout_rate=0.1, key=key)
out = {
    "loss": h(jaxmlp.loss(p, x, y, l2=1e-3, **kw)),
    "grad": h(jax.grad(jaxmlp.loss)(p, x, y, l2=1e-3, **kw)),
    "backprop": h(jaxmlp.backprop(p, x, y, l2=1e-3, **kw)),
    "backprop_one": h(jaxmlp.backprop(p, x[0], y[0])),
    "forward": h(jaxmlp.forward(p, x, **kw)),
}
for m in ("backprop", "autodiff"):
    out[f"per_example_grads_{m}"] = h(jaxmlp.per_example_grads(
        p, x[:50], y[:50], method=m, dropout_rate=0.2, key=key))
    out[f"per_example_norms_{m}"] = h(jaxmlp.per_example_grad_norms(p, x[:50], y[:50], method=m))
cases = {
    "dropout": dict(dropout_rate=0.2),
    "l2_sigmoid_backprop": dict(l2=1e-3, output="sigmoid", gradient="backprop"),
    "dp_shuffle_backprop": dict(dp_clip_norm=1.0, dp_noise_multiplier=1.1, gradient="backprop"),
    "dp_shuffle_autodiff": dict(dp_clip_norm=1.0, dp_noise_multiplier=1.1, dropout_rate=0.1),
    "dp_poisson_backprop": dict(dp_clip_norm=0.5, dp_noise_multiplier=1.0, gradient="backprop",
                                batch_sampling="poisson", l2=1e-4),
    "fast_gradient_sign": dict(adversarial_epsilon=0.05),
    "vat": dict(vat_epsilon=1.0, dropout_rate=0.2),
    "max_norm": dict(max_norm=2.0),
}
for name, options in cases.items():
    state, history = jaxmlp.fit(jax.random.key(3), (64, 32, 10), x, y,
                                optimizer=jaxmlp.optimizer("adam", 1e-3), epochs=2, batch_size=96,
                                validation_data=(x[:200], y[:200]), **options)
    out[f"fit_{name}"] = h(state.params)
    out[f"history_{name}"] = h([[v for k, v in sorted(r.items())
                                 if k not in ("seconds", "compile_seconds")] for r in history])
sgd = jaxmlp.optimizer("sgd", 0.1)
states = jaxmlp.multi.stack_states(
    [jaxmlp.create_train_state(jax.random.key(s), (64, 32, 10), sgd) for s in range(3)])
states, _ = jaxmlp.multi.train_epoch(states, x, y, batch_size=100)
out["multi_epoch"] = h(states.params)
out["multi_evaluate"] = h(jaxmlp.multi.evaluate(states, x, y)["loss"])
out["evaluate"] = h(list(jaxmlp.evaluate(state, x, y, batch_size=300).values()))
print(json.dumps(out))
"""

TIMING_FIELDS = {"seconds", "compile_seconds"}


def _environment(tree: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(tree.resolve())
    return env


def _child(tree: Path, what: str, argv: list[str]) -> str:
    """Run ``python argv`` with ``tree`` on PYTHONPATH; its stdout, or exit naming ``what``."""
    process = subprocess.run(
        [sys.executable, *argv],
        capture_output=True,
        text=True,
        env=_environment(tree),
        cwd=tempfile.gettempdir(),  # so that the tree on PYTHONPATH, not the cwd, is imported
        check=False,
    )
    if process.returncode:
        raise SystemExit(f"{tree}: {what} failed:\n{process.stderr[-3000:]}")
    return process.stdout


def _last_json_line(text: str) -> dict:
    return json.loads(text.strip().splitlines()[-1])


def _run_epochs(tree: Path, hidden, epochs: int, batch: int) -> dict:
    argv = ["-c", EPOCH_CHILD, json.dumps([hidden, epochs, batch])]
    return _last_json_line(_child(tree, "the epoch child", argv))


def compare_epochs(a: Path, b: Path, rounds: int, epochs: int, hidden, batch: int) -> None:
    times: dict[str, list[float]] = {"A": [], "B": []}
    digests: dict[str, set[str]] = {"A": set(), "B": set()}
    ratios = []
    for index in range(rounds):
        round_medians = {}
        for name, tree in (("A", a), ("B", b)):
            result = _run_epochs(tree, hidden, epochs, batch)
            times[name] += result["seconds"]
            digests[name].add(result["params_sha256"])
            round_medians[name] = statistics.median(result["seconds"])
        ratios.append(round_medians["B"] / round_medians["A"])
        print(
            f"round {index + 1}: A {round_medians['A']:.4f} s, B {round_medians['B']:.4f} s, "
            f"B/A {ratios[-1]:.4f}",
            flush=True,
        )
    for name, tree in (("A", a), ("B", b)):
        print(
            f"{name} = {tree}: median epoch {statistics.median(times[name]):.4f} s "
            f"(min {min(times[name]):.4f}, max {max(times[name]):.4f}, {len(times[name])} epochs)"
        )
    print(
        f"B/A per round: median {statistics.median(ratios):.4f} "
        f"(min {min(ratios):.4f}, max {max(ratios):.4f})"
    )
    same = digests["A"] == digests["B"] and len(digests["A"]) == 1
    print(f"final parameters bit-identical between A and B: {same}")


def _train(tree: Path, runs_dir: Path, name: str, extra: list[str]) -> list[dict]:
    argv = ["-m", "jaxmlp", "train", "--runs-dir", str(runs_dir), "--name", name]
    _child(tree, "jaxmlp train", [*argv, "--no-plots", "--json", *extra])
    return json.loads((runs_dir / name / "history.json").read_text())


def compare_training(a: Path, b: Path, extra: list[str]) -> None:
    with tempfile.TemporaryDirectory() as scratch:
        runs = Path(scratch)
        histories = {"A": _train(a, runs, "a", extra), "B": _train(b, runs, "b", extra)}
    fields = sorted(
        ({k for r in histories["A"] for k in r} | {k for r in histories["B"] for k in r})
        - TIMING_FIELDS
    )
    print(f"{'epoch':>5}  " + "  ".join(f"{f[:18]:>18} A / B" for f in fields if f != "epoch"))
    identical = len(histories["A"]) == len(histories["B"])
    for ra, rb in zip(histories["A"], histories["B"], strict=False):
        cells = []
        for field in fields:
            if field == "epoch":
                continue
            va, vb = ra.get(field), rb.get(field)
            identical &= va == vb
            cells.append(f"{va!s:>12} / {vb!s:<12}")
        print(f"{ra['epoch']:>5}  " + "  ".join(cells))
    seconds = {k: sum(r["seconds"] for r in h) for k, h in histories.items()}
    print(f"training seconds: A {seconds['A']:.1f}, B {seconds['B']:.1f}")
    print(f"histories identical in every field but the wall times: {identical}")


def compare_numbers(a: Path, b: Path) -> None:
    results = {}
    for name, tree in (("A", a), ("B", b)):
        results[name] = _last_json_line(_child(tree, "the numbers child", ["-c", NUMBERS_CHILD]))
    same = 0
    for key in results["A"]:
        va, vb = results["A"][key], results["B"].get(key)
        same += va == vb
        print(f"{key:>30}  {va}  {vb}  {'same' if va == vb else 'DIFFERENT'}")
    print(f"identical: {same} of {len(results['A'])}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("what", choices=("epoch", "train", "numbers"))
    parser.add_argument("a", type=Path, help="tree A (e.g. the code before a change)")
    parser.add_argument("b", type=Path, help="tree B (e.g. the code after it)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=3, help="timed epochs per round")
    parser.add_argument("--hidden", type=int, nargs="+", default=[256, 256])
    parser.add_argument("--batch-size", type=int, default=128)
    args, extra = parser.parse_known_args()
    if args.what == "epoch":
        compare_epochs(args.a, args.b, args.rounds, args.epochs, args.hidden, args.batch_size)
    elif args.what == "numbers":
        compare_numbers(args.a, args.b)
    else:
        compare_training(args.a, args.b, extra)


if __name__ == "__main__":
    main()
