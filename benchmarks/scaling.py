"""Section 5: where time stops being overhead and starts being arithmetic; memory.

Each sweep of the gradient-speed section is fitted with t = t0 + FLOPs / R (a fixed per-call
overhead t0 plus work at a rate R, least squares on relative error). The crossover, where the
work term equals the overhead, is where the program leaves the overhead-bound regime: below it
a bigger model costs almost nothing more, above it time grows with the FLOPs. Memory: peak RSS
of a fresh process training 784-W-W-10 with Adam, and the device's peak bytes on a GPU.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

import numpy as np

from benchmarks.common import Mode
from benchmarks.environment import clean_environment

IMPLEMENTATIONS = ("autodiff", "backprop", "numpy")
SWEEP_KEYS = {
    "width": lambda row: int(row["architecture"].split("-")[1]),
    "depth": lambda row: len(row["architecture"].split("-")) - 2,
    "batch": lambda row: row["batch"],
}


def fit_overhead(flops: np.ndarray, seconds: np.ndarray) -> dict[str, float] | None:
    """Least-squares t = t0 + flops / rate, each point weighted by 1 / t (relative error)."""
    if len(flops) < 3:
        return None
    design = np.stack([np.ones_like(flops), flops], axis=1) / seconds[:, None]
    (t0, inverse_rate), *_ = np.linalg.lstsq(design, np.ones_like(seconds), rcond=None)
    if inverse_rate <= 0:
        return None
    t0 = max(float(t0), 0.0)
    return {
        "overhead_s": t0,
        "flop_per_s": 1.0 / float(inverse_rate),
        "crossover_flops": t0 / float(inverse_rate),
    }


def crossovers(gradient_speed: dict[str, Any]) -> dict[str, Any]:
    result = {}
    for sweep, rows in gradient_speed.get("sweeps", {}).items():
        values = [SWEEP_KEYS[sweep](row) for row in rows]
        flops = np.array([row["matmul_flops"] for row in rows], float)
        result[sweep] = {}
        for name in IMPLEMENTATIONS:
            seconds = np.array([row[name]["median_s"] for row in rows], float)
            fit = fit_overhead(flops, seconds)
            if fit is None:
                result[sweep][name] = None
                continue
            # The sweep value where the work term reaches the overhead (log-interpolated).
            crossing = None
            if flops[0] < fit["crossover_flops"] <= flops[-1]:
                crossing = float(
                    np.exp(np.interp(np.log(fit["crossover_flops"]), np.log(flops), np.log(values)))
                )
            result[sweep][name] = {**fit, "crossover_at": crossing}
    return result


def probe(width: int, steps: int = 3) -> dict[str, Any]:
    """Run :mod:`benchmarks.memory_probe` in a fresh process (its own memory high-water mark)."""
    command = [sys.executable, "-m", "benchmarks.memory_probe", str(width), "128", str(steps)]
    completed = subprocess.run(
        command,
        capture_output=True,
        text=True,
        env=clean_environment(dict(os.environ)),
        timeout=300,
    )
    if completed.returncode != 0:
        return {"width": width, "error": completed.stderr.strip().splitlines()[-1][-300:]}
    return json.loads(completed.stdout.strip().splitlines()[-1])


def memory(mode: Mode) -> list[dict[str, Any]]:
    widths = (256,) if mode.quick else (256, 1024, 4096, 8192)
    rows = []
    for width in widths:
        rows.append(probe(width))
        if "error" not in rows[-1]:
            print(
                f"  memory 784-{width}-{width}-10: peak RSS {rows[-1]['peak_rss_mib']:.0f} MiB",
                flush=True,
            )
    return rows


def verify_width(estimate: dict[str, Any]) -> dict[str, Any]:
    """Train at the estimated largest width, stepping down 10% at a time until it fits."""
    tries = []
    width = estimate["largest_width"]
    for _ in range(4):
        row = probe(width, steps=2)
        fits = "error" not in row
        tries.append(
            {
                "width": width,
                "fits": fits,
                **(
                    {"device_peak_mib": row["device_peak_mib"]} if fits else {"error": row["error"]}
                ),
            }
        )
        print(f"  width {width}: {'fits' if fits else 'out of memory'}", flush=True)
        if fits:
            return {"largest_verified_width": width, "tries": tries}
        width = int(width * 0.9)
    return {"largest_verified_width": None, "tries": tries}


def largest_device_width(rows: list[dict[str, Any]], examples: int = 60_000) -> dict | None:
    """On a GPU: the widest 784-W-W-10 whose Adam state, activations and a 60000 x 784 float32
    dataset fit the device, from a linear fit of peak bytes against the parameter count."""
    points = [row for row in rows if row.get("device_peak_mib") and row.get("device_limit_mib")]
    if len(points) < 2:
        return None
    parameters = np.array([row["parameters"] for row in points], float)
    peaks = np.array([row["device_peak_mib"] for row in points], float) * 2**20
    slope, intercept = np.polyfit(parameters, peaks, 1)
    budget = points[0]["device_limit_mib"] * 2**20 - examples * 785 * 4 - intercept
    # parameters(W) = W^2 + W * (784 + 1 + 10 + 1) + 10: solve for W.
    max_parameters = budget / slope
    width = int((-796 + np.sqrt(796**2 + 4 * (max_parameters - 10))) / 2)
    return {
        "bytes_per_parameter": float(slope),
        "fixed_bytes": float(intercept),
        "largest_width": width,
        "note": "extrapolated from the measured widths",
    }


def run(mode: Mode, *, results: dict[str, Any] | None = None, **_: Any) -> dict[str, Any]:
    gradient_speed = (results or {}).get("sections", {}).get("gradient_speed") or {}
    rows = memory(mode)
    estimate = largest_device_width(rows)
    if estimate is not None and not mode.quick:
        estimate.update(verify_width(estimate))
    return {
        "crossovers": crossovers(gradient_speed),
        "memory": rows,
        "largest_device_width": estimate,
    }
