"""Sweeps: hyperparameters held as arrays so that stacked models differ in them, the stacked
training loop, and the ``jaxmlp sweep`` command.

The specification: a model trained inside a stack, with its own seed, learning rate, momentum,
L2 coefficient or dropout rates, ends where the same model trained alone ends (to float
rounding), and ``jaxmlp sweep`` gives the numbers of ``jaxmlp train``.
"""

from __future__ import annotations

import csv
import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from cli_support import assert_one_line_error, require_mnist, run, small_run

import jaxmlp
from jaxmlp import multi
from jaxmlp.cli import sweep as sweeplib
from jaxmlp.cli.config import RunConfig
from jaxmlp.model import DropoutRate, dropout_masks
from jaxmlp.training import step_options, with_hyperparams

SIZES = (20, 16, 10)


@pytest.fixture(scope="module")
def toy():
    x = jax.random.normal(jax.random.key(0), (300, 20))
    y = jax.random.randint(jax.random.key(1), (300,), 0, 10)
    return x, y


def max_difference(a, b) -> float:
    return max(
        float(jnp.max(jnp.abs(p - q)))
        for p, q in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)
    )


def sweep(capsys, sweep_dir, *argv) -> tuple[int, str, str]:
    """``jaxmlp sweep`` into ``sweep_dir`` (``--runs-dir`` its parent, ``--name`` its name) with
    ``argv``: (exit status, stdout, stderr)."""
    return run(capsys, "sweep", "--name", sweep_dir.name, "--runs-dir", sweep_dir.parent, *argv)


# --------------------------------------------------------------------------------------------
# Options held as arrays


@pytest.mark.parametrize("rate", [0.058, 0.137, 0.2, 0.5, 0.9])
def test_a_traced_dropout_rate_draws_the_masks_of_the_static_rate(rate):
    # 0.058 and 0.137 are rates whose keep probability computed in float32 (1 - float32(rate))
    # is not Python's 1 - rate rounded to float32: the traced rate carries its own.
    key = jax.random.key(3)
    static = dropout_masks(key, [(64, 128)], [rate], jnp.float32)[0]
    traced = jax.jit(lambda r: dropout_masks(key, [(64, 128)], [r], jnp.float32)[0])(
        DropoutRate.of(rate)
    )
    np.testing.assert_array_equal(static, traced)


def test_with_hyperparams_holds_the_values_as_arrays_and_step_options_uses_them():
    state = jaxmlp.create_train_state(jax.random.key(0), SIZES, jaxmlp.optimizer("sgd", 0.1))
    traced = with_hyperparams(state, l2=1e-3, dropout_rate=0.3)
    assert traced.hyperparams["l2"].shape == () and traced.hyperparams["l2"].dtype == jnp.float32
    assert isinstance(traced.hyperparams["dropout_rate"], DropoutRate)
    # The static options keep a nonzero rate so that steps draw dropout keys.
    assert traced.options.uses_dropout and traced.options.needs_key
    options = step_options(traced)
    assert float(options.l2) == pytest.approx(1e-3)
    assert step_options(state) is state.options


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"batch_size": 3}, "the options a state can hold as arrays are l2"),
        ({"dropout_rate": 1.5}, "dropout_rate=1.5 is outside [0, 1)"),
        ({"l2": -1.0}, "l2=-1.0 is invalid"),
    ],
)
def test_with_hyperparams_refuses_unknown_names_and_values_out_of_range(values, message):
    state = jaxmlp.create_train_state(jax.random.key(0), SIZES, jaxmlp.optimizer("sgd", 0.1))
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace(")", r"\)")):
        with_hyperparams(state, **values)


def train_alone(options: jaxmlp.ModelOptions, optimizer, seed: int, x, y, epochs=2):
    state = jaxmlp.create_train_state(jax.random.key(seed), SIZES, optimizer, options=options)
    for _ in range(epochs):
        state, _ = jaxmlp.train_epoch(state, x, y, batch_size=32)
    return state


