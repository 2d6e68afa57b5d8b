"""``jaxmlp sweep``: many configurations of ``jaxmlp train``, trained together as stacked models.

::

    jaxmlp sweep --name S --grid learning_rate=1e-3,3e-3 --grid seed=0,1,2 [train options]
    jaxmlp sweep --name S --random 16 --range learning_rate=1e-4:1e-2:log --range l2=0:1e-4

The configurations are every combination of the ``--grid`` values (and, with ``--random N``,
N draws of the ``--range`` keys for each), on top of the options given as for ``jaxmlp train``.
Configurations that differ only in numbers a train state can hold as arrays train together in
one vmapped program ([`jaxmlp.multi`][]): the seed and initialisation, the L2 coefficient and
dropout rates (`jaxmlp.training.with_hyperparams`), and the learning rate, momentum and
the optimizer's other numbers ([`jaxmlp.multi.stackable_optimizer`][]). Others (layer sizes,
batch size, optimizer, ...) form groups of their own, each a stack. A stack holds at most
``--max-stack`` models, fewer when they would not fit in memory.

Writes into ``RUNS_DIR/S``: ``sweep.json`` (what was asked, with the provenance),
``results.json`` and ``results.csv`` (one row per configuration), ``results.png``, and ``best``,
an ordinary run directory of the best configuration (``jaxmlp evaluate S/best`` works on it).
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import io
import itertools
import json
import math
import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from jaxmlp.cli import config as cfglib
from jaxmlp.cli import runs
from jaxmlp.cli.config import RunConfig
from jaxmlp.cli.output import EXIT_FAILED, EXIT_OK, PROG, CliError, Output

INITIAL_KEYS = ("seed", "init", "init_scale")
"""Keys that decide only the initial parameters: any values stack."""
NOT_SWEPT = frozenset(
    {"data_dir", "keep_checkpoints", "log_every_steps", "early_stopping_patience"}
)
RESULTS_FILE, CSV_FILE, PLOT_FILE, SPEC_FILE, BEST_DIR = (
    "results.json",
    "results.csv",
    "results.png",
    "sweep.json",
    "best",
)


# --------------------------------------------------------------------------------------------
# What to train


@dataclasses.dataclass(frozen=True)
class Range:
    low: float
    high: float
    log: bool


def _sweep_key(text: str, option: str) -> str:
    name = cfglib.normalize_key(text.strip())
    if name not in cfglib.FIELDS:
        raise CliError(f"{option} {text}: {cfglib._unknown_key(text, '')}")
    if name in NOT_SWEPT:
        why = (
            "a sweep trains every configuration for --epochs and keeps its best epoch"
            if name == "early_stopping_patience"
            else "it does not change what is trained"
        )
        raise CliError(f"{option} {text}: {name} cannot be swept ({why})")
    return name


def parse_value(name: str, text: str) -> Any:
    """A value of config key ``name`` written on the command line (``none`` for an optional
    key; a list of integers as ``512-256``)."""
    base, optional = cfglib.field_kind(name)
    text = text.strip()
    if optional and text.lower() in ("none", "null"):
        return None
    try:
        if base is tuple:
            return [] if text.lower() == "none" else [int(part) for part in text.split("-")]
        if base is int:
            return int(text)
        if base is float:
            return float(text)
    except ValueError:
        kind = {tuple: "integers joined by '-' (e.g. 512-256)", int: "an integer"}.get(
            base, "a number"
        )
        raise CliError(f"{name}={text!r} does not parse; expected {kind}") from None
    return text


def parse_grid(texts: Sequence[str]) -> dict[str, list[Any]]:
    """``--grid`` options as ``{key: [values]}``."""
    grid: dict[str, list[Any]] = {}
    for text in texts:
        key, sep, values = text.partition("=")
        if not sep:
            raise CliError(f"--grid {text!r}: expected KEY=V1,V2,...")
        name = _sweep_key(key, "--grid")
        if name in grid:
            raise CliError(f"--grid {name} is given twice; give all its values in one --grid")
        items = [v for v in values.split(",") if v.strip()]
        if not items:
            raise CliError(f"--grid {text!r} has no values; expected KEY=V1,V2,...")
        parsed = [parse_value(name, v) for v in items]
        if len({json.dumps(v) for v in parsed}) != len(parsed):
            raise CliError(f"--grid {text!r} repeats a value")
        grid[name] = parsed
    return grid


def parse_ranges(texts: Sequence[str]) -> dict[str, Range]:
    """``--range`` options as ``{key: Range}``."""
    ranges: dict[str, Range] = {}
    for text in texts:
        key, sep, spec = text.partition("=")
        parts = spec.split(":")
        if not sep or len(parts) not in (2, 3) or (len(parts) == 3 and parts[2] != "log"):
            raise CliError(f"--range {text!r}: expected KEY=LOW:HIGH or KEY=LOW:HIGH:log")
        name = _sweep_key(key, "--range")
        base, _ = cfglib.field_kind(name)
        if base not in (int, float):
            raise CliError(f"--range {name}: {name} is not a number; sweep it with --grid")
        if name in ranges:
            raise CliError(f"--range {name} is given twice")
        low, high = (parse_value(name, v) for v in parts[:2])
        log = len(parts) == 3
        if low > high:
            raise CliError(f"--range {text!r}: its low {low:g} is above its high {high:g}")
        if log and low <= 0:
            raise CliError(f"--range {text!r}: a log range needs LOW > 0")
        ranges[name] = Range(float(low), float(high), log)
    return ranges


def _draw(rng, name: str, spec: Range) -> Any:
    base, _ = cfglib.field_kind(name)
    if base is int:
        if spec.log:
            value = math.exp(rng.uniform(math.log(spec.low), math.log(spec.high)))
            return int(min(max(round(value), spec.low), spec.high))
        return int(rng.integers(int(spec.low), int(spec.high) + 1))
    if spec.log:
        value = math.exp(rng.uniform(math.log(spec.low), math.log(spec.high)))
    else:
        value = rng.uniform(spec.low, spec.high)
    # Six significant digits: the number in results.csv is the one trained.
    return float(f"{value:.6g}")


def configurations(
    grid: dict[str, list[Any]], ranges: dict[str, Range], random: int | None, seed: int
) -> list[dict[str, Any]]:
    """The swept values of every configuration: the grid's product, and with ``random`` that
    many draws of the ranges for each grid point."""
    if ranges and random is None:
        raise CliError("--range needs --random N (how many configurations to draw)")
    if random is not None and not ranges:
        raise CliError("--random needs at least one --range KEY=LOW:HIGH to draw from")
    if not grid and not ranges:
        raise CliError("nothing to sweep: give --grid KEY=V1,V2 and/or --random N --range ...")
    if random is not None and random < 1:
        raise CliError(f"--random {random} is invalid; expected N >= 1")
    both = sorted(set(grid) & set(ranges))
    if both:
        raise CliError(f"{', '.join(both)} is given both as --grid and as --range")
    import numpy as np

    rng = np.random.default_rng(seed)
    points = [dict(zip(grid, values, strict=True)) for values in itertools.product(*grid.values())]
    if random is None:
        return points
    return [
        {**point, **{name: _draw(rng, name, spec) for name, spec in ranges.items()}}
        for point in points
        for _ in range(random)
    ]


def run_configs(base: RunConfig, swept: list[dict[str, Any]]) -> list[RunConfig]:
    """Every configuration as a checked [`RunConfig`][jaxmlp.cli.config.RunConfig] (a calibrated
    noise multiplier for ``dp_target_epsilon``, as ``jaxmlp train`` does)."""
    from jaxmlp.cli.train import calibrated

    configs = []
    for i, values in enumerate(swept, start=1):
        try:
            config = cfglib.from_mapping(values, base=base, source="")
        except cfglib.ConfigError as e:
            described = ", ".join(f"{k}={_show(v)}" for k, v in values.items())
            raise CliError(f"configuration {i} ({described}): {e}") from None
        if config.dp_target_epsilon is not None:
            config = calibrated(config)
        if config.validation < 1:
            raise CliError(
                "a sweep scores every configuration on validation data; --validation 0 holds "
                "out none (give --validation N)"
            )
        if config.early_stopping_patience is not None:
            raise CliError(
                "a sweep trains every configuration for --epochs and keeps its best epoch; "
                "--early-stopping-patience is for jaxmlp train"
            )
        configs.append(config)
    return configs


def _show(value: Any) -> str:
    if isinstance(value, list):
        return "-".join(map(str, value)) or "none"
    return f"{value:g}" if isinstance(value, float) else str(value)


# --------------------------------------------------------------------------------------------
# Which configurations train together


def _traced_keys(config: RunConfig) -> set[str]:
    """The keys whose values may differ inside the stack of ``config``."""
    from jaxmlp import multi
    from jaxmlp.training import TRACED_OPTIONS

    keys: set[str] = set(INITIAL_KEYS) | set(TRACED_OPTIONS)
    if config.schedule in multi.SCHEDULES_WITH_TRACED_NUMBERS:
        keys |= {
            k for k in multi.STACKABLE_OPTIMIZER_HYPERPARAMETERS if getattr(config, k) is not None
        }
    return keys


def stack_signature(config: RunConfig) -> str:
    """Configurations with the same signature can train in one stack."""
    fields = config.result_fields()
    for key in _traced_keys(config):
        fields[key] = "*"
    fields.pop("dp_target_epsilon", None)  # its calibrated noise multiplier is the signature's
    return json.dumps(fields, sort_keys=True)


def stacks(configs: Sequence[RunConfig], max_stack: int) -> list[list[int]]:
    """Indices of the configurations of each stack: grouped by
    [`stack_signature`][jaxmlp.cli.sweep.stack_signature] in the order they first appear, each group
    cut into stacks of at most [`stack_capacity`][jaxmlp.cli.sweep.stack_capacity]."""
    groups: dict[str, list[int]] = {}
    for i, config in enumerate(configs):
        groups.setdefault(stack_signature(config), []).append(i)
    result = []
    for members in groups.values():
        capacity = min(max_stack, stack_capacity(configs[members[0]]))
        result += [members[i : i + capacity] for i in range(0, len(members), capacity)]
    return result


def model_bytes(config: RunConfig) -> int:
    """A generous estimate of one model's memory while it trains in a stack: its parameters
    seven times over (parameters, gradients, two optimizer moments, the best epoch's copy, the
    update) and a step's activations four times over (pre-activations, activations, dropout
    masks, deltas)."""
    sizes = config.layer_sizes
    parameters = sum((a + 1) * b for a, b in itertools.pairwise(sizes))
    activations = config.batch_size * sum(sizes) * 4
    itemsize = 8 if config.dtype == "float64" else 4
    return (7 * parameters + activations) * itemsize


def memory_budget() -> int:
    """Bytes a stack may use: half of the accelerator's memory when it reports it, else half of
    the machine's physical memory."""
    import os

    import jax

    stats = None
    try:
        stats = jax.local_devices()[0].memory_stats()
    except Exception:  # some backends do not report memory
        stats = None
    if stats and stats.get("bytes_limit"):
        return int(stats["bytes_limit"]) // 2
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2
    except (ValueError, OSError, AttributeError):  # pragma: no cover - not POSIX
        return 4 << 30


