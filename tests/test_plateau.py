"""``schedule="plateau"``: optax.contrib.reduce_on_plateau over whole epochs of training loss."""

from __future__ import annotations

import jax
import numpy as np
import pytest
from cli_support import assert_one_line_error, run
from test_loggers import scalars

import jaxmlp
from jaxmlp.loggers import TensorBoardLogger
from jaxmlp.optimizers import plateau_scale

RNG = np.random.default_rng(0)
# Labels that are noise, and a large SGD step: the training loss goes up and down.
X = RNG.normal(size=(200, 6)).astype(np.float32)
Y = RNG.integers(0, 3, 200).astype(np.int32)
STEPS = 4  # 200 examples in batches of 50: no padded batch, so the epoch's loss is the mean
RTOL = 1e-4  # optax's default


def _settings(**kwargs):
    return jaxmlp.OptimizerSettings(optimizer="sgd", learning_rate=3.0, **kwargs)


def _fit(optimizer, on_epoch_end=None, epochs=12):
    return jaxmlp.fit(
        jax.random.key(0),
        (6, 16, 3),
        X,
        Y,
        optimizer=optimizer,
        epochs=epochs,
        batch_size=50,
        on_epoch_end=on_epoch_end,
    )


def expected_scales(losses, *, patience, factor):
    """The scale after each epoch by reduce_on_plateau's rule: an epoch improves when its mean
    loss L < (1 - rtol) * L_best; ``patience`` epochs in a row without that multiply the scale
    by ``factor`` and start the count again."""
    best, count, scale, scales = np.inf, 0, 1.0, []
    for loss in losses:
        if loss < (1 - RTOL) * best:
            best, count = loss, 0
        else:
            count += 1
        if count == patience:
            scale, count = scale * factor, 0
        scales.append(scale)
    return scales


def test_the_learning_rate_falls_by_the_factor_after_patience_epochs_of_no_improvement(tmp_path):
    settings = _settings(schedule="plateau", plateau_patience=1, plateau_factor=0.5)
    seen = []
    with TensorBoardLogger(tmp_path, learning_rate=3.0) as log:

        def on_epoch_end(state, record):
            seen.append(plateau_scale(state.opt_state))
            log(state, record)

        _, history = _fit(settings.build(1000, steps_per_epoch=STEPS), on_epoch_end)
    losses = [r["loss"] for r in history]
    want = expected_scales(losses, patience=1, factor=0.5)
    assert min(want) < 0.5  # at least two reductions, else this test would prove little
    assert seen == want
    # The logged learning rate is the schedule's times the scale.
    assert scalars(tmp_path)["learning_rate"] == [
        (r["epoch"], float(np.float32(3.0 * s))) for r, s in zip(history, want, strict=True)
    ]


def test_a_plateau_that_never_comes_changes_no_number():
    constant = _settings().build(1000)
    patient = _settings(schedule="plateau", plateau_patience=100).build(1000, steps_per_epoch=4)
    state_a, plain = _fit(constant, epochs=4)
    state_b, plateau = _fit(patient, epochs=4)
    drop = ("seconds", "compile_seconds")
    assert [{k: v for k, v in r.items() if k not in drop} for r in plain] == [
        {k: v for k, v in r.items() if k not in drop} for r in plateau
    ]
    assert plateau_scale(state_b.opt_state) == 1.0 and plateau_scale(state_a.opt_state) is None


@pytest.mark.parametrize(
    ("call", "error", "fragment"),
    [
        (lambda: _settings(schedule="plateau").build(100), TypeError, "steps_per_epoch"),
        (lambda: _settings(plateau_factor=1.0), ValueError, "plateau_factor=1.0"),
        (lambda: _settings(plateau_patience=0), ValueError, "plateau_patience=0"),
    ],
)
def test_bad_plateau_settings_are_refused(call, error, fragment):
    with pytest.raises(error, match=fragment):
        call()


def test_dp_sgd_with_noise_refuses_a_plateau():
    optimizer = _settings(schedule="plateau").build(100, steps_per_epoch=STEPS)
    with pytest.raises(ValueError, match="reduce_on_plateau"):
        jaxmlp.fit(
            jax.random.key(0),
            (6, 16, 3),
            X,
            Y,
            optimizer=optimizer,
            epochs=1,
            batch_size=50,
            dp_clip_norm=1.0,
            dp_noise_multiplier=1.0,
        )


@pytest.mark.parametrize(
    ("argv", "fragments"),
    [
        (
            ["--schedule", "plateau", "--dp-clip-norm", "1", "--dp-noise-multiplier", "1"],
            ["schedule='plateau'", "DP-SGD"],
        ),
        (["--plateau-factor", "1.5"], ["plateau_factor=1.5"]),
        (["--plateau-patience", "0"], ["plateau_patience=0"]),
    ],
)
def test_bad_plateau_options_are_one_line(argv, fragments, capsys, tmp_path):
    code, _, err = run(capsys, "train", "--runs-dir", tmp_path / "runs", *argv)
    assert_one_line_error(code, err, *fragments)
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())