@pytest.mark.parametrize(
    "base",
    [
        {},
        {"gradient": "backprop"},
        {"dp_clip_norm": 1.0, "dp_noise_multiplier": 1.1},
        {"dp_clip_norm": 1.0, "gradient": "backprop", "batch_sampling": "poisson"},
    ],
    ids=["autodiff", "backprop", "dp-sgd", "dp-sgd-poisson-backprop"],
)
def test_stacked_models_with_their_own_l2_and_dropout_end_where_each_alone_ends(base, toy):
    x, y = toy
    optimizer = jaxmlp.optimizer("sgd", 0.1)
    settings = [(0.0, 0.0, 0.0), (1e-3, 0.137, 0.0), (0.0, 0.3, 0.058), (0.01, 0.0, 0.2)]
    names = ("l2", "dropout_rate", "input_dropout_rate")
    start = jaxmlp.create_train_state(
        jax.random.key(3), SIZES, optimizer, options=jaxmlp.ModelOptions(**base)
    )
    stacked = multi.stack_states(
        [with_hyperparams(start, **dict(zip(names, s, strict=True))) for s in settings]
    )
    for _ in range(2):
        stacked, _ = multi.train_epoch(stacked, x, y, batch_size=32)
    for i, values in enumerate(settings):
        options = jaxmlp.ModelOptions(**base, **dict(zip(names, values, strict=True)))
        alone = train_alone(options, optimizer, 3, x, y)
        # Bitwise for autodiff on CPU; the vmapped matrix products of backprop round apart.
        assert max_difference(multi.unstack_states(stacked)[i].params, alone.params) <= 1e-6


@pytest.mark.parametrize(
    ("name", "schedule", "traced"),
    [
        ("adam", "constant", ("learning_rate",)),
        ("adam", "cosine", ("learning_rate", "b1")),
        ("sgd", "constant", ("learning_rate", "momentum")),
        ("nesterov", "warmup_cosine", ("momentum",)),
    ],
)
def test_stacked_optimizer_numbers_end_where_each_alone_ends(name, schedule, traced, toy):
    x, y = toy
    total = 2 * 10
    base = jaxmlp.OptimizerSettings(
        optimizer=name,
        schedule=schedule,
        warmup_steps=3,
        momentum=0.9 if "momentum" in traced else None,
        b1=0.9 if "b1" in traced else None,
    )
    values = [
        {"learning_rate": 1e-3, "momentum": 0.9, "b1": 0.9},
        {"learning_rate": 3e-3, "momentum": 0.5, "b1": 0.8},
    ]
    optimizer = multi.stackable_optimizer(base, total, traced)
    states = [
        multi.set_optimizer_hyperparams(
            jaxmlp.create_train_state(jax.random.key(seed), SIZES, optimizer),
            **{k: v[k] for k in traced},
        )
        for seed, v in enumerate(values)
    ]
    fitted = multi.fit(multi.stack_states(states), x, y, epochs=2, batch_size=30)
    for seed, v in enumerate(values):
        settings = dataclasses.replace(base, **{k: v[k] for k in traced})
        alone, history = jaxmlp.fit(
            jax.random.key(seed),
            SIZES,
            x,
            y,
            optimizer=settings.build(total),
            epochs=2,
            batch_size=30,
        )
        got = multi.plain_optimizer_state(
            multi.unstack_states(fitted.states)[seed], alone.optimizer
        )
        assert max_difference(got.params, alone.params) <= 1e-6
        assert max_difference(got.opt_state, alone.opt_state) <= 1e-6
        assert fitted.histories[seed][-1]["loss"] == pytest.approx(history[-1]["loss"], rel=1e-5)


def test_stackable_optimizer_refuses_what_it_cannot_trace():
    settings = jaxmlp.OptimizerSettings(optimizer="sgd")
    with pytest.raises(ValueError, match="momentum is unset"):
        multi.stackable_optimizer(settings, 10, ("momentum",))
    with pytest.raises(ValueError, match="cannot trace"):
        multi.stackable_optimizer(settings, 10, ("initial_accumulator_value",))
    plateau = jaxmlp.OptimizerSettings(schedule="plateau")
    with pytest.raises(ValueError, match="under schedule 'plateau'"):
        multi.stackable_optimizer(plateau, 10, ("learning_rate",), steps_per_epoch=5)
    state = jaxmlp.create_train_state(jax.random.key(0), SIZES, settings.build(10))
    with pytest.raises(ValueError, match="does not hold"):
        multi.set_optimizer_hyperparams(state, learning_rate=0.1)