def stack_capacity(config: RunConfig) -> int:
    """How many models of ``config``'s shape fit in
    [`memory_budget`][jaxmlp.cli.sweep.memory_budget] (at least one)."""
    return max(1, memory_budget() // model_bytes(config))


# --------------------------------------------------------------------------------------------
# Training


def build_stack(configs: Sequence[RunConfig], n_train: int):
    """The stacked train states of ``configs`` (one stack signature): one optimizer object for
    all, the numbers that differ held as arrays. Returns ``(states, traced keys)``."""
    from jaxmlp import multi
    from jaxmlp.training import TRACED_OPTIONS, with_hyperparams

    first = configs[0]

    def varying(keys):
        return [k for k in keys if len({json.dumps(getattr(c, k)) for c in configs}) > 1]

    traced_optimizer = varying(multi.STACKABLE_OPTIMIZER_HYPERPARAMETERS)
    traced_model = varying(TRACED_OPTIONS)
    steps = runs.steps_per_epoch(first, n_train)
    optimizer = multi.stackable_optimizer(
        first.optimization, first.epochs * steps, traced_optimizer, steps_per_epoch=steps
    )
    states = []
    for config in configs:
        state = runs.build_state(config, n_train, optimizer=optimizer, options=first.model)
        if traced_model:
            state = with_hyperparams(state, **{k: getattr(config, k) for k in traced_model})
        if traced_optimizer:
            state = multi.set_optimizer_hyperparams(
                state, **{k: getattr(config, k) for k in traced_optimizer}
            )
        states.append(state)
    return multi.stack_states(states), traced_optimizer + traced_model


def alone_state(state, config: RunConfig, n_train: int):
    """One model of a stack as ``jaxmlp train`` would hold it: the config's own options and
    optimizer ([`build_optimizer`][jaxmlp.cli.runs.build_optimizer]), no traced
    hyperparameters."""
    from jaxmlp import multi

    state = multi.plain_optimizer_state(state, runs.build_optimizer(config, n_train))
    return state.replace(options=config.model, hyperparams={})


# --------------------------------------------------------------------------------------------
# The command


def cmd_sweep(args: argparse.Namespace, given: dict[str, Any], out: Output) -> int:
    from jaxmlp.cli.train import RUN_NAME

    if not RUN_NAME.match(args.name):
        raise CliError(f"--name {args.name!r} is invalid; use letters, digits, '.', '_' and '-'")
    if args.max_stack < 1:
        raise CliError(f"--max-stack {args.max_stack} is invalid; expected N >= 1")
    grid, ranges = parse_grid(args.grid), parse_ranges(args.range)
    for key in set(grid) | set(ranges):
        if key in given:
            raise CliError(f"{key} is swept and also given as --{key.replace('_', '-')}")
    swept = configurations(grid, ranges, args.random, args.sweep_seed)
    file_values: dict[str, Any] = {}
    if args.config:
        file_values = {cfglib.normalize_key(k): v for k, v in cfglib.read_file(args.config).items()}
        file_values.pop("name", None)
        file_values.pop("runs_dir", None)
    base = cfglib.from_mapping(file_values, source=args.config) if file_values else RunConfig()
    base = cfglib.from_mapping(given, base=base, source="")
    configs = run_configs(base, swept)
    keys = list(grid) + list(ranges)
    sweep_dir = Path(args.runs_dir) / args.name
    with runs.locked(sweep_dir):
        if sweep_dir.exists():
            if not args.overwrite:
                raise CliError(
                    f"{sweep_dir} exists; pass --overwrite to replace it, or another --name"
                )
            shutil.rmtree(sweep_dir)
        return _sweep(args, sweep_dir, configs, swept, keys, grid, ranges, out)


def _sweep(args, sweep_dir: Path, configs, swept, keys, grid, ranges, out: Output) -> int:
    from jaxmlp import multi

    n_train = {}
    for config in configs:
        n_train.setdefault(_data_key(config), runs.train_size(config))
    plan = stacks(configs, args.max_stack)
    try:
        sweep_dir.mkdir(parents=True)
    except OSError as e:
        raise CliError(f"cannot create {sweep_dir}: {e.strerror or e}") from e
    spec = {
        "grid": grid,
        "ranges": {k: dataclasses.asdict(v) for k, v in ranges.items()},
        "random": args.random,
        "sweep_seed": args.sweep_seed,
        "configurations": len(configs),
        "stacks": [len(s) for s in plan],
        "base": {k: v for k, v in configs[0].to_dict().items() if k not in keys},
        "provenance": runs.provenance(getattr(args, "argv", None)),
    }
    runs.write_json(sweep_dir / SPEC_FILE, spec)
    out.line(
        f"{PROG} sweep: {len(configs)} configurations of {', '.join(keys)} in {len(plan)} "
        f"stack{'s' * (len(plan) != 1)} ({', '.join(map(str, spec['stacks']))} models); "
        f"directory {sweep_dir}"
    )
    data_cache: dict[str, Any] = {}
    rows: list[dict[str, Any]] = [{} for _ in configs]
    results: dict[int, Any] = {}
    for number, members in enumerate(plan, start=1):
        members_configs = [configs[i] for i in members]
        first = members_configs[0]
        key = _data_key(first)
        if key not in data_cache:
            data_cache[key] = runs.load_training_data(first, out, download=not args.no_download)
        _, (x_train, y_train), validation, _ = data_cache[key]
        states, traced = build_stack(members_configs, n_train[key])
        out.line(
            f"stack {number}/{len(plan)}: {len(members)} models, "
            f"{'-'.join(map(str, first.layer_sizes))}, {first.epochs} epochs"
            + (f", traced: {', '.join(traced)}" if traced else "")
        )
        start = time.perf_counter()

        def progress(epoch, records, number=number, members=members, first=first):
            best = _best_of(records, first.monitor)
            out.line(
                f"  epoch {epoch}/{first.epochs}: best validation accuracy "
                f"{100 * records[best]['validation_accuracy']:.2f}% (configuration "
                f"{members[best] + 1}), {records[0]['seconds']:.1f} s"
            )

        fitted = multi.fit(
            states,
            x_train,
            y_train,
            epochs=first.epochs,
            batch_size=first.batch_size,
            validation_data=validation,
            monitor=first.monitor,
            min_delta=first.min_delta,
            on_epoch_end=progress,
        )
        seconds = time.perf_counter() - start
        for position, index in enumerate(members):
            history = fitted.histories[position]
            rows[index] = _row(index, swept[index], history, configs[index], number, seconds)
            rows[index]["stack_size"] = len(members)
            results[index] = (fitted, position)
        out.emit({"event": "stack", "stack": number, "models": len(members), "seconds": seconds})
    best = _best_row(rows, configs[0].monitor)
    if rows[best]["best_epoch"] is None:  # every configuration diverged in its first epoch
        runs.write_json(
            sweep_dir / RESULTS_FILE,
            {"best": None, "keys": keys, "monitor": configs[0].monitor, "results": rows},
        )
        _write_csv(sweep_dir / CSV_FILE, rows, keys)
        out.table(_table(rows, keys, best=-1))
        out.note(
            f"error: every configuration diverged (a non-finite loss or gradient in its first "
            f"epoch), so there is no best run; results in {sweep_dir / RESULTS_FILE}; try lower "
            "learning rates"
        )
        return EXIT_FAILED
    best_dir = _write_best(
        sweep_dir, configs[best], results[best], n_train, data_cache, getattr(args, "argv", None)
    )
    document = {
        "best": {"configuration": best + 1, **swept[best], "run_dir": str(best_dir)},
        "keys": keys,
        "monitor": configs[0].monitor,
        "results": rows,
    }
    runs.write_json(sweep_dir / RESULTS_FILE, document)
    _write_csv(sweep_dir / CSV_FILE, rows, keys)
    if not args.no_plots:
        from jaxmlp import plots

        log_keys = [k for k, r in ranges.items() if r.log] + [
            k
            for k in grid
            if k in ("learning_rate", "l2", "weight_decay", "eps") and _positive(grid[k])
        ]
        plots.plot_sweep(
            rows, keys, sweep_dir / PLOT_FILE, monitor=configs[0].monitor, log_keys=log_keys
        )
    out.table(_table(rows, keys, best))
    described = ", ".join(f"{k}={_show(swept[best][k])}" for k in keys)
    out.result(
        f"best: configuration {best + 1} ({described}): validation accuracy "
        f"{100 * rows[best]['best_validation_accuracy']:.2f}% at epoch {rows[best]['best_epoch']}"
        f"; run directory {best_dir}; results {sweep_dir / RESULTS_FILE}"
    )
    out.emit({"event": "done", **document})
    return EXIT_OK


def _positive(values) -> bool:
    return all(isinstance(v, (int, float)) and v > 0 for v in values)


def _data_key(config: RunConfig) -> str:
    fields = (
        "dataset",
        "data_dir",
        "normalize",
        "validation",
        "train_limit",
        "test_limit",
        "dtype",
    )
    return json.dumps([getattr(config, f) for f in fields])


def _best_of(records: Sequence[dict[str, Any]], monitor: str) -> int:
    """The index of the record with the best ``monitor`` value by the rule of
    [`jaxmlp.best_epoch`][] (the first of equals), leaving out diverged records and those
    without a finite value; 0 when none is left."""
    import jaxmlp

    candidates = [
        {"epoch": i, monitor: r[monitor]}
        for i, r in enumerate(records)
        if not r.get("diverged") and r.get(monitor) is not None and not math.isnan(r[monitor])
    ]
    best = jaxmlp.best_epoch(candidates, monitor=monitor)
    return 0 if best is None else best


def _row(index, swept, history, config: RunConfig, stack: int, seconds: float) -> dict[str, Any]:
    import jaxmlp

    good = [r for r in history if not r.get("diverged")]
    best_epoch = jaxmlp.best_epoch(good, monitor=config.monitor, min_delta=config.min_delta)
    best = next((r for r in history if r["epoch"] == best_epoch), None)
    last = history[-1]
    return {
        "configuration": index + 1,
        **swept,
        "final_validation_accuracy": last["validation_accuracy"],
        "final_validation_loss": last["validation_loss"],
        "best_validation_accuracy": max((r["validation_accuracy"] for r in good), default=None),
        "best_validation_loss": min((r["validation_loss"] for r in good), default=None),
        "best_epoch": best_epoch,
        "best_epoch_validation_accuracy": None if best is None else best["validation_accuracy"],
        "epochs": len(history),
        "seconds": seconds,
        "stack": stack,
        "diverged": bool(last.get("diverged", False)),
        "history": history,
    }


def _best_row(rows, monitor: str) -> int:
    """The configuration whose best epoch scores best by ``monitor`` (the first of equals)."""
    records = [
        {
            monitor: (
                r["best_epoch_validation_accuracy"]
                if monitor == "validation_accuracy"
                else r["best_validation_loss"]
            )
            if r["best_epoch"] is not None
            else math.nan,
        }
        for r in rows
    ]
    return _best_of(records, monitor)


def _write_csv(path: Path, rows, keys) -> None:
    columns = ["configuration", *keys] + [
        c for c in rows[0] if c not in ("configuration", "history", *keys)
    ]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: _show(v) if isinstance(v, list) else v for k, v in row.items()})
    from jaxmlp import _files

    try:
        _files.atomic_write(path, lambda f: f.write(buffer.getvalue().encode()))
    except OSError as e:
        raise CliError(f"cannot write {path}: {e.strerror or e}") from e


