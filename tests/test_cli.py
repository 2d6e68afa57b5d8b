"""End-to-end tests of the ``jaxmlp`` command, driven in-process through ``cli.main``.

They train on small subsets of the real MNIST files (``--train-limit``/``--test-limit``) to stay
fast. Tests that need the data skip when it is absent, and fail instead when
``JAXMLP_REQUIRE_DATA=1``.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
from pathlib import Path

import numpy as np
import pytest
from cli_support import assert_one_line_error, require_mnist, restore_final, run, small_run, train

from jaxmlp import checkpoints, cli
from jaxmlp.cli import config as cfglib

ASSETS = Path(__file__).parent / "assets" / "digits"
SAMPLES = sorted(ASSETS.glob("*.png")) + sorted(ASSETS.glob("*.jpg"))
SMALL = small_run(64)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One small run, configured through a TOML file, shared by the read-only tests."""
    require_mnist()
    root = tmp_path_factory.mktemp("cli")
    config_file = root / "small.toml"
    config_file.write_text("hidden = [64]\nlearning-rate = 2e-3\nepochs = 2\nseed = 3\n")
    argv = [
        "train",
        "--config",
        config_file,
        "--runs-dir",
        root / "runs",
        "--name",
        "small",
        *[a for a in SMALL if a not in ("--hidden", "64")],
    ]
    mp = pytest.MonkeyPatch()
    import io
    import sys

    out, err = io.StringIO(), io.StringIO()
    mp.setattr(sys, "stdout", out)
    mp.setattr(sys, "stderr", err)
    try:
        code = cli.main([str(a) for a in argv])
    finally:
        mp.undo()
    assert code == 0, err.getvalue()
    return root / "runs" / "small", out.getvalue(), err.getvalue()


# --------------------------------------------------------------------------------------------
# train


