"""TensorBoard events: what fit's history says, read back from the event files, and the ones
``jaxmlp train`` writes into its run directory."""

import json
import re
import struct
from pathlib import Path

import jax
import numpy as np
import optax
import pytest
from cli_support import small_run, train
from tensorboardX.proto import api_pb2, event_pb2, plugin_hparams_pb2
from tensorboardX.record_writer import masked_crc32c

import jaxmlp
from jaxmlp.loggers import STEP_TAGS, STEPS_FOLDER, TAGS, TensorBoardLogger

N, BATCH, EPOCHS = 96, 32, 3
STEPS = N // BATCH  # optimizer steps per epoch


def read_events(logdir: Path) -> list[event_pb2.Event]:
    """The events of a folder's event files, file by file in name order as TensorBoard reads
    them. Each record: 8-byte length, its masked CRC32C, the Event, the Event's CRC32C."""
    events = []
    for path in sorted(Path(logdir).glob("events.out.tfevents.*")):
        data, offset = path.read_bytes(), 0
        while offset < len(data):
            header, (header_crc,) = (
                data[offset : offset + 8],
                struct.unpack_from("<I", data, offset + 8),
            )
            (length,) = struct.unpack("<Q", header)
            payload = data[offset + 12 : offset + 12 + length]
            (payload_crc,) = struct.unpack_from("<I", data, offset + 12 + length)
            assert header_crc == masked_crc32c(header) and payload_crc == masked_crc32c(payload)
            events.append(event_pb2.Event.FromString(payload))
            offset += 16 + length
    return events


def scalars(logdir: Path) -> dict[str, list[tuple[int, float]]]:
    """tag -> [(step, value), ...] as TensorBoard shows them: a session START at step s (a
    writer's ``purge_step``) hides the steps >= s read before it."""
    series: dict[str, list[tuple[int, float]]] = {}
    for event in read_events(logdir):
        if event.HasField("session_log") and event.session_log.status == event.session_log.START:
            series = {
                tag: [p for p in points if p[0] < event.step] for tag, points in series.items()
            }
        for value in event.summary.value:
            if value.HasField("simple_value"):
                series.setdefault(value.tag, []).append((event.step, value.simple_value))
    return {tag: points for tag, points in series.items() if points}


def hparams_sessions(logdir: Path) -> list[plugin_hparams_pb2.HParamsPluginData]:
    """The hparams plugin's summaries, in order."""
    return [
        plugin_hparams_pb2.HParamsPluginData.FromString(value.metadata.plugin_data.content)
        for event in read_events(logdir)
        for value in event.summary.value
        if value.metadata.plugin_data.plugin_name == "hparams"
    ]


def as_written(history, key) -> list[tuple[int, float]]:
    """The (epoch, value) points of a history key, as float32 like the events store them."""
    return [(r["epoch"], float(np.float32(r[key]))) for r in history]


def _blobs(n=N, features=4, classes=3, seed=0):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, n).astype(np.int32)
    centres = rng.normal(size=(classes, features)) * 3
    return (centres[labels] + rng.normal(size=(n, features))).astype(np.float32), labels


def _fit(logger, *, optimizer=None, validation=False, **kwargs):
    x, y = _blobs()
    return jaxmlp.fit(
        jax.random.key(0),
        (4, 8, 3),
        x,
        y,
        optimizer=optimizer or jaxmlp.optimizer("adam", 1e-2),
        epochs=EPOCHS,
        batch_size=BATCH,
        validation_data=(x[:40], y[:40]) if validation else None,
        on_epoch_end=logger,
        **kwargs,
    )


@pytest.mark.parametrize("validation", [False, True], ids=["no-validation", "validation"])
def test_the_events_are_the_history_fit_returns(tmp_path, validation):
    with TensorBoardLogger(tmp_path) as log:
        _, history = _fit(log, validation=validation)
    written = scalars(tmp_path)
    keys = ["loss", "train_accuracy", "seconds"]
    keys += ["validation_loss", "validation_accuracy"] if validation else []
    assert set(written) == {TAGS[key] for key in keys}  # no learning rate: it is not known
    for key in keys:
        assert written[TAGS[key]] == as_written(history, key)


def _schedule(step):
    return optax.cosine_decay_schedule(0.1, EPOCHS * STEPS)(step)


