"""``jaxmlp train`` as the one command of the main job: a run directory held by one process at a
time, a missing dataset fetched by itself, one name per option, a learning-rate schedule that
ends on the last step trained, and user images too large to decode refused in one line."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cli_support import assert_one_line_error, require_mnist, run, small_run, train

from jaxmlp import checkpoints, data
from jaxmlp.cli import config as cfglib

TINY = small_run(16, "--no-plots")
CHILD_TIMEOUT = 240


def _jaxmlp(*argv) -> list[str]:
    return [sys.executable, "-m", "jaxmlp", *map(str, argv)]


def _wait_for(predicate, what: str, timeout: float = CHILD_TIMEOUT) -> None:
    started = time.monotonic()
    while not predicate():
        assert time.monotonic() - started < timeout, f"timed out waiting for {what}"
        time.sleep(0.05)


# --------------------------------------------------------------------------------------------
# One process per run


@pytest.mark.slow
def test_a_second_process_on_a_training_run_fails_at_once_and_a_killed_one_never_blocks(
    needs_data, tmp_path
):
    common = ["train", "--runs-dir", tmp_path, "--name", "shared", *TINY, "--quiet"]
    # As a context manager, Popen closes the pipe it opened (else a ResourceWarning).
    with subprocess.Popen(_jaxmlp(*common, "--epochs", "500"), stderr=subprocess.PIPE) as first:
        try:
            _wait_for(
                lambda: checkpoints.list_steps(tmp_path / "shared" / "checkpoints"), "epoch 1"
            )
            started = time.monotonic()
            second = subprocess.run(
                _jaxmlp(*common, "--epochs", "500", "--learning-rate", "0.5"),
                capture_output=True,
                text=True,
                timeout=CHILD_TIMEOUT,
            )
            seconds = time.monotonic() - started
            line = assert_one_line_error(second.returncode, second.stderr, str(tmp_path / "shared"))
            assert "another jaxmlp process" in line
            assert seconds < 30  # at once: no waiting for the lock, nothing trained
            # The second process touched nothing: the first still owns the run with its config.
            assert cfglib.load(tmp_path / "shared" / "config.json").learning_rate == 1e-3
            first.send_signal(signal.SIGKILL)
            first.wait(timeout=CHILD_TIMEOUT)
        finally:
            if first.poll() is None:
                first.kill()
    # The kernel released the killed process's lock: the run resumes at once.
    resumed = subprocess.run(
        _jaxmlp(*common, "--epochs", "500", "--resume", "--epochs", "2"),
        capture_output=True,
        text=True,
        timeout=CHILD_TIMEOUT,
    )
    assert resumed.returncode == 0, resumed.stderr


def test_a_lock_file_left_behind_blocks_nothing_and_reading_a_run_needs_no_lock(
    needs_data, tmp_path, capsys
):
    code, _, err = run(
        capsys, "train", "--runs-dir", tmp_path, "--name", "done", *TINY, "--epochs", "1", "--quiet"
    )
    assert code == 0, err
    # A lock file left behind (as by a killed trainer) blocks nothing.
    assert (tmp_path / ".done.lock").exists()
    for argv in (
        ["evaluate", "done", "--runs-dir", tmp_path, "--no-plots", "--json"],
        ["summary", "done", "--runs-dir", tmp_path],
        [
            "predict",
            "done",
            "--runs-dir",
            tmp_path,
            Path(__file__).parent / "assets" / "digits" / "seven_dark_on_light.png",
        ],
    ):
        code, _, err = run(capsys, *argv)
        assert code == 0, err
    code, _, err = train(capsys, tmp_path / "done", *TINY, "--epochs", "2", "--resume", "--quiet")
    assert code == 0, err


# --------------------------------------------------------------------------------------------
# The dataset is fetched by the command itself


@pytest.fixture
def empty_cache(monkeypatch, tmp_path):
    """No data root holds MNIST; returns the folder where verified copies were found before."""
    require_mnist()
    found = {s.path.parent for s in data.status("mnist")}
    assert len(found) == 1
    monkeypatch.delenv("JAXMLP_DATA_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path / "no-tfds"))
    return found.pop()


def test_train_on_an_empty_cache_fetches_the_dataset_and_says_so(
    empty_cache, monkeypatch, tmp_path, capsys
):
    fetched = []

    def fetch(name, *, log=None, **kwargs):  # the verified fetch, served from a local copy
        target = data.cache_dir() / name
        shutil.copytree(empty_cache, target)
        fetched.append(name)
        log(f"{name}: stored 4 verified file(s)")
        return {name: target}

    monkeypatch.setattr(data, "fetch", fetch)
    monkeypatch.setattr(data, "load", _offline(data.load))
    code, out, err = run(capsys, "train", "--runs-dir", tmp_path, *TINY, "--epochs", "1")
    assert code == 0, err
    assert fetched == ["mnist"]
    assert "mnist is not in" in err and "fetching it" in err and "stored 4 verified" in err
    assert "test accuracy" in out
    # The second run finds it in the cache and fetches nothing.
    code, _, err = run(
        capsys, "train", "--runs-dir", tmp_path, "--name", "again", *TINY, "--epochs", "1"
    )
    assert code == 0, err
    assert fetched == ["mnist"] and "fetching" not in err


def test_no_download_refuses_to_fetch_with_one_line_saying_how(
    empty_cache, monkeypatch, tmp_path, capsys
):
    def fetch(*args, **kwargs):
        raise AssertionError("--no-download must not fetch")

    monkeypatch.setattr(data, "fetch", fetch)
    monkeypatch.setattr(data, "load", _offline(data.load))
    code, _, err = run(capsys, "train", "--runs-dir", tmp_path, *TINY, "--no-download")
    assert_one_line_error(code, err, "mnist", "jaxmlp data fetch")


def _offline(load):
    """data.load that never tries the web (this test must not depend on the network)."""

    def offline(*args, **kwargs):
        kwargs["download"] = False
        return load(*args, **kwargs)

    return offline


# --------------------------------------------------------------------------------------------
# One schema, one name per option


def test_the_run_config_reports_the_rules_of_the_option_classes():
    with pytest.raises(cfglib.ConfigError, match=r"dropout_rate=1.5 is outside \[0, 1\)"):
        cfglib.from_mapping({"dropout_rate": 1.5}, source="")
    with pytest.raises(cfglib.ConfigError, match="optimizer 'adam' does not take momentum"):
        cfglib.from_mapping({"momentum": 0.9}, source="")


@pytest.mark.parametrize(
    ("former", "name"),
    [
        ("dropout", "dropout_rate"),
        ("input_dropout", "input_dropout_rate"),
        ("beta1", None),
        ("beta2", None),
        ("initial_accumulator", "initial_accumulator_value"),
    ],
)
def test_a_former_name_is_an_unknown_key(former, name):
    with pytest.raises(cfglib.ConfigError, match=f"unknown key '{former}'") as refused:
        cfglib.from_mapping({former: 0.1}, source="")
    message = str(refused.value)
    assert len(message.splitlines()) == 1
    if name is not None:
        assert f"did you mean {name}?" in message


def _train_run(*argv: str):
    from jaxmlp.cli import parser, train

    args = parser.build_parser().parse_args(["train", *argv])
    return train.train_run(args, parser.given_config_values(args))


def test_options_given_override_the_config_file_even_when_they_equal_the_defaults(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text('runs_dir = "elsewhere"\nname = "filed"\nepochs = 3\nbatch_size = 64\n')
    filed = _train_run("--config", str(path))
    assert (filed.runs_dir, filed.name) == ("elsewhere", "filed")
    assert filed.config.epochs == 3 and filed.config.batch_size == 64
    given = _train_run(
        "--config", str(path), "--runs-dir", "runs", "--name", "mine", "--batch-size", "128"
    )
    assert (given.runs_dir, given.name) == ("runs", "mine")
    assert given.run_dir == Path("runs") / "mine"
    assert given.config.epochs == 3 and given.config.batch_size == 128
    assert given.requested == {"epochs": 3, "batch_size": 128}
    assert _train_run().runs_dir == "runs" and _train_run().requested == {}


# --------------------------------------------------------------------------------------------
# The learning-rate schedule spans the steps trained


@pytest.mark.parametrize(("sampling", "steps_per_epoch"), [("poisson", 3), ("shuffle", 4)])
def test_the_schedule_of_a_run_ends_on_its_last_trained_step(sampling, steps_per_epoch):
    """1000 examples in batches of 300: round(1000 / 300) = 3 Poisson-sampled steps per epoch,
    ceil(1000 / 300) = 4 shuffled ones. The cosine schedule of the state a run builds decays over
    exactly the steps fit trains: above its final value at the last step, at it right after."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    import jaxmlp
    from jaxmlp.cli import runs

    config = cfglib.from_mapping(
        {
            "train_limit": 1000,
            "validation": 0,
            "batch_size": 300,
            "epochs": 2,
            "hidden": [8],
            "optimizer": "sgd",
            "learning_rate": 0.1,
            "schedule": "cosine",
            "batch_sampling": sampling,
        },
        source="",
    )
    n_train = runs.train_size(config)
    assert jaxmlp.steps_per_epoch(n_train, 300, sampling) == steps_per_epoch
    state = runs.build_state(config, n_train)
    rng = np.random.default_rng(0)
    images = rng.uniform(size=(n_train, 784)).astype(np.float32)
    labels = rng.integers(0, 10, n_train).astype(np.int32)
    trained, _ = jaxmlp.fit(x_train=images, y_train=labels, state=state, epochs=2, batch_size=300)
    total = int(trained.step)
    assert total == config.epochs * steps_per_epoch
    # The state's own optimizer, stepped with a unit gradient: SGD's update is -lr(step).
    tx, w = state.optimizer, jnp.zeros(())
    opt_state, rates = tx.init(w), []
    for _ in range(total + 1):
        update, opt_state = tx.update(jnp.ones(()), opt_state, w)
        rates.append(-float(jax.device_get(update)))
    assert rates[0] == pytest.approx(0.1)
    assert all(a > b for a, b in zip(rates[:total], rates[1 : total + 1], strict=True))
    assert rates[total - 1] > 0.0 and rates[total] == 0.0