def test_train_writes_the_run_directory(trained):
    run_dir, out, _ = trained
    assert "epoch  train loss  train acc  val loss  val acc  seconds" in out
    assert "test accuracy" in out
    saved = json.loads((run_dir / "config.json").read_text())
    assert saved["hidden"] == [64] and saved["learning_rate"] == 2e-3 and saved["seed"] == 3
    assert saved["train_limit"] == 1000
    cfglib.load(run_dir / "config.json")  # the saved config is itself a valid config file
    history = json.loads((run_dir / "history.json").read_text())
    assert [r["epoch"] for r in history] == [1, 2]
    assert {"loss", "train_accuracy", "validation_loss", "validation_accuracy", "seconds"} <= set(
        history[0]
    )
    assert checkpoints.list_steps(run_dir / "checkpoints") == [1, 2]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert 0.5 < metrics["test_accuracy"] <= 1.0 and metrics["test_count"] == 300
    for name in ("history.png", "misclassified.png", "confusion.png"):
        assert (run_dir / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_train_again_with_same_config_reports_complete_run(trained, capsys):
    run_dir, _, _ = trained
    code, out, err = train(capsys, run_dir, "--config", run_dir / "config.json", "--no-plots")
    assert code == 0, err
    assert "resuming" in out and "test accuracy" in out
    assert checkpoints.list_steps(run_dir / "checkpoints") == [1, 2]


def test_existing_run_with_other_config_is_refused(trained, capsys):
    run_dir, _, _ = trained
    code, _, err = train(capsys, run_dir, "--learning-rate", "0.5")
    assert_one_line_error(code, err, "different config", "--resume", "--overwrite")


def test_resume_refuses_changed_hyperparameters(trained, capsys):
    run_dir, _, _ = trained
    code, _, err = train(capsys, run_dir, "--resume", "--dropout-rate", "0.5")
    assert_one_line_error(code, err, "dropout")


def test_interrupted_run_resumes_exactly(needs_data, tmp_path, capsys, monkeypatch):
    """3 epochs straight == 2 epochs, Ctrl-C, then --resume: bit-identical parameters."""
    common = ["train", "--runs-dir", tmp_path, *SMALL, "--epochs", "3", "--no-plots"]
    code, out, err = run(capsys, *common, "--name", "straight", "--json")
    assert code == 0, err
    events = [json.loads(line) for line in out.splitlines()]
    assert [e["event"] for e in events] == ["epoch", "epoch", "epoch", "done"]

    original = checkpoints.save

    def interrupting(directory, epoch, state, **kwargs):
        if epoch == 2:  # Ctrl-C as epoch 2 ends, before its checkpoint is written
            os.kill(os.getpid(), signal.SIGINT)
        return original(directory, epoch, state, **kwargs)

    monkeypatch.setattr(checkpoints, "save", interrupting)
    code, out, err = run(capsys, *common, "--name", "split")
    assert code == 130, err
    assert "interrupted" in err and "--resume" in err
    split = tmp_path / "split"
    assert checkpoints.list_steps(split / "checkpoints") == [1, 2]
    assert [r["epoch"] for r in json.loads((split / "history.json").read_text())] == [1, 2]
    monkeypatch.setattr(checkpoints, "save", original)

    code, out, err = run(
        capsys, "train", "--runs-dir", tmp_path, "--name", "split", "--resume", "--no-plots"
    )
    assert code == 0, err
    assert "resuming" in out
    history = json.loads((split / "history.json").read_text())
    assert [r["epoch"] for r in history] == [1, 2, 3]

    a, b = restore_final(tmp_path / "straight"), restore_final(split)
    assert a.epoch == b.epoch == 3
    for x, y in zip(
        checkpoints.state_arrays(a.state).values(),
        checkpoints.state_arrays(b.state).values(),
        strict=True,
    ):
        import jax

        for u, v in zip(jax.tree.leaves(x), jax.tree.leaves(y), strict=True):
            assert np.array_equal(np.asarray(u), np.asarray(v))
    straight_history = json.loads((tmp_path / "straight" / "history.json").read_text())
    for r, s in zip(history, straight_history, strict=True):
        assert r["loss"] == s["loss"] and r["validation_accuracy"] == s["validation_accuracy"]


def test_corrupted_latest_checkpoint_falls_back(trained, tmp_path, capsys):
    run_dir = tmp_path / "copy"
    shutil.copytree(trained[0], run_dir)
    damaged = [
        p
        for p in (run_dir / "checkpoints" / "2").rglob("*")
        if p.is_file() and p.stat().st_size > 1000
    ]
    assert damaged
    for path in damaged:
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])

    code, out, err = run(capsys, "evaluate", run_dir, "--no-plots", "--json")
    assert code == 0, err
    assert "epoch 2" in err and "falling back" in err
    assert json.loads(out)["epoch"] == 1

    code, out, err = run(
        capsys, "train", "--runs-dir", tmp_path, "--name", "copy", "--resume", "--no-plots"
    )
    assert code == 0, err
    assert "falling back" in err and "resuming" in out
    assert checkpoints.list_steps(run_dir / "checkpoints") == [1, 2]
    assert [r["epoch"] for r in json.loads((run_dir / "history.json").read_text())] == [1, 2]
    assert restore_final(run_dir).epoch == 2


def test_checkpoint_of_another_architecture_is_refused(trained, tmp_path, capsys):
    run_dir = tmp_path / "other"
    shutil.copytree(trained[0], run_dir)
    saved = json.loads((run_dir / "config.json").read_text())
    saved["hidden"] = [32]
    (run_dir / "config.json").write_text(json.dumps(saved))
    code, _, err = run(capsys, "evaluate", run_dir)
    assert_one_line_error(code, err, "784-64-10", "784-32-10")


def test_nonfinite_loss_stops_with_a_message(needs_data, tmp_path, capsys):
    code, _, err = train(
        capsys,
        tmp_path / "nan",
        *SMALL,
        *("--epochs", "1", "--optimizer", "sgd", "--learning-rate", "1e30"),
        *("--schedule", "constant", "--no-plots"),
    )
    assert code == 1, err
    assert "epoch 1, step" in err and "lower learning rate" in err
    assert checkpoints.list_steps(tmp_path / "nan" / "checkpoints") == []


# --------------------------------------------------------------------------------------------
# evaluate, predict, summary, data


def test_evaluate_prints_per_class_metrics(trained, capsys):
    run_dir, _, _ = trained
    code, out, err = run(capsys, "evaluate", run_dir.name, "--runs-dir", run_dir.parent)
    assert code == 0, err
    assert "Per-class metrics" in out and "precision" in out and "Confusion matrix" in out
    assert "macro F1" in out
    code, out, err = run(capsys, "evaluate", run_dir, "--json", "--no-plots")
    scores = json.loads(out)
    assert scores["count"] == 300 and len(scores["per_class"]) == 10
    matrix = np.array(scores["confusion_matrix"])
    assert matrix.sum() == 300 and np.trace(matrix) == scores["correct"]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert scores["test_accuracy"] == pytest.approx(metrics["test_accuracy"])