@pytest.mark.parametrize(
    "optimizer, given",
    [
        (jaxmlp.optimizer("sgd", _schedule), _schedule),
        (optax.inject_hyperparams(optax.sgd)(learning_rate=_schedule), None),
    ],
    ids=["schedule-given", "inject-hyperparams"],
)
def test_learning_rate_is_the_schedule_at_each_epochs_last_step(tmp_path, optimizer, given):
    with TensorBoardLogger(tmp_path, learning_rate=given) as log:
        _fit(log, optimizer=optimizer)
    expected = [(e, float(np.float32(_schedule(e * STEPS - 1)))) for e in range(1, EPOCHS + 1)]
    assert scalars(tmp_path)["learning_rate"] == expected


def test_a_constant_learning_rate_is_written_as_given(tmp_path):
    with TensorBoardLogger(tmp_path, learning_rate=0.05) as log:
        _fit(log, optimizer=jaxmlp.optimizer("sgd", 0.05))
    assert scalars(tmp_path)["learning_rate"] == [(e, float(np.float32(0.05))) for e in (1, 2, 3)]


def test_dp_sgd_writes_the_epsilon_spent(tmp_path):
    options = jaxmlp.ModelOptions(dp_clip_norm=1.0, dp_noise_multiplier=1.1)
    with TensorBoardLogger(tmp_path) as log:
        _, history = _fit(log, options=options)
    epsilon = scalars(tmp_path)["privacy/epsilon"]
    assert epsilon == as_written(history, "epsilon")
    assert epsilon[0][1] < epsilon[-1][1]


def test_hparams_open_a_session_with_the_first_epoch_and_end_it_at_close(tmp_path):
    hparams = {"hidden": [8], "optimizer": "adam", "learning_rate": 0.01, "nesterov": False}
    log = TensorBoardLogger(tmp_path, hparams={**hparams, "momentum": None})
    _fit(log)
    (start,) = hparams_sessions(tmp_path)  # on disk while the run is still open
    log.close()
    log.close()  # twice is fine
    started, ended = hparams_sessions(tmp_path)
    assert started == start
    values = start.session_start_info.hparams
    assert set(values) == set(hparams)  # None values are left out
    assert values["hidden"].string_value == "[8]"
    assert values["optimizer"].string_value == "adam"
    assert values["learning_rate"].number_value == 0.01
    assert values["nesterov"].bool_value is False
    assert ended.session_end_info.status == api_pb2.Status.Value("STATUS_SUCCESS")


def test_a_later_logger_of_the_same_folder_continues_the_run(tmp_path):
    """A crash after logging epoch 3 but before its checkpoint, then a resume from epoch 2: the
    second file's epoch 3 replaces the first one's."""
    with TensorBoardLogger(tmp_path) as log:
        state, history = _fit(log)
    x, y = _blobs()
    with TensorBoardLogger(tmp_path) as log:
        _, resumed = jaxmlp.fit(
            x_train=x,
            y_train=y,
            state=state,
            history=history[:2],
            epochs=2,
            batch_size=BATCH,
            on_epoch_end=log,
        )
    assert len(list(tmp_path.glob("events.out.tfevents.*"))) == 2
    assert scalars(tmp_path)["train/loss"] == as_written(resumed, "loss")
    assert [r["epoch"] for r in resumed] == [1, 2, 3, 4]


def test_a_logger_that_wrote_nothing_leaves_nothing(tmp_path):
    with TensorBoardLogger(tmp_path / "events", hparams={"a": 1}):
        pass
    assert not (tmp_path / "events").exists()


@pytest.mark.parametrize(
    "kwargs, fragment",
    [
        ({"hparams": {"layers": {"w": 1}}}, "hparams['layers'] is a dict"),
        ({"hparams": [("a", 1)]}, "hparams must be a dict"),
        ({"learning_rate": "fast"}, "learning_rate must be a number or a schedule"),
    ],
)
def test_arguments_are_checked_at_the_door(tmp_path, kwargs, fragment):
    with pytest.raises(TypeError, match=re.escape(fragment)):
        TensorBoardLogger(tmp_path, **kwargs)


# --------------------------------------------------------------------------------------------
# jaxmlp train


def test_train_writes_events_and_resume_continues_them(needs_data, tmp_path, capsys):
    run_dir = tmp_path / "tb"
    code, _, err = train(capsys, run_dir, *small_run(16, "--no-plots"), "--epochs", "2")
    assert code == 0, err
    history = json.loads((run_dir / "history.json").read_text())
    written = scalars(run_dir)
    assert written["validation/accuracy"] == as_written(history, "validation_accuracy")
    config = json.loads((run_dir / "config.json").read_text())
    # 1000 examples in batches of 100: 10 steps an epoch, the schedule spans 20.
    schedule = jaxmlp.schedule(config["schedule"], config["learning_rate"], 20)
    assert written["learning_rate"] == [
        (e, float(np.float32(schedule(10 * e - 1)))) for e in (1, 2)
    ]
    (start, _) = hparams_sessions(run_dir)
    assert start.session_start_info.hparams["hidden"].string_value == "[16]"
    assert start.session_start_info.hparams["epochs"].number_value == 2

    code, _, err = train(capsys, run_dir, "--resume", "--epochs", "3", "--no-plots")
    assert code == 0, err
    history = json.loads((run_dir / "history.json").read_text())
    assert scalars(run_dir)["train/loss"] == as_written(history, "loss")
    assert [step for step, _ in scalars(run_dir)["train/loss"]] == [1, 2, 3]