def test_stacked_fit_keeps_each_models_best_epoch_and_flags_a_divergence(toy):
    x, y = toy
    settings = jaxmlp.OptimizerSettings(optimizer="sgd", learning_rate=0.1)
    optimizer = multi.stackable_optimizer(settings, 40, ("learning_rate",))
    rates = [0.1, 1e6]  # the second diverges
    states = multi.stack_states(
        [
            multi.set_optimizer_hyperparams(
                jaxmlp.create_train_state(jax.random.key(0), SIZES, optimizer), learning_rate=r
            )
            for r in rates
        ]
    )
    seen = []
    fitted = multi.fit(
        states,
        x[:200],
        y[:200],
        epochs=4,
        batch_size=20,
        validation_data=(x[200:], y[200:]),
        on_epoch_end=lambda epoch, records: seen.append((epoch, len(records))),
    )
    assert seen == [(1, 2), (2, 2), (3, 2), (4, 2)]
    good, bad = fitted.histories
    assert not any(r.get("diverged") for r in good)
    assert bad[-1]["diverged"] is True
    # The best state of the good model is its state at its best epoch: retrain to that epoch.
    best = jaxmlp.best_epoch(good)
    again = multi.fit(states, x[:200], y[:200], epochs=best, batch_size=20)
    assert (
        max_difference(
            jax.tree.map(lambda leaf: leaf[0], fitted.best_states.params),
            jax.tree.map(lambda leaf: leaf[0], again.states.params),
        )
        == 0.0
    )
    # The diverged model's best state is finite: from before it diverged.
    assert all(
        bool(jnp.all(jnp.isfinite(leaf[1]))) for leaf in jax.tree.leaves(fitted.best_states.params)
    )


# --------------------------------------------------------------------------------------------
# What the command trains


def test_grid_and_random_configurations():
    grid = sweeplib.parse_grid(["learning-rate=1e-3,3e-3", "hidden=64,128-64"])
    assert grid == {"learning_rate": [1e-3, 3e-3], "hidden": [[64], [128, 64]]}
    assert len(sweeplib.configurations(grid, {}, None, 0)) == 4
    ranges = sweeplib.parse_ranges(["l2=1e-6:1e-3:log", "seed=0:9"])
    drawn = sweeplib.configurations(grid, ranges, 3, seed=7)
    assert len(drawn) == 12
    assert all(1e-6 <= c["l2"] <= 1e-3 and c["seed"] in range(10) for c in drawn)
    assert all(isinstance(c["seed"], int) for c in drawn)
    assert drawn == sweeplib.configurations(grid, ranges, 3, seed=7)  # reproducible
    assert drawn != sweeplib.configurations(grid, ranges, 3, seed=8)


def test_configurations_that_cannot_stack_are_grouped_not_refused():
    configs = sweeplib.run_configs(
        RunConfig(),
        sweeplib.configurations(
            {"hidden": [[32], [64]], "learning_rate": [1e-3, 3e-3], "seed": [0, 1]}, {}, None, 0
        ),
    )
    plan = sweeplib.stacks(configs, max_stack=64)
    assert [len(s) for s in plan] == [4, 4]
    assert all(len({tuple(configs[i].hidden) for i in s}) == 1 for s in plan)
    assert [len(s) for s in sweeplib.stacks(configs, max_stack=3)] == [3, 1, 3, 1]
    # The learning rate stacks under a schedule of the step, not under plateau.
    plateau = [
        dataclasses.replace(c, optimization=dataclasses.replace(c.optimization, schedule="plateau"))
        for c in configs[:4]
    ]
    assert len(sweeplib.stacks(plateau, max_stack=64)) == 2


def test_a_stack_is_cut_to_fit_in_memory(monkeypatch):
    monkeypatch.setattr(sweeplib, "memory_budget", lambda: 3 * sweeplib.model_bytes(RunConfig()))
    configs = sweeplib.run_configs(
        RunConfig(), sweeplib.configurations({"seed": list(range(7))}, {}, None, 0)
    )
    assert [len(s) for s in sweeplib.stacks(configs, max_stack=64)] == [3, 3, 1]


@pytest.mark.parametrize(
    ("argv", "fragments"),
    [
        (["--grid", "learning_rat=1e-3"], ["unknown key 'learning_rat'", "learning_rate"]),
        (["--grid", "learning_rate="], ["has no values"]),
        (["--grid", "learning_rate"], ["expected KEY=V1,V2"]),
        (["--grid", "epochs=two"], ["epochs='two' does not parse", "an integer"]),
        (["--grid", "hidden=64,1x2"], ["does not parse", "512-256"]),
        (["--grid", "learning_rate=1e-3,1e-3"], ["repeats a value"]),
        (["--grid", "learning_rate=-1"], ["configuration 1", "learning_rate"]),
        (["--grid", "keep_checkpoints=1,2"], ["cannot be swept"]),
        (["--random", "4", "--range", "l2=1e-3:1e-6"], ["low 0.001 is above its high 1e-06"]),
        (["--random", "4", "--range", "l2=0:1:log"], ["log range needs LOW > 0"]),
        (["--random", "4", "--range", "activation=0:1"], ["not a number"]),
        (["--range", "l2=0:1"], ["--range needs --random N"]),
        (["--random", "3"], ["--random needs at least one --range"]),
        ([], ["nothing to sweep"]),
        (["--grid", "seed=0,1", "--seed", "3"], ["seed is swept and also given"]),
        (["--grid", "seed=0,1", "--validation", "0"], ["--validation 0 holds out none"]),
        (["--grid", "seed=0,1", "--early-stopping-patience", "2"], ["for jaxmlp train"]),
        (["--grid", "seed=0,1", "--max-stack", "0"], ["--max-stack 0 is invalid"]),
    ],
)
def test_bad_sweeps_are_one_line_errors_and_write_nothing(capsys, tmp_path, argv, fragments):
    code, _, err = sweep(capsys, tmp_path / "runs" / "s", *argv)
    assert_one_line_error(code, err, *fragments)
    assert not (tmp_path / "runs" / "s").exists()


