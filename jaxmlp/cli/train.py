"""``jaxmlp train``: a run directory around [`jaxmlp.fit`][], the one training loop.

What the command adds to ``fit``: the configuration (defaults < ``--config`` file < options),
the run directory and its lock, fetching a missing dataset, a checkpoint, ``history.json`` and
TensorBoard events after every epoch (through ``fit``'s epoch callback; step scalars through its
step callback), resuming from the last good checkpoint, the table and progress bar, Ctrl-C, and
at the end the test scores of the best epoch (by ``--monitor``; its checkpoint is kept out of
the rotation), the plots and ``metrics.json``. Early stopping is ``fit``'s own, counted on from
the saved history when a run resumes.
The arguments of the training itself (the batch size against the data, the device mesh) are
checked by ``fit``.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import re
import shutil
from pathlib import Path
from typing import Any, cast

from jaxmlp.cli import config as cfglib
from jaxmlp.cli import runs
from jaxmlp.cli.config import RunConfig
from jaxmlp.cli.evaluate import score_test_set
from jaxmlp.cli.output import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    PROG,
    CliError,
    Output,
    StopRequest,
    epoch_header,
    epoch_row,
    progress_bar,
)
from jaxmlp.cli.parser import DEFAULT_RUNS_DIR

RUN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
"""What a run (or sweep) name may be: letters, digits, '.', '_' and '-', not starting with a
punctuation mark."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class TrainRun:
    """One ``jaxmlp train``: what it trains and where.

    ``requested`` holds the keys the ``--config`` file and the options gave (a resumed run
    takes over only those); the run directory is ``runs_dir / name``.
    """

    config: RunConfig
    requested: dict[str, Any]
    name: str
    runs_dir: str
    argv: list[str] | None = None
    """The command line, recorded in the run directory's provenance.json."""

    @property
    def run_dir(self) -> Path:
        return Path(self.runs_dir) / self.name


def train_run(args: argparse.Namespace, given: dict[str, Any]) -> TrainRun:
    """The run from defaults < ``--config`` file < the ``given`` options (see
    [`jaxmlp.cli.parser.given_config_values`][])."""
    file_values: dict[str, Any] = {}
    if args.config:
        file_values = {cfglib.normalize_key(k): v for k, v in cfglib.read_file(args.config).items()}
    # A file may name its run and where it goes; an option given on the command line wins.
    file_name, file_runs_dir = file_values.pop("name", None), file_values.pop("runs_dir", None)
    name = args.name or file_name
    runs_dir = str(getattr(args, "runs_dir", file_runs_dir or DEFAULT_RUNS_DIR))
    base = cfglib.from_mapping(file_values, source=args.config) if file_values else RunConfig()
    config = cfglib.from_mapping(given, base=base, source="")
    requested = {**file_values, **given}
    name = name or config.dataset
    if not isinstance(name, str) or not RUN_NAME.match(name):
        raise CliError(f"--name {name!r} is invalid; use letters, digits, '.', '_' and '-'")
    watching = [k for k in ("monitor", "min_delta") if k in requested]
    if watching and config.validation == 0:
        raise CliError(
            f"--{watching[0].replace('_', '-')} chooses the best epoch by validation data, but "
            "--validation 0 holds none out; hold some out (e.g. --validation 5000) or drop it"
        )
    if config.log_every_steps is not None and getattr(args, "no_events", False):
        raise CliError(
            "--log-every-steps writes TensorBoard step scalars, which --no-events turns off; "
            "drop one of them"
        )
    if config.dp_target_epsilon is not None and not args.resume:
        if "dp_noise_multiplier" in requested:
            raise CliError(
                "give either --dp-noise-multiplier or --dp-target-epsilon (which calibrates the "
                "noise multiplier), not both"
            )
        config = calibrated(config)
    return TrainRun(
        config=config,
        requested=requested,
        name=name,
        runs_dir=runs_dir,
        argv=getattr(args, "argv", None),
    )


def calibrated(config: RunConfig) -> RunConfig:
    """The config with the noise multiplier whose whole run spends ``dp_target_epsilon`` at
    ``dp_delta`` (sampling rate batch_size / n, all epochs' steps)."""
    from jaxmlp import privacy

    n_train = runs.train_size(config)
    sigma = privacy.noise_multiplier_for_epsilon(
        target_epsilon=cast(float, config.dp_target_epsilon),  # called only with a target
        sampling_rate=config.batch_size / n_train,
        steps=config.epochs * runs.steps_per_epoch(config, n_train),
        delta=config.dp_delta,
        accountant=config.dp_accountant,
    )
    return dataclasses.replace(
        config, model=dataclasses.replace(config.model, dp_noise_multiplier=round(sigma, 6))
    )