# --------------------------------------------------------------------------------------------
# predict


def test_predict_refuses_an_image_too_large_to_decode(needs_data, tmp_path, capsys):
    code, _, err = run(
        capsys, "train", "--runs-dir", tmp_path, "--name", "p", *TINY, "--epochs", "1", "--quiet"
    )
    assert code == 0, err
    from test_images import _png_header

    huge = _png_header(tmp_path / "huge.png", 30000, 30000)
    code, _, err = run(capsys, "predict", "p", "--runs-dir", tmp_path, huge)
    assert_one_line_error(code, err, "huge.png", "too large to decode safely")
    assert "internal error" not in err and os.path.exists(huge)


# --------------------------------------------------------------------------------------------
# DP-SGD from the command line


def test_dp_training_calibrates_sigma_reports_epsilon_and_keeps_counting_on_resume(
    needs_data, tmp_path, capsys
):
    from jaxmlp import privacy

    dp = ["--dp-clip-norm", "1", "--dp-target-epsilon", "3", "--gradient", "backprop"]
    code, out, err = run(
        capsys, "train", "--runs-dir", tmp_path, "--name", "dp", *TINY, "--epochs", "2", *dp
    )
    assert code == 0, err
    config = cfglib.load(tmp_path / "dp" / "config.json")
    sigma = config.dp_noise_multiplier
    steps = 2 * 10  # 1000 training images, batches of 100
    spent = privacy.epsilon(noise_multiplier=sigma, sampling_rate=0.1, steps=steps, delta=1e-5)
    assert 2.99 < spent <= 3.0  # calibrated for the whole run
    assert "epsilon" in out and f"noise multiplier {sigma:g}" in out
    history = json.loads((tmp_path / "dp" / "history.json").read_text())
    assert history[-1]["epsilon"] == pytest.approx(spent)
    # Resumed for a third epoch: the same sigma, and epsilon counted from the checkpoint's step.
    code, out, err = train(capsys, tmp_path / "dp", "--resume", "--epochs", "3", "--no-plots")
    assert code == 0, err
    history = json.loads((tmp_path / "dp" / "history.json").read_text())
    assert cfglib.load(tmp_path / "dp" / "config.json").dp_noise_multiplier == sigma
    assert history[-1]["epsilon"] == pytest.approx(
        privacy.epsilon(noise_multiplier=sigma, sampling_rate=0.1, steps=30, delta=1e-5)
    )