def _table(rows, keys, best: int):
    from rich.table import Table

    table = Table(title="sweep results (best epoch of each configuration)")
    table.add_column("#", justify="right")
    for key in keys:
        table.add_column(key, justify="right", min_width=len(key))
    for title in ("best acc", "epoch", "last acc", "last loss", "s"):
        table.add_column(title, justify="right")
    for i, row in enumerate(rows):
        accuracy = row["best_epoch_validation_accuracy"]
        table.add_row(
            str(row["configuration"]) + (" *" if i == best else ""),
            *(_show(row[k]) for k in keys),
            "diverged" if accuracy is None else f"{100 * accuracy:.2f}%",
            str(row["best_epoch"] or "-"),
            f"{100 * row['final_validation_accuracy']:.2f}%",
            f"{row['final_validation_loss']:.4f}",
            f"{row['seconds']:.1f}",
        )
    return table


def _write_best(sweep_dir: Path, config: RunConfig, result, n_train, data_cache, argv):
    """The best configuration as an ordinary run directory: config.json, history.json,
    provenance.json, the checkpoints of its best and last epochs, and metrics.json with its test
    scores at the best epoch."""
    import jax

    from jaxmlp import checkpoints, multi
    from jaxmlp.cli.evaluate import score_test_set

    fitted, position = result
    key = _data_key(config)
    run_dir = sweep_dir / BEST_DIR
    run_dir.mkdir()
    history = fitted.histories[position]
    runs.write_json(run_dir / runs.CONFIG_FILE, config.to_dict())
    runs.record_provenance(run_dir, argv)
    last = alone_state(multi.unstack_states(fitted.states)[position], config, n_train[key])
    best = alone_state(
        jax.tree.map(lambda leaf: leaf[position], fitted.best_states), config, n_train[key]
    )
    import jaxmlp

    best_epoch = jaxmlp.best_epoch(
        [r for r in history if not r.get("diverged")],
        monitor=config.monitor,
        min_delta=config.min_delta,
    )
    epochs = len(history)
    directory = run_dir / runs.CHECKPOINT_DIR
    meta = {"config": config.to_dict()}
    if best_epoch is not None and best_epoch != epochs:
        checkpoints.save(
            directory, best_epoch, best, meta={**meta, "history": history[:best_epoch]}, keep=0
        )
    checkpoints.save(directory, epochs, last, meta={**meta, "history": history}, keep=0)
    runs.write_json(run_dir / runs.HISTORY_FILE, history)
    ds, _, _, test = data_cache[key]
    scored = best if best_epoch is not None else last
    scores = score_test_set(scored, test, ds.class_names, run_dir, plots=False)
    runs.write_json(
        run_dir / runs.METRICS_FILE,
        {
            "run_dir": str(run_dir),
            "epochs": config.epochs,
            "epochs_trained": epochs,
            "stopped_early": False,
            "monitor": config.monitor if best_epoch is not None else None,
            "best_epoch": best_epoch,
            **(
                {}
                if best_epoch is None
                else {f"best_{config.monitor}": history[best_epoch - 1][config.monitor]}
            ),
            "test_epoch": best_epoch or epochs,
            "test_loss": scores["test_loss"],
            "test_accuracy": scores["test_accuracy"],
            "test_correct": scores["correct"],
            "test_count": scores["count"],
            "train_seconds": sum(r["seconds"] for r in history),
            "checkpoint": str(directory / str(best_epoch or epochs)),
        },
    )
    return run_dir
