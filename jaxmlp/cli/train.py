"""``jaxmlp train``: a run directory around :func:`jaxmlp.fit`, the one training loop.

What the command adds to ``fit``: the configuration (defaults < ``--config`` file < options),
the run directory and its lock, fetching a missing dataset, a checkpoint and ``history.json``
after every epoch (through ``fit``'s epoch callback), resuming from the last good checkpoint,
the table and progress bar, Ctrl-C, and the test scores and plots at the end.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path
from typing import Any

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
from jaxmlp.training._epoch import check_batch_size, check_mesh

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def train_config(args: argparse.Namespace, explicit: dict) -> tuple[RunConfig, dict, str]:
    """(config, requested values, run name) from defaults < --config file < ``explicit``
    options."""
    file_values: dict[str, Any] = {}
    if args.config:
        file_values = {cfglib.normalize_key(k): v for k, v in cfglib.read_file(args.config).items()}
    name = args.name or file_values.pop("name", None)
    runs_dir = file_values.pop("runs_dir", None)
    if args.runs_dir is None:  # an explicit --runs-dir wins over the file's
        args.runs_dir = str(runs_dir) if runs_dir is not None else "runs"
    base = cfglib.from_mapping(file_values, source=args.config) if file_values else RunConfig()
    config = cfglib.from_mapping(explicit, base=base, source="")
    requested = {**file_values, **explicit}
    name = name or config.dataset
    if not isinstance(name, str) or not _NAME.match(name):
        raise CliError(f"--name {name!r} is invalid; use letters, digits, '.', '_' and '-'")
    if config.dp_target_epsilon is not None and not args.resume:
        if "dp_noise_multiplier" in requested:
            raise CliError(
                "give either --dp-noise-multiplier or --dp-target-epsilon (which calibrates the "
                "noise multiplier), not both"
            )
        config = calibrated(config)
    return config, requested, name


def calibrated(config: RunConfig) -> RunConfig:
    """The config with the noise multiplier whose whole run spends ``dp_target_epsilon`` at
    ``dp_delta`` (sampling rate batch_size / n, all epochs' steps)."""
    import dataclasses

    from jaxmlp import privacy

    n_train = runs.train_size(config)
    sigma = privacy.noise_multiplier_for_epsilon(
        target_epsilon=config.dp_target_epsilon,
        sampling_rate=config.batch_size / n_train,
        steps=config.epochs * runs.steps_per_epoch(config, n_train),
        delta=config.dp_delta,
        accountant=config.dp_accountant,
    )
    return dataclasses.replace(
        config, model=dataclasses.replace(config.model, dp_noise_multiplier=round(sigma, 6))
    )


def cmd_train(args: argparse.Namespace, explicit: dict, out: Output) -> int:
    config, requested, name = train_config(args, explicit)
    run_dir = Path(args.runs_dir) / name
    with runs.locked(run_dir):
        config = runs.prepare_run_dir(
            run_dir, config, requested, out, resume=args.resume, overwrite=args.overwrite
        )
        return _train(args, config, name, run_dir, out)


def _data_parallel_mesh(config: RunConfig):
    import jax

    from jaxmlp import sharding

    return sharding.data_parallel_mesh(jax.local_devices())


def _train(args, config: RunConfig, name: str, run_dir: Path, out: Output) -> int:
    n_train = runs.train_size(config)
    mesh = _data_parallel_mesh(config) if args.data_parallel else None
    # Everything that can be checked without data is checked before loading it, by the rules
    # fit itself applies (one rule each; fit's own check then finds nothing).
    check_batch_size(config.batch_size, n_train)
    check_mesh(mesh, config.batch_size)
    state = runs.build_state(config, n_train)
    ds, train, validation, test = runs.load_training_data(
        config, out, download=not args.no_download
    )
    state, history = _start_run_dir(run_dir, config, state, out)
    if mesh is not None:
        from jaxmlp import sharding

        out.line(sharding.describe(mesh))
    _print_header(config, ds, n_train, validation, test, run_dir, out)
    start_epoch = history[-1]["epoch"] if history else 0
    if start_epoch < config.epochs:
        out.line(epoch_header(config.model.is_private))
    for record in history:
        out.line(epoch_row(record))
    if start_epoch < config.epochs:
        code, state, history = _fit(
            args, config, name, run_dir, out, state, history, train, validation, mesh
        )
        if code is not None:
            return code
    if not history:
        raise CliError(f"{run_dir} has no completed epoch")
    return _finish(args, config, state, history, ds, test, run_dir, out)


def _start_run_dir(run_dir: Path, config: RunConfig, state, out: Output):
    """Create the run directory and its config.json, and restore its last good checkpoint:
    ``(state, history)`` to continue from (a fresh state and no history for a new run)."""
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise CliError(f"cannot create {run_dir}: {e.strerror or e}") from e
    runs.write_json(run_dir / runs.CONFIG_FILE, config.to_dict())
    history: list[dict[str, Any]] = []
    restored = runs.restore_run(run_dir, config, out, target=state, quarantine=True)
    if restored is not None:
        state = restored.state
        history = [r for r in restored.meta.get("history", []) if r["epoch"] <= restored.epoch]
        out.line(f"resuming {run_dir} from the checkpoint of epoch {restored.epoch}")
    # history.json always matches the checkpoint it continues from: no gap, no repeat.
    runs.write_json(run_dir / runs.HISTORY_FILE, history)
    return state, history


def _print_header(config: RunConfig, ds, n_train: int, validation, test, run_dir, out) -> None:
    import jaxmlp

    n_val = len(validation[1]) if validation else 0
    out.line(
        f"{PROG} train: {'-'.join(map(str, config.layer_sizes))} {config.activation} MLP "
        f"({jaxmlp.parameter_count(config.layer_sizes):,} parameters), {config.optimizer} "
        f"lr {config.learning_rate:g} {config.schedule}, batch {config.batch_size}, "
        f"{config.epochs} epochs"
    )
    out.line(
        f"data: {ds.name} {n_train:,} train / {n_val:,} validation / {len(test[1]):,} test "
        f"({config.normalize}); run directory: {run_dir}"
    )
    if config.model.clips_gradients:
        out.line(
            f"DP-SGD: clip {config.dp_clip_norm:g}, noise multiplier "
            f"{config.dp_noise_multiplier:g}, {config.batch_sampling} batches; epsilon at delta "
            f"{config.dp_delta:g} by {config.dp_accountant}"
            + (
                f" (calibrated for epsilon {config.dp_target_epsilon:g})"
                if config.dp_target_epsilon is not None
                else ""
            )
        )


def _epoch_writer(run_dir: Path, config: RunConfig, history: list, bar, stop, out: Output):
    """fit's ``on_epoch_end`` for a run directory: after each epoch its checkpoint, then
    history.json, then the table row; it asks fit to stop after a Ctrl-C."""
    from jaxmlp import checkpoints

    def on_epoch_end(state, record) -> bool:
        # The checkpoint of each epoch holds the history up to it (fit returns the same
        # records when it is done).
        history.append(record)
        if bar is not None:
            bar.finish()
        # Checkpoint first, then history.json: after a crash between the two, resuming
        # rebuilds history.json from the history stored inside the checkpoint.
        checkpoints.save(
            run_dir / runs.CHECKPOINT_DIR,
            record["epoch"],
            state,
            meta={"history": history, "config": config.to_dict()},
            keep=config.keep_checkpoints,
        )
        runs.write_json(run_dir / runs.HISTORY_FILE, history)
        out.line(epoch_row(record))
        out.emit({"event": "epoch", **record})
        return stop.requested and record["epoch"] < config.epochs

    return on_epoch_end


def _fit(args, config: RunConfig, name: str, run_dir: Path, out: Output, state, history, train,
         validation, mesh):  # fmt: skip
    """The remaining epochs through :func:`jaxmlp.fit`: ``(exit status or None, state,
    history)``, with a status when training diverged or was interrupted."""
    import jaxmlp

    start_epoch = history[-1]["epoch"] if history else 0
    with progress_bar(not out.quiet, config.epochs) as bar, StopRequest(out) as stop:
        try:
            state, history = jaxmlp.fit(
                x_train=train[0],
                y_train=train[1],
                state=state,
                history=list(history),
                epochs=config.epochs - start_epoch,
                batch_size=config.batch_size,
                validation_data=validation,
                on_epoch_end=_epoch_writer(run_dir, config, history, bar, stop, out),
                progress=bar,
                mesh=mesh,
                dp_delta=config.dp_delta,
                dp_accountant=config.dp_accountant,
            )
        except jaxmlp.DivergenceError as e:
            if bar is not None:
                bar.finish()
            _report_divergence(e, config, runs.steps_per_epoch(config, len(train[1])), out)
            return EXIT_FAILED, state, history
        if stop.requested and history[-1]["epoch"] < config.epochs:
            out.note(
                f"interrupted: stopped after epoch {history[-1]['epoch']}, checkpoint saved; "
                f"continue with `{PROG} train --name {name} --runs-dir {args.runs_dir} "
                "--resume`"
            )
            return EXIT_INTERRUPTED, state, history
    return None, state, history


def _report_divergence(error, config: RunConfig, steps: int, out: Output) -> None:
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


def _finish(args, config: RunConfig, state, history, ds, test, run_dir: Path, out: Output) -> int:
    """The test scores, the plots, metrics.json and the final line of a finished run."""
    scores = score_test_set(state, test, ds.class_names, run_dir, plots=not args.no_plots)
    if not args.no_plots:
        from jaxmlp import plots as plotlib

        plotlib.plot_history(history, run_dir / runs.PLOT_FILES["history"])
    train_seconds = sum(r["seconds"] for r in history)
    summary = {
        "run_dir": str(run_dir),
        "epochs": config.epochs,
        "test_loss": scores["test_loss"],
        "test_accuracy": scores["test_accuracy"],
        "test_correct": scores["correct"],
        "test_count": scores["count"],
        "train_seconds": train_seconds,
        "plots": [] if args.no_plots else [str(run_dir / f) for f in runs.PLOT_FILES.values()],
        "checkpoint": str(run_dir / runs.CHECKPOINT_DIR / str(config.epochs)),
    }
    runs.write_json(run_dir / runs.METRICS_FILE, summary)
    out.result(
        f"test accuracy {100 * scores['test_accuracy']:.2f}% ({scores['correct']}/"
        f"{scores['count']}), test loss {scores['test_loss']:.4f}; {config.epochs} epochs "
        f"in {train_seconds:.1f} s; run directory {run_dir}"
    )
    if not args.no_plots:
        out.line("plots: " + ", ".join(summary["plots"]))
    out.emit({"event": "done", **summary})
    return EXIT_OK