@pytest.mark.parametrize(
    ("extra", "fragments"),
    [
        (["--dp-clip-norm", "0"], ["dp_clip_norm=0.0"]),
        (["--dp-noise-multiplier", "1"], ["needs dp_clip_norm"]),
        (["--dp-clip-norm", "1", "--dp-noise-multiplier", "-1"], ["dp_noise_multiplier=-1.0"]),
        (["--dp-clip-norm", "1", "--dp-delta", "1.5"], ["dp_delta=1.5", "0 < dp_delta < 1"]),
        (["--dp-target-epsilon", "2"], ["needs dp_clip_norm"]),
        (
            ["--dp-clip-norm", "1", "--dp-target-epsilon", "2", "--dp-noise-multiplier", "1"],
            ["either --dp-noise-multiplier or --dp-target-epsilon"],
        ),
        (
            ["--dp-clip-norm", "1", "--dp-target-epsilon", "0.00001", "--epochs", "50"],
            ["cannot be met"],
        ),
        (["--dp-clip-norm", "1", "--vat-epsilon", "2"], ["cannot be combined with dp_clip_norm"]),
    ],
)
def test_bad_dp_options_are_one_line_errors_before_training(extra, fragments, tmp_path, capsys):
    code, _, err = run(capsys, "train", "--runs-dir", tmp_path, *TINY, *extra)
    assert_one_line_error(code, err, *fragments)
    assert not (tmp_path / "mnist").exists()


# --------------------------------------------------------------------------------------------
# What fit refuses


def test_a_batch_size_fit_refuses_is_one_line_and_leaves_no_run(needs_data, tmp_path, capsys):
    code, _, err = run(capsys, "train", "--runs-dir", tmp_path, *TINY, "--batch-size", "1001")
    assert_one_line_error(code, err, "batch_size=1001", "larger than the 1000 training examples")
    assert not (tmp_path / "mnist").exists()  # the corrected command starts a new run
    code, _, err = run(capsys, "train", "--runs-dir", tmp_path, *TINY, "--epochs", "1", "-q")
    assert code == 0, err
