"""Early stopping and the best epoch: the rule (best_epoch, should_stop), fit's patience and
restore_best, and ``jaxmlp train`` / ``evaluate`` / ``predict`` / ``export`` around them."""

from __future__ import annotations

import io
import json
import math
import shutil
import sys
from pathlib import Path

import jax
import numpy as np
import pytest
from cli_support import assert_one_line_error, require_mnist, run, small_run, train

import jaxmlp
from jaxmlp import checkpoints

# --------------------------------------------------------------------------------------------
# The rule


def _history(monitor: str, values) -> list[dict]:
    return [{"epoch": e, monitor: v} for e, v in enumerate(values, start=1)]


@pytest.mark.parametrize(
    ("monitor", "values", "min_delta", "best"),
    [
        ("validation_accuracy", [0.90, 0.95, 0.94, 0.96, 0.96], 0.0, 4),  # a tie keeps the first
        ("validation_accuracy", [0.90, 0.95, 0.9505, 0.952], 0.001, 4),  # 0.952 - 0.95 > 0.001
        ("validation_accuracy", [0.90, 0.95, 0.9505, 0.9509], 0.001, 2),  # gains of <= 0.001
        ("validation_loss", [0.5, 0.3, 0.31, 0.2, 0.25], 0.0, 4),  # lower is better
        ("validation_loss", [0.5, 0.3, 0.295], 0.01, 2),
        ("validation_accuracy", [0.9, math.nan, 0.8], 0.0, 1),  # a NaN never improves
        ("validation_accuracy", [], 0.0, None),
    ],
)
def test_the_best_epoch_improves_on_the_best_so_far_by_more_than_min_delta(
    monitor, values, min_delta, best
):
    assert jaxmlp.best_epoch(_history(monitor, values), monitor=monitor, min_delta=min_delta) == (
        best
    )


def test_records_without_the_monitored_value_have_no_best_epoch():
    assert jaxmlp.best_epoch([{"epoch": 1, "loss": 0.3}, {"epoch": 2, "loss": 0.2}]) is None


@pytest.mark.parametrize(
    ("values", "patience", "stops"),
    [
        ([0.90, 0.95, 0.94, 0.93], 2, True),  # two epochs after the best (2)
        ([0.90, 0.95, 0.94], 2, False),
        ([0.90, 0.95, 0.94, 0.96], 2, False),  # epoch 4 improved: the count starts again
        ([0.90], 1, False),
        ([0.90, 0.90], 1, True),  # a tie is no improvement
        ([], 1, False),
    ],
)
def test_training_stops_after_patience_epochs_without_an_improvement(values, patience, stops):
    history = _history("validation_accuracy", values)
    assert jaxmlp.should_stop(history, patience=patience) is stops


@pytest.mark.parametrize(
    ("call", "error", "fragment"),
    [
        (lambda: jaxmlp.best_epoch([], monitor="accuracy"), ValueError, "monitor"),
        (lambda: jaxmlp.best_epoch([], min_delta=-0.1), ValueError, "min_delta=-0.1"),
        (lambda: jaxmlp.should_stop([], patience=0), ValueError, "patience=0"),
        (lambda: jaxmlp.best_epoch([{"loss": 1}]), TypeError, "history"),
    ],
)
def test_the_rule_checks_its_arguments(call, error, fragment):
    with pytest.raises(error, match=fragment):
        call()


# --------------------------------------------------------------------------------------------
# fit


def _data(n=200, features=6, classes=3, seed=0):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, n).astype(np.int32)
    centres = rng.normal(size=(classes, features)) * 2
    return (centres[labels] + rng.normal(size=(n, features))).astype(np.float32), labels


X, Y = _data()
# Validation labels that are noise: the accuracy wanders, so patience runs out early.
XV, YV = X[:100], np.random.default_rng(1).integers(0, 3, 100).astype(np.int32)


def _fit(**kwargs):
    arguments = dict(epochs=30, batch_size=50, validation_data=(XV, YV))
    arguments.update(kwargs)
    if "state" not in arguments:
        arguments.update(
            key=jax.random.key(0), layer_sizes=(6, 16, 3), optimizer=jaxmlp.optimizer("adam", 1e-2)
        )
    return jaxmlp.fit(x_train=X, y_train=Y, **arguments)


def _numbers(history):
    return [{k: v for k, v in r.items() if "seconds" not in k} for r in history]