def test_predict_on_sample_images(trained, capsys, tmp_path):
    run_dir, _, _ = trained
    assert len(SAMPLES) >= 4
    code, out, err = run(capsys, "predict", run_dir, *SAMPLES, "--save-input", tmp_path)
    assert code == 0, err
    lines = out.strip().splitlines()
    assert len(lines) == len(SAMPLES)
    for line in lines:
        assert "predicted" in line and "top-3 probability" in line
    assert len(list(tmp_path.glob("*_28x28.png"))) == len(SAMPLES)
    code, out, err = run(capsys, "predict", run_dir, *SAMPLES, "--json", "--top", "5")
    predictions = json.loads(out)["predictions"]
    for p in predictions:
        probabilities = [t["probability"] for t in p["top"]]
        assert len(probabilities) == 5 and probabilities == sorted(probabilities, reverse=True)
        assert 0 < sum(probabilities) <= 1 + 1e-5 and p["predicted"] == p["top"][0]["class"]


def test_predict_reports_a_bad_image(trained, capsys, tmp_path):
    not_an_image = tmp_path / "notes.png"
    not_an_image.write_text("not an image")
    code, _, err = run(capsys, "predict", trained[0], not_an_image)
    assert_one_line_error(code, err, "notes.png")
    blank = tmp_path / "blank.png"
    from PIL import Image

    Image.new("L", (50, 50), 255).save(blank)
    code, _, err = run(capsys, "predict", trained[0], blank)
    assert_one_line_error(code, err, "no digit")


def test_summary_counts_parameters(capsys):
    code, out, err = run(capsys, "summary", "--hidden", "256")
    assert code == 0, err
    assert "203,530" in out and "(batch, 256)" in out and "Dense-2" in out
    code, out, _ = run(capsys, "summary", "--json")
    assert json.loads(out)["total_parameters"] == 535_818


def test_summary_of_a_run(trained, capsys):
    code, out, _ = run(capsys, "summary", trained[0], "--json")
    assert code == 0
    assert json.loads(out)["layer_sizes"] == [784, 64, 10]


def test_data_status(needs_data, capsys):
    code, out, err = run(capsys, "data", "status", "mnist")
    assert code == 0, err
    assert "verified" in out and "mnist: ready" in out


# --------------------------------------------------------------------------------------------
# Errors and help


