"""The ``jaxmlp`` command under bad input and failing storage: every case ends in a clear error
(one line, exit status 2, or 1 for divergence) and leaves what was saved before intact.

Complements test_cli.py (the ordinary runs and the first error cases) and test_validation.py
(the library's bad-input battery). Runs train a tiny 784-16-10 model on 1000 MNIST images.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import resource
import shutil
import signal
import subprocess
from pathlib import Path

import jax
import numpy as np
import pytest
from cli_support import (
    assert_one_line_error,
    history_epochs,
    require_mnist,
    restore_final,
    run,
    small_run,
    train,
)

from jaxmlp import checkpoints, cli

TINY = small_run(16, "--no-plots")
ASSETS = Path(__file__).parent / "assets" / "digits"
SAMPLE = ASSETS / "seven_dark_on_light.png"

pytestmark = pytest.mark.xdist_group("cli_robustness")


def snapshot(directory: Path) -> dict[str, str]:
    """sha256 of every file under ``directory`` by relative path."""
    return {
        str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(directory.rglob("*"))
        if p.is_file()
    }


def assert_same_arrays(a: checkpoints.Restored, b: checkpoints.Restored) -> None:
    leaves_a = jax.tree.leaves(checkpoints.state_arrays(a.state))
    leaves_b = jax.tree.leaves(checkpoints.state_arrays(b.state))
    for u, v in zip(leaves_a, leaves_b, strict=True):
        np.testing.assert_array_equal(np.asarray(u), np.asarray(v))


def _resume_to_epoch_4(run_copy: Path, capsys, *extra: str) -> tuple[int, str, str]:
    """``jaxmlp train --resume`` of the copied 3-epoch base run, to 4 epochs."""
    return train(capsys, run_copy, "--resume", "--epochs", "4", *extra)


@pytest.fixture(scope="module")
def base_run(tmp_path_factory):
    """A finished 3-epoch run with all three checkpoints kept."""
    require_mnist()
    root = tmp_path_factory.mktemp("robust")
    code = cli.main(
        [
            str(a)
            for a in [
                "train",
                "--runs-dir",
                root,
                "--name",
                "base",
                *TINY,
                "--epochs",
                "3",
                "--keep-checkpoints",
                "3",
                "--quiet",
            ]
        ]
    )
    assert code == 0
    run_dir = root / "base"
    assert checkpoints.list_steps(run_dir / "checkpoints") == [1, 2, 3]
    return run_dir


@pytest.fixture
def run_copy(base_run, tmp_path):
    """A private copy of the base run, ``tmp_path/runs/base``."""
    destination = tmp_path / "runs" / "base"
    shutil.copytree(base_run, destination)
    return destination


# --------------------------------------------------------------------------------------------
# Config files


@pytest.mark.parametrize(
    ("filename", "text", "fragments"),
    [
        ("run.toml", "[model]\nhidden = [64]\n", ["unknown key 'model'"]),
        ("run.toml", 'hidden = [64, "wide"]\n', ["hidden[1]", "integer"]),
        ("run.toml", "batch_size = 12.5\n", ["batch_size", "integer"]),
        ("run.toml", "seed = true\n", ["seed", "integer"]),
        ("run.toml", 'dropout_rate = "0.2"\n', ["dropout_rate", "number"]),
        ("run.toml", "learning_rate = nan\n", ["learning_rate", "finite"]),
        ("run.toml", "epochs = -1\n", ["epochs=-1", ">= 1"]),
        ("run.toml", 'optimizer = "adamw2"\n', ["optimizer='adamw2'"]),
        ("run.json", '{"hidden": [64], "learning_rate": 1e-3, "epohcs": 3}', ["'epohcs'"]),
        ("run.json", '[["hidden", [64]]]', ["table of keys"]),
        ("run.json", '{"hidden": [64],', ["invalid JSON"]),
        ("run.json", '{"activation": null}', ["activation must not be null"]),
        ("run.yaml", "hidden: [64]\n", [".toml or .json"]),
        ("run.toml", b"hidden = [64]\n\xff\xfe".decode("latin-1"), ["cannot read config"]),
    ],
)
def test_bad_config_file_is_one_line_and_creates_nothing(
    filename, text, fragments, capsys, tmp_path
):
    path = tmp_path / filename
    if "cannot read config" in fragments:
        path.write_bytes(b"hidden = [64]\n\xff\xfe")
    else:
        path.write_text(text)
    code, _, err = run(capsys, "train", "--config", path, "--runs-dir", tmp_path / "runs")
    assert_one_line_error(code, err, *fragments)
    assert not (tmp_path / "runs").exists()


def test_run_directory_of_another_config_is_left_untouched(run_copy, capsys):
    before = snapshot(run_copy)
    runs = run_copy.parent
    for extra in (
        ["--learning-rate", "0.01"],
        ["--hidden", "32"],
        ["--resume", "--hidden", "32"],
        ["--resume", "--seed", "7"],
    ):
        code, _, err = run(
            capsys, "train", "--runs-dir", runs, "--name", "base", *TINY, "--epochs", "3", *extra
        )
        assert_one_line_error(code, err, "base")
    assert snapshot(run_copy) == before


def test_damaged_config_json_of_a_run_is_a_clear_error(run_copy, capsys):
    (run_copy / "config.json").write_text('{"hidden": [16], "epochs": ')
    code, _, err = run(capsys, "train", "--runs-dir", run_copy.parent, "--name", "base", "--resume")
    assert_one_line_error(code, err, "config.json", "invalid JSON")
    code, _, err = run(capsys, "evaluate", run_copy)
    assert_one_line_error(code, err, "config.json")


# --------------------------------------------------------------------------------------------
# Damaged checkpoints


def _flip_bytes(step_dir: Path) -> None:
    """Same size, different bytes: only the checksum can tell."""
    largest = max((p for p in step_dir.rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)
    raw = bytearray(largest.read_bytes())
    for i in range(len(raw) // 2, len(raw) // 2 + 64):
        raw[i] ^= 0xFF
    largest.write_bytes(bytes(raw))


def _empty_files(step_dir: Path) -> None:
    for p in step_dir.rglob("*"):
        if p.is_file():
            p.write_bytes(b"")


def _delete_metadata(step_dir: Path) -> None:
    (step_dir / checkpoints.META_FILE).unlink()


def _garbage_meta(step_dir: Path) -> None:
    (step_dir / checkpoints.META_FILE).write_text("{not json")


def _delete_arrays(step_dir: Path) -> None:
    (step_dir / checkpoints.ARRAYS_FILE).unlink()


CORRUPTIONS = {
    "flipped-bytes": _flip_bytes,
    "emptied-files": _empty_files,
    "deleted-metadata": _delete_metadata,
    "garbage-meta-json": _garbage_meta,
    "deleted-array-data": _delete_arrays,
}


@pytest.mark.parametrize("corruption", sorted(CORRUPTIONS))
def test_damaged_latest_checkpoint_falls_back_to_the_previous(corruption, run_copy, capsys):
    CORRUPTIONS[corruption](run_copy / "checkpoints" / "3")
    code, out, err = run(capsys, "evaluate", run_copy, "--no-plots", "--json")
    assert code == 0, err
    assert "checkpoint of epoch 3 is unreadable" in err and "falling back" in err
    assert json.loads(out)["epoch"] == 2


def test_resume_falls_back_past_two_damaged_checkpoints_and_recomputes_them(
    run_copy, base_run, capsys
):
    _flip_bytes(run_copy / "checkpoints" / "3")
    _empty_files(run_copy / "checkpoints" / "2")
    (run_copy / "history.json").write_text("[{")  # a damaged history is rebuilt as well
    code, out, err = run(
        capsys, "train", "--runs-dir", run_copy.parent, "--name", "base", "--resume", "--no-plots"
    )
    assert code == 0, err
    assert "epoch 3 is unreadable" in err and "epoch 2 is unreadable" in err
    assert "resuming" in out and "epoch 1" in out
    assert history_epochs(run_copy) == [1, 2, 3]
    assert checkpoints.list_steps(run_copy / "checkpoints") == [1, 2, 3]
    assert len(list((run_copy / "checkpoints-unreadable").iterdir())) == 2
    # Epochs 2 and 3 trained again from epoch 1's checkpoint: the very same parameters.
    assert_same_arrays(restore_final(run_copy), restore_final(base_run))
    losses = [
        [r["loss"] for r in json.loads((d / "history.json").read_text())]
        for d in (run_copy, base_run)
    ]
    assert losses[0] == losses[1]


def test_no_readable_checkpoint_is_a_clear_error(run_copy, capsys):
    for epoch in (1, 2, 3):
        _empty_files(run_copy / "checkpoints" / str(epoch))
    code, _, err = run(capsys, "evaluate", run_copy, "--no-plots")
    line = err.strip().splitlines()[-1]
    assert code == 2 and line.startswith("jaxmlp: error: no readable checkpoint"), err
    assert err.count("falling back") == 3


@pytest.mark.parametrize(
    ("change", "fragments"),
    [
        ({"hidden": [32]}, ["784-16-10", "784-32-10"]),
        ({"hidden": [16, 8]}, ["784-16-10", "784-16-8-10"]),
        ({"optimizer": "sgd"}, ["optimizer"]),
    ],
)
def test_resume_from_a_checkpoint_of_another_architecture_names_both(
    change, fragments, run_copy, capsys
):
    saved = json.loads((run_copy / "config.json").read_text())
    (run_copy / "config.json").write_text(json.dumps({**saved, **change}))
    before = snapshot(run_copy / "checkpoints")
    code, _, err = _resume_to_epoch_4(run_copy, capsys)
    assert_one_line_error(code, err, *fragments)
    assert snapshot(run_copy / "checkpoints") == before


# --------------------------------------------------------------------------------------------
# Divergence


def test_divergence_after_good_epochs_keeps_their_checkpoints(needs_data, tmp_path, capsys):
    # An exponentially *growing* learning rate on a linear network: the first epochs train, a
    # later step overflows.
    argv = [
        "train",
        "--runs-dir",
        tmp_path,
        "--name",
        "blowup",
        *TINY,
        "--hidden",
        "16",
        "16",
        "--activation",
        "identity",
        "--optimizer",
        "sgd",
        "--learning-rate",
        "0.05",
        "--schedule",
        "exponential",
        "--decay-rate",
        "1e4",
        "--epochs",
        "6",
    ]
    code, _, err = run(capsys, *argv)
    assert code == 1, err
    run_dir = tmp_path / "blowup"
    saved = checkpoints.list_steps(run_dir / "checkpoints")
    assert saved and saved == list(range(1, len(saved) + 1))
    bad_epoch = saved[-1] + 1
    assert f"non-finite at epoch {bad_epoch}, step" in err
    assert f"last good checkpoint (epoch {saved[-1]}) is intact" in err
    assert history_epochs(run_dir) == saved
    assert not (run_dir / "metrics.json").exists()
    good = restore_final(run_dir)
    assert good.epoch == saved[-1] and good.skipped == ()
    assert all(np.isfinite(np.asarray(leaf)).all() for leaf in jax.tree.leaves(good.state.params))
    # Resuming diverges at the same step again and overwrites nothing.
    before = snapshot(run_dir / "checkpoints")
    code, _, err = run(capsys, "train", "--runs-dir", tmp_path, "--name", "blowup", "--resume")
    assert code == 1 and f"non-finite at epoch {bad_epoch}, step" in err
    assert snapshot(run_dir / "checkpoints") == before
    assert history_epochs(run_dir) == saved


# --------------------------------------------------------------------------------------------
# Read-only run directory, full disk, failing writes


@contextlib.contextmanager
def _read_only(directory: Path):
    """``directory`` read-only: a read-only bind mount for root (who ignores permission bits),
    else the permission bits. Skips when neither is possible."""
    if os.geteuid() != 0:
        modes = {p: p.stat().st_mode for p in [directory, *directory.rglob("*")]}
        for p in modes:
            p.chmod(modes[p] & ~0o222)
        try:
            yield
        finally:
            for p, mode in modes.items():
                p.chmod(mode)
        return
    mounted = subprocess.run(
        ["mount", "--bind", str(directory), str(directory)], capture_output=True, text=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot bind-mount as read-only here: {mounted.stderr.strip()}")
    try:
        subprocess.run(
            ["mount", "-o", "remount,ro,bind", str(directory)], check=True, capture_output=True
        )
        yield
    finally:
        subprocess.run(["umount", str(directory)], check=True)


def test_read_only_run_can_be_used_but_not_trained(run_copy, capsys):
    before = snapshot(run_copy)
    with _read_only(run_copy):
        code, out, err = run(capsys, "evaluate", run_copy, "--no-plots", "--json")
        assert code == 0, err
        assert json.loads(out)["epoch"] == 3
        code, out, err = run(capsys, "predict", run_copy, SAMPLE)
        assert code == 0, err
        assert "predicted" in out
        code, _, err = _resume_to_epoch_4(run_copy, capsys)
        assert_one_line_error(code, err, "cannot write", "config.json")
    assert snapshot(run_copy) == before


def test_read_only_run_can_be_evaluated_with_plots(run_copy, capsys):
    with _read_only(run_copy):
        code, out, err = run(capsys, "evaluate", run_copy, "--quiet")
    assert code == 0, err
    assert "test accuracy" in out


@contextlib.contextmanager
def _tiny_filesystem(mount_point: Path, size: str):
    mount_point.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mount_point)],
        capture_output=True,
        text=True,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield
    finally:
        subprocess.run(["umount", str(mount_point)], check=True)


def _train_on_full_disk(mount_point: Path, capsys):
    """A run whose disk fills up after about two checkpoints; returns (code, err, run_dir)."""
    run_dir = mount_point / "full"
    code, _, err = train(capsys, run_dir, *TINY, "--epochs", "6", "--keep-checkpoints", "6")
    return code, err, run_dir


def test_full_disk_stops_with_a_clear_error_and_keeps_the_saved_epochs(
    needs_data, tmp_path, capsys
):
    mount_point = tmp_path / "disk"
    with _tiny_filesystem(mount_point, "520k"):
        code, err, run_dir = _train_on_full_disk(mount_point, capsys)
        assert code == 2, err
        last = err.strip().splitlines()[-1]
        # The write that meets the full disk (the checkpoint's arrays or meta.json, or
        # history.json) ends the run with one clear line, the operating system's reason in it.
        assert last.startswith("jaxmlp: error: cannot "), err
        assert "No space left on device" in last, err
        assert "Traceback" not in err, err
        assert str(run_dir) in last, err
        saved = checkpoints.list_steps(run_dir / "checkpoints")
        assert len(saved) >= 1 and saved == list(range(1, len(saved) + 1)), saved
        assert history_epochs(run_dir) in (saved, saved[:-1])
        assert restore_final(run_dir).epoch == saved[-1]
        # With space again, --resume completes the run.
        subprocess.run(["mount", "-o", "remount,size=4m", str(mount_point)], check=True)
        code, out, err = run(
            capsys, "train", "--runs-dir", mount_point, "--name", "full", "--resume"
        )
        assert code == 0, err
        assert history_epochs(run_dir) == [1, 2, 3, 4, 5, 6]
        assert restore_final(run_dir).epoch == 6


def test_failing_write_of_the_first_checkpoint_leaves_no_checkpoint(needs_data, tmp_path, capsys):
    # Files may not grow beyond 20 kB (the array file of a checkpoint is ~150 kB): the write
    # fails with EFBIG instead of the process being killed by SIGXFSZ.
    previous_handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (20_000, hard))
    try:
        code, _, err = run(
            capsys, "train", "--runs-dir", tmp_path, "--name", "efbig", *TINY, "--epochs", "2"
        )
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, previous_handler)
    assert code == 2, err
    assert (
        err.strip()
        .splitlines()[-1]
        .startswith("jaxmlp: error: cannot save the checkpoint of epoch 1")
    ), err
    run_dir = tmp_path / "efbig"
    assert checkpoints.list_steps(run_dir / "checkpoints") == []
    assert (run_dir / "history.json").exists() and history_epochs(run_dir) == []
    # The same command then trains the run from the start.
    code, _, err = run(
        capsys, "train", "--runs-dir", tmp_path, "--name", "efbig", *TINY, "--epochs", "2"
    )
    assert code == 0, err
    assert checkpoints.list_steps(run_dir / "checkpoints") == [1, 2]
    assert history_epochs(run_dir) == [1, 2]


# --------------------------------------------------------------------------------------------
# predict with odd images


def _write_images(folder: Path) -> dict[str, Path]:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    seven = np.full((27, 27), 255, np.uint8)
    seven[5, 6:21] = 0
    seven[5:23, 18:21] = 0
    paths = {
        "27x27": folder / "seven_27x27.png",
        "rgb": folder / "seven_rgb.png",
        "rgba": folder / "seven_rgba.png",
    }
    Image.fromarray(seven).save(paths["27x27"])
    rgb = np.stack([np.kron(seven, np.ones((3, 3), np.uint8))] * 3, axis=-1)
    rgb[..., 0] = np.maximum(rgb[..., 0], 90)  # a reddish pen on white paper
    Image.fromarray(rgb, "RGB").save(paths["rgb"])
    alpha = np.where(seven < 128, 255, 0).astype(np.uint8)
    Image.fromarray(np.stack([np.zeros_like(seven)] * 3 + [alpha], -1), "RGBA").save(paths["rgba"])
    return paths


def test_predict_accepts_any_size_and_colour_images(run_copy, tmp_path, capsys):
    paths = _write_images(tmp_path / "images")
    code, out, err = run(capsys, "predict", run_copy, *paths.values(), "--json")
    assert code == 0, err
    predictions = json.loads(out)["predictions"]
    assert [p["image"] for p in predictions] == [str(p) for p in paths.values()]
    for p in predictions:
        assert 0 <= p["predicted"] <= 9
        assert all(np.isfinite(t["probability"]) for t in p["top"])


@pytest.mark.parametrize("kind", ["empty-file", "truncated-png", "directory", "tiny-1x1"])
def test_predict_refuses_unreadable_images(kind, run_copy, tmp_path, capsys):
    from PIL import Image

    path = tmp_path / f"{kind}.png"
    if kind == "empty-file":
        path.write_bytes(b"")
    elif kind == "truncated-png":
        path.write_bytes(SAMPLE.read_bytes()[:100])
    elif kind == "directory":
        path.mkdir()
    else:
        Image.new("L", (1, 1), 0).save(path)
    code, _, err = run(capsys, "predict", run_copy, path)
    assert_one_line_error(code, err, path.name)


def test_predict_refuses_an_image_with_nan_pixels(run_copy, tmp_path, capsys):
    from PIL import Image

    pixels = np.zeros((28, 28), np.float32)
    pixels[5:22, 12:16] = 200.0
    pixels[10:12, 12:16] = np.nan
    path = tmp_path / "nan.tiff"
    Image.fromarray(pixels, "F").save(path)
    code, _, err = run(capsys, "predict", run_copy, path)
    assert_one_line_error(code, err, "nan.tiff", "NaN")


# --------------------------------------------------------------------------------------------
# A checkpoint caught half-deleted


def _half_delete(step_dir: Path) -> None:
    """A step deleted in place part-way (what a kill mid-deletion left in format 1, which did
    not rename a step out of sight first): its metadata already gone, its arrays not yet."""
    (step_dir / checkpoints.META_FILE).unlink()


def test_half_deleted_checkpoint_is_removed_by_the_next_save(run_copy, capsys):
    _half_delete(run_copy / "checkpoints" / "1")
    code, _, err = _resume_to_epoch_4(run_copy, capsys, "--keep-checkpoints", "3")
    assert code == 0, err
    assert "unreadable" not in err  # resumed from epoch 3, never looked at epoch 1
    assert checkpoints.list_steps(run_copy / "checkpoints") == [2, 3, 4]


def test_half_deleted_checkpoint_is_not_listed(run_copy):
    _half_delete(run_copy / "checkpoints" / "1")
    assert checkpoints.list_steps(run_copy / "checkpoints") == [2, 3]