def test_fit_stops_at_the_first_epoch_where_patience_is_spent():
    _, history = _fit(early_stopping_patience=2)
    assert len(history) < 30
    assert jaxmlp.should_stop(history, patience=2)
    assert not any(jaxmlp.should_stop(history[:n], patience=2) for n in range(1, len(history)))
    best = jaxmlp.best_epoch(history)
    assert history[-1]["epoch"] == best + 2


def test_early_stopping_changes_no_number_of_the_epochs_it_trains():
    _, plain = _fit(epochs=8)
    _, patient = _fit(epochs=8, early_stopping_patience=8, monitor="validation_loss")
    assert _numbers(patient) == _numbers(plain)


def test_restore_best_returns_the_best_epochs_state():
    states = {}

    def keep(state, record):
        states[record["epoch"]] = state

    for monitor in ("validation_accuracy", "validation_loss"):
        state, history = _fit(epochs=10, monitor=monitor, restore_best=True, on_epoch_end=keep)
        best = jaxmlp.best_epoch(history, monitor=monitor)
        assert best != history[-1]["epoch"]  # else this test would not tell them apart
        for got, want in zip(
            jax.tree.leaves(state.params), jax.tree.leaves(states[best].params), strict=True
        ):
            np.testing.assert_array_equal(got, want)
        assert int(state.step) == best * 4  # 200 examples in batches of 50


def test_a_continued_fit_counts_patience_from_its_history():
    state, history = _fit(early_stopping_patience=2)
    # The history already spends a patience of 2: nothing more is trained.
    again, same = _fit(state=state, history=history, early_stopping_patience=2)
    assert again is state and same == history
    # A larger patience trains on from the same count.
    _, longer = _fit(state=state, history=history, early_stopping_patience=4, epochs=10)
    assert longer[: len(history)] == history and len(longer) > len(history)
    assert jaxmlp.should_stop(longer, patience=4) or len(longer) == len(history) + 10


@pytest.mark.parametrize(
    ("kwargs", "error", "fragment"),
    [
        ({"early_stopping_patience": 0}, ValueError, "early_stopping_patience=0"),
        ({"monitor": "accuracy"}, ValueError, "monitor"),
        ({"min_delta": -1.0}, ValueError, "min_delta=-1.0"),
        ({"restore_best": 1}, TypeError, "restore_best"),
        (
            {"early_stopping_patience": 2, "validation_data": None},
            ValueError,
            "early_stopping_patience=2 watch validation_accuracy, which needs validation_data",
        ),
        ({"restore_best": True, "validation_data": None}, ValueError, "restore_best=True"),
    ],
)
def test_fit_refuses_bad_stopping_arguments_before_compiling(kwargs, error, fragment, monkeypatch):
    from jaxmlp.training import _fit as fit_module

    def no_compile(*args, **kwargs):
        raise AssertionError("compiled before checking its arguments")

    monkeypatch.setattr(fit_module.epoch_program, "lower", no_compile, raising=False)
    with pytest.raises(error, match=fragment):
        _fit(**kwargs)


# --------------------------------------------------------------------------------------------
# jaxmlp train, evaluate, predict, export

# 1000 training images, lr 0.01 without decay, patience 2: stops after epoch 8 of 30 on CPU.
STOPPING = small_run(
    16,
    "--learning-rate",
    "0.01",
    "--schedule",
    "constant",
    "--epochs",
    "30",
    "--early-stopping-patience",
    "2",
    "--keep-checkpoints",
    "1",
    "--no-plots",
)


@pytest.fixture(scope="module")
def stopped(tmp_path_factory):
    """A run that early stopping ended: its directory, and the output of its training."""
    require_mnist()
    run_dir = tmp_path_factory.mktemp("stopping") / "stopped"
    out, err = io.StringIO(), io.StringIO()
    mp = pytest.MonkeyPatch()
    mp.setattr(sys, "stdout", out)
    mp.setattr(sys, "stderr", err)
    try:
        code = jaxmlp.cli.main(
            [str(a) for a in ("train", "--runs-dir", run_dir.parent, "--name", "stopped")]
            + STOPPING
        )
    finally:
        mp.undo()
    assert code == 0, err.getvalue()
    return run_dir, out.getvalue()


def _read(run_dir, name):
    return json.loads((run_dir / name).read_text())


