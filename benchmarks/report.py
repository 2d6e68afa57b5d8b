"""The readable report: markdown tables and PNG plots from the raw results (the JSON)."""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402

from benchmarks.scaling import IMPLEMENTATIONS, SWEEP_KEYS  # noqa: E402
from jaxmlp._files import atomic_write  # noqa: E402


def _table(header: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def _us(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1e6:,.0f}"


def _yes(met: bool | None) -> str:
    return {True: "met", False: "missed", None: "not measured"}[met]


def machine_section(results: dict[str, Any]) -> str:
    m = results["machine"]
    blas = (
        ", ".join(
            f"{entry.get('internal_api')} {entry.get('version')} "
            f"({entry.get('architecture')} kernel, {entry.get('num_threads')} threads)"
            for entry in m["blas"]
            if "internal_api" in entry
        )
        or "unknown"
    )
    removed = ", ".join(f"{k}={v}" for k, v in m["blas_env_removed"].items())
    rows = [
        [
            "CPU",
            f"{m['cpu']}, {m['cores']} cores ({m['usable_cores']} usable), {m['memory_gib']} GiB",
        ],
        ["load average at start", ", ".join(f"{v:.2f}" for v in m["load_average_at_start"])],
        [
            "JAX",
            f"jax {m['jax']}, jaxlib {m['jaxlib']}, backend {m['backend']}, "
            f"device {m['device_kind']} x{m['device_count']}",
        ],
        ["NumPy", f"{m['numpy']}, BLAS: {blas}"],
        [
            "BLAS environment",
            f"removed for this run: {removed}"
            if removed
            else "OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE were not set",
        ],
        ["Python / OS", f"{m['python']} / {m['platform']}"],
        ["date, mode", f"{m['date']}, {results['mode']}"],
    ]
    return _table(["", ""], rows)


def goals_section(results: dict[str, Any]) -> str:
    s = results["sections"]
    rows = []
    c = s.get("correctness", {}).get("goals")
    if c:
        for dtype in ("float64", "float32"):
            rows.append(
                [
                    f"hand backprop = jax.grad, {dtype} (rel. error <= {c[dtype]['bound']:g})",
                    f"worst {c[dtype]['worst_relative_error']:.1e}",
                    _yes(c[dtype]["met"]),
                ]
            )
    g = s.get("gradient_speed", {}).get("goal_within_10_percent")
    if g:
        rows.append(
            [
                "hand backprop within 10% of jax.grad in speed",
                f"worst ratio {g['worst']:.2f} "
                f"(range {min(g['ratios_backprop_over_autodiff']):.2f}.."
                f"{max(g['ratios_backprop_over_autodiff']):.2f})",
                _yes(g["met"]),
            ]
        )
    t = s.get("throughput", {}).get("goal_vs_torch")
    if t:
        measured = (
            f"{t['speedup_vs_torch_eager']:.2f}x"
            if "speedup_vs_torch_eager" in t
            else "PyTorch not installed"
        )
        if "speedup_vs_torch_compile" in t:
            measured += f"; vs torch.compile {t['speedup_vs_torch_compile']:.2f}x"
        rows.append(
            [
                f"{t['config']}: jaxmlp >= 2.5x PyTorch eager, ahead of torch.compile",
                measured,
                _yes(t.get("met")),
            ]
        )
    e = s.get("limit", {}).get("goal")
    if e:
        measured = f"floor / epoch = {e['efficiency']:.0%}" if "efficiency" in e else "-"
        met = e.get("met")
        if results["machine"]["backend"] != "cpu":
            measured += " (the floor is launch-bound on a GPU: see section 4)"
            met = None
        rows.append([f"{e['config']}: epoch <= 1.1x its matmul floor", measured, _yes(met)])
    for epoch in s.get("privacy", {}).get("epochs", []):
        r = epoch["ratios"]
        rows.append(
            [
                f"{epoch['architecture']}: hand-derived DP-SGD epoch <= 1.2x the non-private one",
                f"{r['dp_backprop_over_plain']:.2f}x (over the plain hand-derived epoch "
                f"{r.get('dp_backprop_over_plain_backprop', float('nan')):.2f}x; clipping alone, "
                f"no noise: {r['dp_clip_only_over_plain']:.2f}x)",
                _yes(r["dp_backprop_over_plain"] <= 1.2),
            ]
        )
        opacus = epoch.get("opacus", {})
        versus = [f"vmap(grad) DP {r['dp_autodiff_over_dp_backprop']:.1f}x slower"]
        met = r["dp_autodiff_over_dp_backprop"] >= 3
        if "opacus_over_jaxmlp_dp_backprop" in opacus:
            versus.append(f"Opacus {opacus['opacus_over_jaxmlp_dp_backprop']:.1f}x slower")
            met = met and opacus["opacus_over_jaxmlp_dp_backprop"] >= 3
        else:
            met = None
        rows.append(
            [
                f"{epoch['architecture']}: hand-derived DP epoch >= 3x faster than vmap(grad) "
                "DP and Opacus",
                "; ".join(versus),
                _yes(met),
            ]
        )
    return _table(["goal", "measured", ""], rows) if rows else "(no goals measured)"


def _mib(value: int | None) -> str:
    return "-" if value is None else f"{value / 2**20:,.1f}"


def privacy_section(section: dict[str, Any]) -> str:
    rows = []
    for p in section["per_example"]:
        cells = [p["architecture"], p["batch"]]
        for key in ("grads_autodiff", "grads_backprop", "norms_autodiff", "norms_backprop"):
            entry = p[key]
            time_ = "not run" if "skipped" in entry else _us(entry["median_s"])
            cells.append(f"{time_} / {_mib(entry['memory_bytes'])}")
        rows.append(cells)
    header = [
        "model",
        "batch",
        "grads autodiff: us / MiB",
        "grads by hand",
        "norms autodiff",
        "norms by hand (no gradient formed)",
    ]
    parts = [
        "Per-example gradients and norms: median microseconds per call / XLA's estimate of the "
        "call's working memory (temporaries + outputs). Calls estimated over "
        f"{section['memory_cap_bytes'] / 2**30:.0f} GiB are not run.",
        _table(header, rows),
    ]
    rows = []
    for e in section["epochs"]:
        o = e.get("opacus", {})

        def seconds(name, e=e):
            run = e[name]
            scaled = f" (from {run['scaled_from_steps']} steps)" if run["scaled_from_steps"] else ""
            return f"{run['seconds']:.2f}{scaled}"

        rows.append(
            [
                e["architecture"],
                seconds("plain_autodiff"),
                seconds("dp_backprop_clip_only"),
                seconds("dp_backprop"),
                seconds("dp_autodiff"),
                f"{o['dp_epoch_seconds']:.1f}" if "dp_epoch_seconds" in o else "-",
                f"{o['plain_epoch_seconds']:.2f}" if "plain_epoch_seconds" in o else "-",
                f"{o['per_sample_max_relative_difference']:.1e}"
                if "per_sample_max_relative_difference" in o
                else o.get("skipped", "-"),
            ]
        )
    header = [
        "model",
        "plain epoch (s)",
        "DP clip only, by hand",
        "DP by hand",
        "DP vmap(grad)",
        "Opacus DP",
        "torch plain",
        "Opacus vs jaxmlp per-sample grads (max rel. diff.)",
    ]
    first = section["epochs"][0]
    parts += [
        f"One epoch of {first['examples']:,} examples, batch {first['batch']}, clip "
        f"{first['clip']:g}, noise multiplier {first['noise_multiplier']:g}, SGD (seconds; slow "
        "variants timed on the epoch's first steps and scaled).",
        _table(header, rows),
    ]
    return "\n\n".join(parts)


def correctness_section(section: dict[str, Any]) -> str:
    rows = []
    for case in section["cases"]:
        numerical = case.get("numerical_vs_autodiff")
        rows.append(
            [
                case["architecture"],
                case["activation"],
                case["variant"],
                case["dtype"],
                f"{case['autodiff_vs_backprop']['max_relative_error']:.1e}",
                f"{case['autodiff_vs_numpy']['max_relative_error']:.1e}",
                f"{case['backprop_vs_numpy']['max_relative_error']:.1e}",
                f"{numerical['max_relative_error']:.1e}" if numerical else "-",
            ]
        )
    return _table(
        [
            "net",
            "phi",
            "variant",
            "dtype",
            "grad vs backprop",
            "grad vs numpy",
            "backprop vs numpy",
            "numerical vs grad",
        ],
        rows,
    )


def gradient_speed_section(section: dict[str, Any]) -> str:
    parts = []
    for sweep, rows in section["sweeps"].items():
        table = []
        for row in rows:
            table.append(
                [
                    row["architecture"],
                    row["batch"],
                    f"{row['parameters']:,}",
                    _us(row["autodiff"]["median_s"]),
                    _us(row["backprop"]["median_s"]),
                    f"{row['backprop_over_autodiff']:.2f}",
                    _us(row["grad_only"]["median_s"]),
                    _us(row["separate_loss_then_grad_s"]),
                    _us(row["numpy"]["median_s"]),
                    f"{row['numerical_extrapolated_s']:.3g} s",
                    f"{row['autodiff']['compile_s']:.2f}",
                ]
            )
        parts.append(
            f"**{sweep}**\n\n"
            + _table(
                [
                    "net",
                    "batch",
                    "params",
                    "value_and_grad us",
                    "backprop us",
                    "ratio",
                    "grad only us",
                    "loss + grad separately us",
                    "NumPy us",
                    "numerical (extrap.)",
                    "compile s",
                ],
                table,
            )
        )
    n = section["numerical_small"]
    parts.append(
        f"Numerical gradient measured on {n['architecture']} (batch {n['batch']}, "
        f"{n['parameters']:,} parameters): {n['numerical_grad']['median_s'] * 1e3:.1f} "
        f"ms per gradient, {n['seconds_per_parameter'] * 1e6:.1f} us per parameter "
        f"(compile {n['numerical_grad']['compile_s']:.1f} s apart). The sweep's "
        "'numerical' column is 2 x parameters x one jitted loss call."
    )
    return "\n\n".join(parts)


def throughput_section(section: dict[str, Any]) -> str:
    parts = []
    for config in section["configs"]:
        rows = config["implementations"]
        reference = rows.get("torch eager", {}).get("epoch_s")
        table = []
        for name, row in rows.items():
            if "epoch_s" not in row:
                table.append([name, "skipped: " + row["skipped"], "", "", "", ""])
                continue
            table.append(
                [
                    name,
                    f"{row['epoch_s']:.3f}",
                    f"{row['examples_per_s']:,.0f}",
                    f"{row['compile_s']:.2f}",
                    f"{row['final_loss']:.3f}",
                    f"{reference / row['epoch_s']:.2f}x" if reference else "-",
                ]
            )
        parts.append(
            f"**{config['name']}** ({config['examples']:,} examples per epoch)\n\n"
            + _table(
                [
                    "implementation",
                    "s / epoch",
                    "examples / s",
                    "compile s",
                    "last loss",
                    "speed vs torch eager",
                ],
                table,
            )
        )
    return "\n\n".join(parts)


def limit_section(section: dict[str, Any], results_backend: str) -> str:
    p = section["peak"]
    notes = []
    if results_backend != "cpu":
        notes.append(
            "On a GPU, float32 products run at the default precision (TF32 on tensor "
            "cores), and a product at these small shapes takes a few microseconds, about "
            "one kernel launch: the per-product floor is then launch-bound and can exceed "
            "a fused epoch's time, so efficiencies above 100% mean the floor, not the "
            "epoch, is overhead-bound."
        )
    parts = notes + [
        "Peak: "
        + ", ".join(f"{n}^3 {row['flop_per_s'] / 1e9:.1f} GFLOP/s" for n, row in p["sizes"].items())
        + f"; best {p['best_flop_per_s'] / 1e9:.1f} GFLOP/s."
    ]
    floor_rows = [
        [
            key,
            f"{f['step_floor_s'] * 1e3:.3f}",
            f"{f['step_flops'] / 1e6:.1f}",
            f"{f['step_flops'] / f['step_floor_s'] / 1e9:.1f}",
        ]
        for key, f in section["floors"].items()
    ]
    parts.append(
        _table(
            ["step", "matmul floor ms / step", "MFLOP / step", "GFLOP/s at own shapes"], floor_rows
        )
    )
    rows = []
    for config in section["efficiency"]:
        for name, row in config["implementations"].items():
            rows.append(
                [
                    config["config"],
                    name,
                    f"{row['epoch_s']:.3f}",
                    f"{row['floor_s']:.3f}",
                    f"{row['efficiency']:.0%}",
                    f"{row['model_flop_per_s'] / 1e9:.1f}",
                    f"{row['fraction_of_peak']:.0%}",
                ]
            )
    if rows:
        parts.append(
            _table(
                [
                    "config",
                    "implementation",
                    "s / epoch",
                    "floor s",
                    "efficiency (floor / time)",
                    "model GFLOP/s",
                    "of peak",
                ],
                rows,
            )
        )
    return "\n\n".join(parts)


def scaling_section(section: dict[str, Any], plot: str | None) -> str:
    parts = [f"![scaling]({plot})"] if plot else []
    rows = []
    for sweep, fits in section["crossovers"].items():
        for name, fit in fits.items():
            if fit:
                at = f"{fit['crossover_at']:.0f}" if fit["crossover_at"] else "outside the sweep"
                rows.append(
                    [sweep, name, _us(fit["overhead_s"]), f"{fit['flop_per_s'] / 1e9:.1f}", at]
                )
    if rows:
        parts.append(
            _table(
                [
                    "sweep",
                    "implementation",
                    "fixed overhead us",
                    "GFLOP/s of the work term",
                    "overhead = work at",
                ],
                rows,
            )
        )
    memory_rows = [
        [
            f"784-{r['width']}-{r['width']}-10",
            f"{r.get('parameters', 0):,}",
            f"{r.get('state_mib', 0):.1f}",
            f"{r.get('peak_rss_mib', 0):.0f}",
            f"{r['device_peak_mib']:.0f}" if r.get("device_peak_mib") else "-",
        ]
        for r in section["memory"]
        if "error" not in r
    ]
    parts.append(
        _table(
            [
                "net (Adam, batch 128)",
                "params",
                "params+grads+moments MiB",
                "peak RSS MiB",
                "device peak MiB",
            ],
            memory_rows,
        )
    )
    if section.get("largest_device_width"):
        w = section["largest_device_width"]
        verified = w.get("largest_verified_width")
        tried = ", ".join(
            f"{t['width']:,} {'fits' if t['fits'] else 'out of memory'}" for t in w.get("tries", [])
        )
        parts.append(
            "Largest 784-W-W-10 width whose training (Adam, batch 128, plus a "
            f"60000 x 784 dataset) fits the device: {w['largest_width']:,} by a "
            "linear fit of peak bytes"
            f"  ({w['bytes_per_parameter']:.1f} bytes per parameter)"
            + (
                f"; verified by training: {verified:,} ({tried})."
                if verified
                else f"; trials: {tried or 'none'}."
            )
        )
    return "\n\n".join(parts)


def plot_scaling(results: dict[str, Any], path: Path) -> bool:
    section = results["sections"].get("gradient_speed")
    if not section:
        return False
    sweeps = section["sweeps"]
    figure, axes = plt.subplots(1, len(sweeps), figsize=(5 * len(sweeps), 4), squeeze=False)
    crossover = results["sections"].get("scaling", {}).get("crossovers", {})
    for axis, (sweep, rows) in zip(axes[0], sweeps.items(), strict=True):
        values = [SWEEP_KEYS[sweep](row) for row in rows]
        for name in IMPLEMENTATIONS:
            axis.loglog(values, [row[name]["median_s"] * 1e6 for row in rows], "o-", label=name)
        fit = (crossover.get(sweep) or {}).get("autodiff")
        if fit and fit.get("crossover_at"):
            axis.axvline(
                fit["crossover_at"], color="gray", linestyle="--", label="jax.grad: overhead = work"
            )
        axis.set_xlabel(
            {
                "width": "hidden width (784-W-10)",
                "depth": "hidden layers of 256",
                "batch": "batch (784-256-256-10)",
            }[sweep]
        )
        axis.set_ylabel("us per gradient")
        axis.grid(True, which="both", alpha=0.3)
        axis.legend(fontsize=8)
    m = results["machine"]
    where = m["cpu"] if m["backend"] == "cpu" else f"{m['device_kind']} ({m['backend']})"
    figure.suptitle(f"Gradient time per call, {where}")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return True


def plot_throughput(results: dict[str, Any], path: Path) -> bool:
    section = results["sections"].get("throughput")
    if not section:
        return False
    configs = section["configs"]
    figure, axes = plt.subplots(1, len(configs), figsize=(5 * len(configs), 4), squeeze=False)
    for axis, config in zip(axes[0], configs, strict=True):
        rows = {k: v for k, v in config["implementations"].items() if "examples_per_s" in v}
        axis.barh(list(rows), [row["examples_per_s"] for row in rows.values()])
        axis.set_xscale("log")
        axis.set_xlabel("examples / s (log)")
        axis.set_title(config["name"], fontsize=9)
        axis.invert_yaxis()
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return True


def sweep_section(section: dict[str, Any]) -> str:
    """The stacked-vs-one-by-one table of :mod:`benchmarks.sweep`."""
    rows = []
    for row in section["rows"]:

        def median(approach: str, key: str, row=row) -> float:
            return statistics.median(r[key] for r in row[approach])

        end, epoch = row["end_to_end_speedup"], row["epoch_speedup"]
        rows.append(
            [
                row["models"],
                f"{median('stack', 'end_to_end_s'):.1f} s",
                f"{median('one_by_one', 'end_to_end_s'):.1f} s",
                f"{end['median']:.1f}x ({end['min']:.1f}-{end['max']:.1f})",
                f"{median('stack', 'epoch_s'):.2f} s",
                f"{median('one_by_one', 'epoch_s'):.2f} s",
                f"{epoch['median']:.1f}x ({epoch['min']:.1f}-{epoch['max']:.1f})",
            ]
        )
    first = section["rows"][0]
    return (
        f"{section['model']} Adam models, batch {section['batch_size']}, {first['examples']:,} "
        f"examples, {first['epochs']} epochs; each model its own learning rate, L2 coefficient "
        f"and seed. Median over {first['rounds']} interleaved rounds (the speed-up's range in "
        "brackets). End to end includes the compiles: one for the stack, one per model one by "
        "one (each its own optimizer); an epoch is all the models' epoch, compiled.\n\n"
        + _table(
            [
                "models",
                "stack, end to end",
                "one by one",
                "speed-up",
                "stack, epoch",
                "one by one, epoch",
                "speed-up",
            ],
            rows,
        )
    )


def write(results: dict[str, Any], out: Path, stem: str) -> Path:
    """Write ``<stem>.md`` and its plots into ``out``; return the markdown's path."""
    s = results["sections"]
    scaling_png = (
        f"{stem}-scaling.png" if plot_scaling(results, out / f"{stem}-scaling.png") else None
    )
    throughput_png = (
        f"{stem}-throughput.png"
        if plot_throughput(results, out / f"{stem}-throughput.png")
        else None
    )
    command = "python -m benchmarks" + (" --quick" if results["mode"] == "quick" else "")
    parts = [
        f"# jaxmlp benchmarks: {stem}",
        f"Command: `{command}` (from the repository root). "
        "Raw results: the JSON file of the same name.",
        "## Machine",
        machine_section(results),
        "## Goals",
        goals_section(results),
    ]
    if "correctness" in s:
        parts += [
            "## 1. Gradient correctness (relative error per parameter, worst leaf)",
            correctness_section(s["correctness"]),
        ]
    if "gradient_speed" in s:
        parts += [
            "## 2. Gradient speed (microseconds per gradient, median)",
            gradient_speed_section(s["gradient_speed"]),
        ]
    if "throughput" in s:
        parts += ["## 3. Training throughput (one epoch)", throughput_section(s["throughput"])]
        if throughput_png:
            parts.append(f"![throughput]({throughput_png})")
    if "limit" in s:
        parts += [
            "## 4. The hardware's limit",
            limit_section(s["limit"], results["machine"]["backend"]),
        ]
    if "scaling" in s:
        parts += ["## 5. Scaling and memory", scaling_section(s["scaling"], scaling_png)]
    elif scaling_png:
        parts += ["## 5. Scaling", f"![scaling]({scaling_png})"]
    if "privacy" in s:
        parts += ["## 6. Per-example gradients and DP-SGD", privacy_section(s["privacy"])]
    if "sweep" in s:
        parts += ["## 7. Sweeps: one stack against one by one", sweep_section(s["sweep"])]
    seconds = {name: section.get("seconds") for name, section in s.items()}
    parts.append("Section run times (s): " + ", ".join(f"{k} {v}" for k, v in seconds.items()))
    text = "\n\n".join(parts) + "\n"
    return atomic_write(out / f"{stem}.md", lambda f: f.write(text.encode("utf-8")))