def test_no_events_writes_none(needs_data, tmp_path, capsys):
    run_dir = tmp_path / "quiet"
    code, _, err = train(
        capsys, run_dir, *small_run(16, "--no-plots"), "--epochs", "1", "--no-events"
    )
    assert code == 0, err
    assert (run_dir / "history.json").is_file()
    assert not list(run_dir.rglob("events.out.tfevents.*"))


# --------------------------------------------------------------------------------------------
# Step scalars


def test_step_scalars_are_the_steps_whose_mean_is_the_epoch(tmp_path):
    """Every step logged (96 examples, batches of 32: no padding), so each epoch's three step
    losses and accuracies average to its record."""
    with TensorBoardLogger(tmp_path) as log:
        _, history = _fit(log, on_step=log.on_step, log_every_steps=1)
    steps = scalars(tmp_path / STEPS_FOLDER)
    assert set(steps) == set(STEP_TAGS.values())
    assert [step for step, _ in steps["train/step_loss"]] == list(range(1, EPOCHS * STEPS + 1))
    for record in history:
        epoch = record["epoch"]
        mine = [v for s, v in steps["train/step_loss"] if (s - 1) // STEPS == epoch - 1]
        assert np.mean(mine) == pytest.approx(record["loss"], rel=1e-6)
        hits = [v for s, v in steps["train/step_accuracy"] if (s - 1) // STEPS == epoch - 1]
        assert np.mean(hits) == pytest.approx(record["train_accuracy"], rel=1e-6)
    assert "train/step_loss" not in scalars(tmp_path)  # the epoch run has epoch scalars only


def test_step_scalars_continue_at_the_global_step_and_a_resume_replaces_the_abandoned_ones(
    tmp_path,
):
    saved = {}

    def keep_epoch_2(state, record):
        if record["epoch"] == 2:
            saved["state"] = state

    with TensorBoardLogger(tmp_path) as log:
        _, history = _fit(
            lambda s, r: (keep_epoch_2(s, r), log(s, r))[1], on_step=log.on_step, log_every_steps=2
        )
    assert [s for s, _ in scalars(tmp_path / STEPS_FOLDER)["train/step_loss"]] == [2, 4, 6, 8]
    x, y = _blobs()
    with TensorBoardLogger(tmp_path) as log:
        jaxmlp.fit(
            x_train=x,
            y_train=y,
            state=saved["state"],
            history=history[:2],
            epochs=2,
            batch_size=BATCH,
            on_epoch_end=log,
            on_step=log.on_step,
            log_every_steps=2,
        )
    assert len(list((tmp_path / STEPS_FOLDER).glob("events.out.tfevents.*"))) == 2
    resumed = [s for s, _ in scalars(tmp_path / STEPS_FOLDER)["train/step_loss"]]
    assert resumed == [2, 4, 6, 8, 10, 12]  # 8 once: the second file's hides the first's


def test_step_logs_change_no_number(tmp_path):
    seen = []
    plain_state, plain = _fit(None)
    state, logged = _fit(
        None, on_step=lambda step, record: seen.append((step, record)), log_every_steps=4
    )
    drop = ("seconds", "compile_seconds")
    assert [{k: v for k, v in r.items() if k not in drop} for r in logged] == [
        {k: v for k, v in r.items() if k not in drop} for r in plain
    ]
    assert all(
        np.array_equal(a, b)
        for a, b in zip(
            jax.tree.leaves(state.params), jax.tree.leaves(plain_state.params), strict=True
        )
    )
    # 3 steps an epoch: global steps 4 and 8 fall in epochs 2 and 3.
    assert [(step, record["epoch"]) for step, record in seen] == [(4, 2), (8, 3)]
    assert set(seen[0][1]) == {"epoch", "step_loss", "step_accuracy"}
    with pytest.raises(ValueError, match="log_every_steps=0"):
        _fit(None, on_step=print, log_every_steps=0)
    with pytest.raises(TypeError, match="on_step must be a function"):
        _fit(None, on_step="print")