def cmd_train(args: argparse.Namespace, given: dict[str, Any], out: Output) -> int:
    """``given``: the config keys given as options (they override the ``--config`` file)."""
    run = train_run(args, given)
    with runs.locked(run.run_dir):
        config = runs.prepare_run_dir(
            run.run_dir,
            run.config,
            run.requested,
            out,
            resume=args.resume,
            overwrite=args.overwrite,
        )
        return _train(args, dataclasses.replace(run, config=config), out)


def _train(args: argparse.Namespace, run: TrainRun, out: Output) -> int:
    config = run.config
    # Everything that can be checked without data is checked before loading it.
    state = runs.build_state(config, runs.train_size(config))
    mesh = None
    if args.data_parallel:
        import jax

        from jaxmlp import sharding

        mesh = sharding.data_parallel_mesh(jax.local_devices())
    data = runs.load_training_data(config, out, download=not args.no_download)
    fresh = not run.run_dir.exists()
    state, history = _start_run_directory(run, state, out)
    _print_header(run, data, mesh, history, out)
    if history and _stopped_early(config, history):
        out.line(_stop_line(config, history, "the run stopped"))
    elif len(history) < config.epochs:
        try:
            state, history, code = _fit(
                run, state, history, data, mesh, out, events=not args.no_events
            )
        except (ValueError, TypeError):
            # fit refused its arguments before training anything (the batch size against the
            # data, the mesh): a new run leaves no directory behind, so that the corrected
            # command starts it afresh instead of meeting a run of another config.
            if fresh and not history:
                shutil.rmtree(run.run_dir, ignore_errors=True)
            raise
        if code != EXIT_OK:
            return code
    if not history:
        raise CliError(f"{run.run_dir} has no completed epoch")
    return _finish(args, run, state, history, data, out)


def _start_run_directory(run: TrainRun, state, out: Output) -> tuple[Any, list[dict[str, Any]]]:
    """Create the run directory, write its config.json, and restore its latest good checkpoint
    if it has one: ``(state, history)`` to continue from (``state`` itself for a new run)."""
    run_dir = run.run_dir
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise CliError(f"cannot create {run_dir}: {e.strerror or e}") from e
    runs.write_json(run_dir / runs.CONFIG_FILE, run.config.to_dict())
    runs.record_provenance(run_dir, run.argv)
    history: list[dict[str, Any]] = []
    restored = runs.restore_run(run_dir, run.config, out, target=state, quarantine=True)
    if restored is not None:
        state = restored.state
        history = [r for r in restored.meta.get("history", []) if r["epoch"] <= restored.epoch]
        out.line(f"resuming {run_dir} from the checkpoint of epoch {restored.epoch}")
    # history.json always matches the checkpoint it continues from: no gap, no repeat.
    runs.write_json(run_dir / runs.HISTORY_FILE, history)
    return state, history


def _print_header(run: TrainRun, data, mesh, history, out: Output) -> None:
    """The lines before the table (model, data, DP-SGD, devices), then the rows so far."""
    import jaxmlp

    config = run.config
    ds, (_, y_train), validation, test = data
    if mesh is not None:
        from jaxmlp import sharding

        out.line(sharding.describe(mesh))
    n_val = len(validation[1]) if validation else 0
    out.line(
        f"{PROG} train: {'-'.join(map(str, config.layer_sizes))} {config.activation} MLP "
        f"({jaxmlp.parameter_count(config.layer_sizes):,} parameters), {config.optimizer} "
        f"lr {config.learning_rate:g} {config.schedule}, batch {config.batch_size}, "
        f"{config.epochs} epochs"
    )
    out.line(
        f"data: {ds.name} {len(y_train):,} train / {n_val:,} validation / {len(test[1]):,} test "
        f"({config.normalize}); run directory: {run.run_dir}"
    )
    if config.model.clips_gradients:
        calibration = (
            f" (calibrated for epsilon {config.dp_target_epsilon:g})"
            if config.dp_target_epsilon is not None
            else ""
        )
        out.line(
            f"DP-SGD: clip {config.dp_clip_norm:g}, noise multiplier "
            f"{config.dp_noise_multiplier:g}, {config.batch_sampling} batches; epsilon at delta "
            f"{config.dp_delta:g} by {config.dp_accountant}{calibration}"
        )
    if len(history) < config.epochs and not (history and _stopped_early(config, history)):
        out.line(epoch_header(config.model.is_private))
    for record in history:
        out.line(epoch_row(record))