def test_train_stops_keeps_the_best_checkpoint_and_scores_it(stopped):
    run_dir, out = stopped
    history = _read(run_dir, "history.json")
    best = jaxmlp.best_epoch(history)
    last = history[-1]["epoch"]
    assert last < 30 and last == best + 2
    # --keep-checkpoints 1 keeps the last epoch, and the best one besides it.
    assert checkpoints.list_steps(run_dir / "checkpoints") == [best, last]
    metrics = _read(run_dir, "metrics.json")
    assert metrics["stopped_early"] is True and metrics["epochs_trained"] == last
    assert metrics["best_epoch"] == metrics["test_epoch"] == best
    assert metrics["monitor"] == "validation_accuracy"
    assert metrics["best_validation_accuracy"] == history[best - 1]["validation_accuracy"]
    assert metrics["checkpoint"].endswith(f"checkpoints/{best}")
    assert f"early stopping: stopped after epoch {last} of 30" in out
    assert f"best epoch {best} (validation accuracy" in out
    assert f"at the best epoch {best} of {last}" in out


def test_evaluate_predict_and_export_use_the_best_epoch_and_say_so(stopped, capsys, tmp_path):
    run_dir, _ = stopped
    metrics = _read(run_dir, "metrics.json")
    best, last = metrics["best_epoch"], metrics["epochs_trained"]
    where = ("--runs-dir", run_dir.parent)
    code, out, err = run(capsys, "evaluate", "stopped", *where, "--no-plots")
    assert code == 0, err
    assert f"(checkpoint of epoch {best}: the best, validation accuracy" in out
    assert f"--epoch last for epoch {last}" in out
    code, out, _ = run(capsys, "evaluate", "stopped", *where, "--no-plots", "--json")
    scores = json.loads(out)
    assert (scores["epoch"], scores["epoch_choice"]) == (best, "best")
    assert scores["test_accuracy"] == pytest.approx(metrics["test_accuracy"])
    code, out, _ = run(
        capsys, "evaluate", "stopped", *where, "--no-plots", "--json", "--epoch", "last"
    )
    assert (json.loads(out)["epoch"], json.loads(out)["epoch_choice"]) == (last, "last")
    code, out, _ = run(
        capsys, "evaluate", "stopped", *where, "--no-plots", "--json", "--epoch", str(best)
    )
    assert (json.loads(out)["epoch"], json.loads(out)["epoch_choice"]) == (best, "given")

    image = sorted((Path(__file__).parent / "assets" / "digits").glob("*.png"))[0]
    code, out, err = run(capsys, "predict", "stopped", *where, image, "--json")
    assert code == 0, err
    assert json.loads(out)["epoch"] == best
    code, out, err = run(
        capsys, "export", "stopped", *where, "--format", "jax", "--output", tmp_path / "m.jax"
    )
    assert code == 0, err
    assert f"at epoch {best} (the best" in out
    assert _read(tmp_path, "m.jax.json")["jaxmlp.epoch"] == best


@pytest.mark.parametrize("command", ["evaluate", "predict", "export"])
def test_an_epoch_without_a_checkpoint_is_one_line_naming_the_saved_ones(
    stopped, capsys, command, tmp_path
):
    run_dir, _ = stopped
    saved = checkpoints.list_steps(run_dir / "checkpoints")
    extra = {
        "evaluate": [],
        "predict": ["x.png"],
        "export": ["--format", "jax", "--output", tmp_path / "m"],
    }
    code, _, err = run(
        capsys, command, "stopped", "--runs-dir", run_dir.parent, "--epoch", "1", *extra[command]
    )
    if command == "predict":  # the image is read first, and there is none
        assert_one_line_error(code, err, "x.png")
        return
    assert_one_line_error(
        code, err, "--epoch 1", "no checkpoint of epoch 1", ", ".join(map(str, saved))
    )
    code, _, err = run(capsys, command, "stopped", "--runs-dir", run_dir.parent, "--epoch", "0")
    assert_one_line_error(code, err, "--epoch", "best, last or an epoch number", usage=True)


def test_training_a_stopped_run_again_trains_nothing_and_more_patience_trains_on(
    stopped, capsys, tmp_path
):
    run_dir = tmp_path / "stopped"
    shutil.copytree(stopped[0], run_dir)
    history = _read(run_dir, "history.json")
    code, out, err = train(capsys, run_dir, *STOPPING)
    assert code == 0, err
    assert "early stopping: the run stopped after epoch" in out
    assert _read(run_dir, "history.json") == history
    code, out, err = train(capsys, run_dir, "--resume", "--early-stopping-patience", "4")
    assert code == 0, err
    longer = _read(run_dir, "history.json")
    assert _numbers(longer[: len(history)]) == _numbers(history)
    assert len(longer) > len(history)
    assert jaxmlp.should_stop(longer, patience=4) or longer[-1]["epoch"] == 30
    assert _read(run_dir, "config.json")["early_stopping_patience"] == 4