# --------------------------------------------------------------------------------------------
# The command, end to end


@pytest.mark.data
def test_sweep_equals_train_alone_and_writes_an_ordinary_best_run(capsys, tmp_path):
    require_mnist()
    runs_dir = tmp_path / "runs"
    options = small_run(32, "--epochs", "3", "--no-compilation-cache")
    code, out, err = sweep(
        capsys,
        runs_dir / "s",
        "--grid",
        "learning_rate=1e-3,3e-3",
        "--grid",
        "seed=0,1",
        "--grid",
        "dropout_rate=0,0.3",
        "--max-stack",
        "5",
        *options,
    )
    assert code == 0, err
    assert "8 configurations of learning_rate, seed, dropout_rate in 2 stacks (5, 3 models)" in out
    document = json.loads((runs_dir / "s" / "results.json").read_text())
    rows = document["results"]
    assert [r["configuration"] for r in rows] == list(range(1, 9))
    with open(runs_dir / "s" / "results.csv") as f:
        table = list(csv.DictReader(f))
    assert len(table) == 8 and table[0]["learning_rate"] == "0.001"
    assert (runs_dir / "s" / "results.png").stat().st_size > 0
    spec = json.loads((runs_dir / "s" / "sweep.json").read_text())
    assert spec["provenance"]["versions"]["jaxmlp"] == jaxmlp.__version__
    best = max(rows, key=lambda r: (r["best_epoch_validation_accuracy"], -r["configuration"]))
    assert document["best"]["configuration"] == best["configuration"]

    # Two configurations trained alone by jaxmlp train: one of the first stack (and the best),
    # one of the second.
    for row in {best["configuration"]: best, 8: rows[7]}.values():
        name = f"alone{row['configuration']}"
        values = [
            "--learning-rate", str(row["learning_rate"]),
            "--seed", str(row["seed"]),
            "--dropout-rate", str(row["dropout_rate"]),
        ]  # fmt: skip
        code, _, err = run(
            capsys, "train", "--runs-dir", runs_dir, "--name", name, "--no-plots", "--no-events",
            *values, *options,
        )  # fmt: skip
        assert code == 0, err
        alone = json.loads((runs_dir / name / "history.json").read_text())
        for stacked_record, alone_record in zip(row["history"], alone, strict=True):
            for key in ("loss", "train_accuracy", "validation_loss", "validation_accuracy"):
                assert stacked_record[key] == pytest.approx(alone_record[key], rel=1e-5, abs=1e-6)
    # The best configuration's run directory is an ordinary run: evaluate scores its best epoch
    # as jaxmlp train's own run of it does.
    alone_metrics = json.loads(
        (runs_dir / f"alone{best['configuration']}" / "metrics.json").read_text()
    )
    best_metrics = json.loads((runs_dir / "s" / "best" / "metrics.json").read_text())
    assert best_metrics["best_epoch"] == alone_metrics["best_epoch"] == best["best_epoch"]
    assert best_metrics["test_correct"] == alone_metrics["test_correct"]
    code, out, err = run(capsys, "evaluate", runs_dir / "s" / "best", "--no-plots", "--json")
    assert code == 0, err
    evaluated = json.loads(out.strip().splitlines()[-1])
    assert evaluated["correct"] == alone_metrics["test_correct"]


@pytest.mark.data
def test_a_sweep_whose_every_configuration_diverges_says_so_and_keeps_the_results(capsys, tmp_path):
    require_mnist()
    runs_dir = tmp_path / "runs"
    code, out, err = sweep(
        capsys,
        runs_dir / "s",
        "--grid",
        "learning_rate=1e30,1e35",
        "--optimizer",
        "sgd",
        "--schedule",
        "constant",
        "--epochs",
        "1",
        "--no-compilation-cache",
        *small_run(16),
    )
    assert code == 1, err
    assert "every configuration diverged" in err and "Traceback" not in err
    document = json.loads((runs_dir / "s" / "results.json").read_text())
    assert document["best"] is None
    assert [r["diverged"] for r in document["results"]] == [True, True]
    assert not (runs_dir / "s" / "best").exists()