def _stopped_early(config: RunConfig, history) -> bool:
    """Whether the run's early stopping ends it after the last record of ``history``, before
    its last epoch."""
    import jaxmlp

    if config.early_stopping_patience is None or history[-1]["epoch"] >= config.epochs:
        return False
    return jaxmlp.should_stop(
        history,
        patience=config.early_stopping_patience,
        monitor=config.monitor,
        min_delta=config.min_delta,
    )


def _stop_line(config: RunConfig, history, what: str) -> str:
    """``early stopping: ...`` the line under the table of a run that early stopping ended."""
    best = runs.best_epoch(config, history)
    record = next(r for r in history if r["epoch"] == best)
    gain = f" by more than {config.min_delta:g}" if config.min_delta else ""
    return (
        f"early stopping: {what} after epoch {history[-1]['epoch']} of {config.epochs}, "
        f"{config.monitor} not improved{gain} for {config.early_stopping_patience} epochs; "
        f"best epoch {best} ({runs.describe_best(config, record)}); raise "
        "--early-stopping-patience with --resume to train on"
    )


def _epoch_writer(run: TrainRun, history: list, bar, stop: StopRequest, out: Output, events):
    """fit's ``on_epoch_end``: the epoch's checkpoint, history.json, TensorBoard events (with
    ``events``, a [`jaxmlp.loggers.TensorBoardLogger`][]) and table row; it asks fit to stop
    after a Ctrl-C."""
    from jaxmlp import checkpoints

    config, run_dir = run.config, run.run_dir

    def on_epoch_end(state, record) -> bool:
        # The checkpoint of each epoch holds the history up to it (fit returns the same
        # records when it is done).
        history.append(record)
        if bar is not None:
            bar.finish()
        # Checkpoint first, then history.json: after a crash between the two, resuming
        # rebuilds history.json from the history stored inside the checkpoint. The best
        # epoch's checkpoint stays out of the rotation.
        best = runs.best_epoch(config, history)
        checkpoints.save(
            run_dir / runs.CHECKPOINT_DIR,
            record["epoch"],
            state,
            meta={"history": history, "config": config.to_dict()},
            keep=config.keep_checkpoints,
            also_keep=() if best is None else (best,),
        )
        runs.write_json(run_dir / runs.HISTORY_FILE, history)
        if events is not None:
            events(state, record)
        out.line(epoch_row(record))
        out.emit({"event": "epoch", **record})
        return stop.requested and record["epoch"] < config.epochs

    return on_epoch_end


def _fit(run: TrainRun, state, history: list, data, mesh, out: Output, *, events: bool):
    """Train the remaining epochs with [`jaxmlp.fit`][]: ``(state, history, exit status)``;
    the status is EXIT_OK unless training diverged or was interrupted. ``events``: write
    TensorBoard events into the run directory."""
    import jaxmlp

    config = run.config
    _, (x_train, y_train), validation, _ = data
    logger = _event_logger(run) if events else None
    with (
        progress_bar(not out.quiet, config.epochs) as bar,
        StopRequest(out) as stop,
        contextlib.nullcontext() if logger is None else logger,
    ):
        try:
            state, history = jaxmlp.fit(
                x_train=x_train,
                y_train=y_train,
                state=state,
                history=list(history),
                epochs=config.epochs - len(history),
                batch_size=config.batch_size,
                validation_data=validation,
                on_epoch_end=_epoch_writer(run, history, bar, stop, out, logger),
                progress=bar,
                on_step=None
                if config.log_every_steps is None or logger is None
                else logger.on_step,
                log_every_steps=config.log_every_steps or 50,
                early_stopping_patience=config.early_stopping_patience,
                monitor=config.monitor,
                min_delta=config.min_delta,
                mesh=mesh,
                dp_delta=config.dp_delta,
                dp_accountant=config.dp_accountant,
            )
        except jaxmlp.DivergenceError as e:
            if bar is not None:
                bar.finish()
            _report_divergence(e, config, out)
            return state, history, EXIT_FAILED
    if stop.requested and history[-1]["epoch"] < config.epochs:
        out.note(
            f"interrupted: stopped after epoch {history[-1]['epoch']}, checkpoint saved; "
            f"continue with `{PROG} train --name {run.name} --runs-dir {run.runs_dir} --resume`"
        )
        return state, history, EXIT_INTERRUPTED
    if _stopped_early(config, history):
        out.line(_stop_line(config, history, "stopped"))
        out.emit({"event": "early_stopping", **_best_summary(config, history)})
    return state, history, EXIT_OK


