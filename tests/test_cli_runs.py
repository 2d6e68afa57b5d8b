"""``jaxmlp train`` as the one command of the main job: a run directory held by one process at a
time, a missing dataset fetched by itself, older config spellings still understood, and user
images too large to decode refused in one line."""

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
from cli_support import assert_one_line_error, require_mnist, run, small_run

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
    first = subprocess.Popen(_jaxmlp(*common, "--epochs", "500"), stderr=subprocess.PIPE)
    try:
        _wait_for(lambda: checkpoints.list_steps(tmp_path / "shared" / "checkpoints"), "epoch 1")
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
    code, _, err = run(
        capsys,
        "train",
        "--runs-dir",
        tmp_path,
        "--name",
        "done",
        *TINY,
        "--epochs",
        "2",
        "--resume",
        "--quiet",
    )
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


def test_option_names_are_the_library_s_and_no_other_spelling_is_taken():
    config = cfglib.from_mapping({"dropout_rate": 0.1, "b1": 0.8}, source="")
    assert config.model.dropout_rate == 0.1 and config.optimization.b1 == 0.8
    for former in ("dropout", "input_dropout", "beta1", "beta2", "initial_accumulator"):
        with pytest.raises(cfglib.ConfigError, match=f"unknown key '{former}'"):
            cfglib.from_mapping({former: 0.1}, source="")
    # Every rule lives in the option classes: the run config reports their messages.
    with pytest.raises(cfglib.ConfigError, match=r"dropout_rate=1.5 is outside \[0, 1\)"):
        cfglib.from_mapping({"dropout_rate": 1.5}, source="")
    with pytest.raises(cfglib.ConfigError, match="optimizer 'adam' does not take momentum"):
        cfglib.from_mapping({"momentum": 0.9}, source="")


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
    code, out, err = run(
        capsys,
        "train",
        "--runs-dir",
        tmp_path,
        "--name",
        "dp",
        "--resume",
        "--epochs",
        "3",
        "--no-plots",
    )
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


@pytest.mark.parametrize(("batch_sampling", "steps"), [("poisson", 107), ("shuffle", 108)])
def test_the_schedule_of_a_run_ends_on_its_last_step(batch_sampling, steps):
    # 55,000 examples at batch 512: 108 shuffled steps an epoch, but 107 Poisson-sampled ones.
    # The cosine schedule of the run must reach zero exactly after the last step trained.
    import jax
    import jax.numpy as jnp

    from jaxmlp.cli import runs

    config = cfglib.from_mapping(
        {
            "hidden": [],
            "epochs": 2,
            "batch_size": 512,
            "batch_sampling": batch_sampling,
            "optimizer": "sgd",
            "learning_rate": 0.1,
            "schedule": "cosine",
            "dropout_rate": 0.0,
        },
        source="",
    )
    state = runs.build_state(config, 55_000)
    grads = jax.tree.map(jnp.ones_like, state.params)
    opt_state, rates = state.opt_state, []
    for _ in range(2 * steps + 1):
        updates, opt_state = state.optimizer.update(grads, opt_state, state.params)
        rates.append(-float(updates[0]["b"][0]))
    assert rates[2 * steps - 1] > 0.0  # the last step trained still learns
    assert rates[2 * steps] == 0.0  # and the schedule ends there


def test_an_explicit_runs_dir_wins_over_the_config_file_s(
    needs_data, tmp_path, capsys, monkeypatch
):
    # Even when it is spelled as the default: the command line is parsed once, and a flag that
    # was given is known to be given.
    monkeypatch.chdir(tmp_path)
    config_file = tmp_path / "run.toml"
    config_file.write_text('runs_dir = "from-file"\n')
    code, _, err = run(
        capsys, "train", "--config", config_file, "--runs-dir", "runs", "--name", "r", *TINY,
        "--epochs", "1", "--quiet",
    )  # fmt: skip
    assert code == 0, err
    assert (tmp_path / "runs" / "r" / "config.json").is_file()
    assert not (tmp_path / "from-file").exists()
    code, _, err = run(
        capsys, "train", "--config", config_file, "--name", "r", *TINY, "--epochs", "1", "--quiet"
    )
    assert code == 0, err
    assert (tmp_path / "from-file" / "r" / "config.json").is_file()