@pytest.mark.parametrize(
    ("argv", "fragments"),
    [
        (["--validation", "0", "--monitor", "validation_loss"], ["--monitor", "--validation 0"]),
        (["--validation", "0", "--min-delta", "0.01"], ["--min-delta", "--validation 0"]),
        (["--validation", "0", "--early-stopping-patience", "3"], ["early_stopping_patience=3"]),
        (["--early-stopping-patience", "0"], ["early_stopping_patience=0", ">= 1"]),
        (["--min-delta", "-0.1"], ["min_delta=-0.1"]),
        (["--monitor", "loss"], ["--monitor", "loss"]),
        (["--log-every-steps", "0"], ["log_every_steps=0"]),
        (["--log-every-steps", "10", "--no-events"], ["--log-every-steps", "--no-events"]),
    ],
)
def test_bad_stopping_options_are_one_line_and_write_nothing(argv, fragments, capsys, tmp_path):
    code, _, err = run(capsys, "train", "--runs-dir", tmp_path / "runs", *argv)
    assert_one_line_error(code, err, *fragments, usage=True)
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_step_logs_in_the_run_directory_change_no_number(needs_data, capsys, tmp_path):
    from test_loggers import scalars

    argv = small_run(16, "--epochs", "2", "--no-plots")
    code, _, err = train(capsys, tmp_path / "plain", *argv)
    assert code == 0, err
    code, _, err = train(capsys, tmp_path / "steps", *argv, "--log-every-steps", "3")
    assert code == 0, err
    assert _numbers(_read(tmp_path / "steps", "history.json")) == _numbers(
        _read(tmp_path / "plain", "history.json")
    )
    # 1000 examples in batches of 100: 10 steps an epoch, 20 in all.
    written = scalars(tmp_path / "steps" / "steps")
    assert [s for s, _ in written["train/step_loss"]] == [3, 6, 9, 12, 15, 18]
    assert not (tmp_path / "plain" / "steps").exists()


def test_without_early_stopping_the_same_epochs_train_alike_and_the_best_is_kept(
    stopped, capsys, tmp_path
):
    run_dir, _ = stopped
    history = _read(run_dir, "history.json")
    last = history[-1]["epoch"]
    argv = [a for a in STOPPING if a not in ("--early-stopping-patience", "2")]
    argv[argv.index("--epochs") + 1] = str(last)
    code, out, err = train(capsys, tmp_path / "plain", *argv)
    assert code == 0, err
    plain = _read(tmp_path / "plain", "history.json")
    assert _numbers(plain) == _numbers(history)
    best = jaxmlp.best_epoch(plain)
    assert checkpoints.list_steps(tmp_path / "plain" / "checkpoints") == [best, last]
    metrics = _read(tmp_path / "plain", "metrics.json")
    assert metrics["stopped_early"] is False and metrics["test_epoch"] == best
    assert "early stopping" not in out


def test_a_run_that_lost_its_best_checkpoint_falls_back_to_the_last_with_a_warning(
    stopped, capsys, tmp_path
):
    """As a run trained before the best epoch was kept out of the rotation."""
    run_dir = tmp_path / "old"
    shutil.copytree(stopped[0], run_dir)
    metrics = _read(run_dir, "metrics.json")
    best, last = metrics["best_epoch"], metrics["epochs_trained"]
    shutil.rmtree(run_dir / "checkpoints" / str(best))
    code, out, err = run(capsys, "evaluate", run_dir, "--no-plots", "--json")
    assert code == 0, err
    assert f"the best epoch of {run_dir}, {best}" in err and f"epoch {last}" in err
    assert (json.loads(out)["epoch"], json.loads(out)["epoch_choice"]) == (last, "last")
    code, out, err = train(capsys, run_dir, *STOPPING)
    assert code == 0, err
    assert "has no checkpoint kept; scoring the last one" in err
    assert f"at epoch {last};" in out
    assert _read(run_dir, "metrics.json")["test_epoch"] == last