def _event_logger(run: TrainRun):
    """The run's TensorBoard logger: its event files go into the run directory itself, so that
    ``tensorboard --logdir RUNS_DIR`` lists one run per run name, and a resumed run adds a file
    to the same run. The run's configuration is its hparams; the learning rate is read from the
    schedule its optimizer was built with."""
    from jaxmlp.loggers import TensorBoardLogger

    return TensorBoardLogger(
        run.run_dir, hparams=run.config.to_dict(), learning_rate=_learning_rate(run.config)
    )


def _learning_rate(config: RunConfig):
    """The learning-rate schedule (or number) of the run's optimizer, as
    [`jaxmlp.cli.runs.build_state`][] builds it: ``config.optimization.build`` over all the
    run's steps."""
    return config.optimization.learning_rate_schedule(config.epochs * runs.steps_per_epoch(config))


def _report_divergence(error, config: RunConfig, out: Output) -> None:
    steps = runs.steps_per_epoch(config)
    epoch, step = error.epoch, error.step
    kept = (
        f"the last good checkpoint (epoch {epoch - 1}) is intact"
        if epoch > 1
        else "no checkpoint was saved"
    )
    out.note(
        f"error: the loss or its gradient became non-finite at epoch {epoch}, "
        f"step {step} of {steps} (global step {(epoch - 1) * steps + step}); "
        f"training stopped, {kept}; try a lower learning rate than "
        f"{config.learning_rate:g} (e.g. --learning-rate {config.learning_rate / 10:g})"
    )
    out.emit({"event": "diverged", "epoch": epoch, "step": step})


def _best_summary(config: RunConfig, history) -> dict[str, Any]:
    """What metrics.json says about the epochs: how many were trained, whether early stopping
    ended the run, and the best epoch by the run's monitor (None without validation data)."""
    best = runs.best_epoch(config, history)
    summary = {
        "epochs_trained": history[-1]["epoch"],
        "stopped_early": _stopped_early(config, history),
        "monitor": config.monitor if best is not None else None,
        "best_epoch": best,
    }
    if best is not None:
        summary[f"best_{config.monitor}"] = next(
            r[config.monitor] for r in history if r["epoch"] == best
        )
    return summary


def _best_state(run: TrainRun, state, history, out: Output):
    """``(state, epoch)`` to score: the best epoch's, restored from its checkpoint (which the
    rotation kept), or the last one's without validation data, or with a warning when a run
    trained before the best epoch was kept has lost it."""
    from jaxmlp import checkpoints

    best, last = runs.best_epoch(run.config, history), history[-1]["epoch"]
    if best is None or best == last:
        return state, last
    directory = run.run_dir / runs.CHECKPOINT_DIR
    if best not in checkpoints.list_steps(directory):
        out.note(
            f"warning: the best epoch of {run.run_dir}, {best}, has no checkpoint kept; "
            f"scoring the last one, epoch {last}"
        )
        return state, last
    return checkpoints.restore(directory, state, epoch=best).state, best


def _finish(args, run: TrainRun, state, history, data, out: Output) -> int:
    """The test scores of the best epoch (as ``jaxmlp evaluate`` scores it), the plots,
    metrics.json and the final line of a finished run."""
    config, run_dir = run.config, run.run_dir
    ds, _, _, test = data
    state, scored = _best_state(run, state, history, out)
    scores = score_test_set(state, test, ds.class_names, run_dir, plots=not args.no_plots)
    if not args.no_plots:
        from jaxmlp import plots as plotlib

        plotlib.plot_history(history, run_dir / runs.PLOT_FILES["history"])
    train_seconds = sum(r["seconds"] for r in history)
    best = _best_summary(config, history)
    summary = {
        "run_dir": str(run_dir),
        "epochs": config.epochs,
        **best,
        "test_epoch": scored,
        "test_loss": scores["test_loss"],
        "test_accuracy": scores["test_accuracy"],
        "test_correct": scores["correct"],
        "test_count": scores["count"],
        "train_seconds": train_seconds,
        "plots": [] if args.no_plots else [str(run_dir / f) for f in runs.PLOT_FILES.values()],
        "checkpoint": str(run_dir / runs.CHECKPOINT_DIR / str(scored)),
    }
    runs.write_json(run_dir / runs.METRICS_FILE, summary)
    trained = best["epochs_trained"]
    of = (
        f"the best epoch {scored} of {trained}"
        if scored == best["best_epoch"]
        else f"epoch {scored}"
    )
    out.result(
        f"test accuracy {100 * scores['test_accuracy']:.2f}% ({scores['correct']}/"
        f"{scores['count']}), test loss {scores['test_loss']:.4f} at {of}; {trained} epochs "
        f"in {train_seconds:.1f} s; run directory {run_dir}"
    )
    if not args.no_plots:
        out.line("plots: " + ", ".join(summary["plots"]))
    out.emit({"event": "done", **summary})
    return EXIT_OK