@pytest.mark.parametrize(
    ("argv", "fragments"),
    [
        (["train", "--epochs", "0"], ["epochs"]),
        (["train", "--dropout-rate", "1.5"], ["dropout"]),
        # Options have one name each: no former spellings, no prefixes.
        (["train", "--dropout", "0.2"], ["--dropout"]),
        (["train", "--beta1", "0.8"], ["--beta1"]),
        (["train", "--learning", "0.1"], ["--learning"]),
        (["train", "--augment-rotate", "200"], ["augment_rotate=200.0", "[0, 180]"]),
        (["train", "--augment-scale", "1"], ["augment_scale=1.0", "[0, 1)"]),
        (["train", "--augment-scale", "-0.1"], ["augment_scale"]),
        (["train", "--adversarial-epsilon", "-1"], ["adversarial_epsilon=-1.0", ">= 0"]),
        (["train", "--adversarial-weight", "0"], ["adversarial_weight=0.0", "(0, 1]"]),
        (
            ["train", "--adversarial-epsilon", "0.1", "--gradient", "backprop"],
            ["adversarial_epsilon=0.1 needs gradient='autodiff'"],
        ),
        (["train", "--vat-weight", "0"], ["vat_weight=0.0", "> 0"]),
        (
            ["train", "--vat-epsilon", "2", "--output", "sigmoid"],
            ["vat_epsilon=2.0 needs output='softmax'"],
        ),
        (["train", "--optimizer", "adamm"], ["--optimizer", "adamm"]),
        (["train", "--learning-rate", "fast"], ["--learning-rate"]),
        (["train", "--optimizer", "adam", "--momentum", "0.9"], ["momentum"]),
        (["train", "--validation", "60000"], ["validation"]),
        (["train", "--name", "../escape"], ["--name"]),
        (["train", "--bogus"], ["--bogus"]),
        (["evaluate", "no-such-run"], ["no-such-run"]),
        (["predict", "no-such-run", "x.png"], ["x.png"]),
        (["train", "--config", "missing.toml"], ["missing.toml"]),
        (["frobnicate"], ["frobnicate"]),
    ],
)
def test_bad_arguments_give_one_line(argv, fragments, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, _, err = run(capsys, *argv)
    assert_one_line_error(code, err, *fragments, usage=True)


@pytest.mark.parametrize(
    ("text", "fragments"),
    [
        ("learning_rat = 0.1\n", ["unknown key", "learning_rat"]),
        ("dropout = 0.1\n", ["unknown key 'dropout'", "did you mean dropout_rate?"]),
        ('epochs = "ten"\n', ["epochs", "integer"]),
        ("hidden = 64\n", ["hidden", "list"]),
        ("epochs = \n", ["invalid TOML"]),
    ],
)
def test_bad_config_file(text, fragments, capsys, tmp_path):
    path = tmp_path / "run.toml"
    path.write_text(text)
    code, _, err = run(capsys, "train", "--config", path, "--runs-dir", tmp_path)
    assert_one_line_error(code, err, *fragments)


def test_debug_shows_the_traceback(tmp_path):
    with pytest.raises(cfglib.ConfigError):
        cli.main(["train", "--debug", "--epochs", "0", "--runs-dir", str(tmp_path)])


@pytest.mark.parametrize("command", ["train", "evaluate", "predict", "summary", "data"])
def test_help_lists_every_option_with_its_default(command, capsys):
    code, out, _ = run(capsys, command, "--help")
    assert code == 0
    parser = cli.parser.build_parser()
    sub = next(a for a in parser._actions if hasattr(a, "choices") and a.choices)
    options = [a for a in sub.choices[command]._actions if a.option_strings]
    flat = " ".join(out.split())
    for action in options:
        if action.dest == "help":
            continue
        assert action.option_strings[-1] in out
    assert flat.count("(default:") >= len(options) - 1
    if command == "train":
        for name in cfglib.FIELDS:
            assert "--" + name.replace("_", "-") in out


@pytest.mark.slow
def test_kill_9_then_resume_matches_an_uninterrupted_run(needs_data, tmp_path, capsys):
    """SIGKILL at some moment after the first checkpoint, then --resume: same final params,
    a readable checkpoint and a history with each epoch exactly once."""
    import subprocess
    import sys
    import time

    common = [
        "--runs-dir",
        tmp_path,
        *SMALL,
        "--epochs",
        "4",
        "--no-plots",
        "--keep-checkpoints",
        "2",
    ]
    code, _, err = run(capsys, "train", *common, "--name", "straight")
    assert code == 0, err

    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    checkpoints_dir = tmp_path / "killed" / "checkpoints"
    # As a context manager, Popen closes the pipe it opened (else a ResourceWarning).
    with subprocess.Popen(
        [sys.executable, "-m", "jaxmlp", "train", *map(str, common), "--name", "killed"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=env,
    ) as process:
        deadline = time.monotonic() + 120
        while not checkpoints.list_steps(checkpoints_dir) and process.poll() is None:
            assert time.monotonic() < deadline, "no checkpoint within 120 s"
            time.sleep(0.02)
        time.sleep(float(np.random.default_rng().uniform(0.0, 0.5)))
        process.kill()
        process.wait()

    code, out, err = run(
        capsys, "train", "--runs-dir", tmp_path, "--name", "killed", "--resume", "--no-plots"
    )
    assert code == 0, err
    history = json.loads((tmp_path / "killed" / "history.json").read_text())
    assert [r["epoch"] for r in history] == [1, 2, 3, 4]
    a, b = restore_final(tmp_path / "straight"), restore_final(tmp_path / "killed")
    import jax

    for u, v in zip(
        jax.tree.leaves(checkpoints.state_arrays(a.state)),
        jax.tree.leaves(checkpoints.state_arrays(b.state)),
        strict=True,
    ):
        assert np.array_equal(np.asarray(u), np.asarray(v))
