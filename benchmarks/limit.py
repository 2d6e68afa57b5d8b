"""Section 4: how close training gets to the hardware's limit.

Two references, both measured in this run on this device:

* the peak: the best FLOP/s of a large square float32 matmul (1024 .. 4096);
* the floor of a training step: the time of its matrix products alone, each timed at the step's
  own shapes (forward a @ W, backward a.T @ delta and delta @ W.T) and summed.

Each product is timed inside one compiled ``lax.scan`` of many repetitions, so no dispatch
overhead is counted. An ``optimization_barrier`` makes every repetition's operands opaque to
the compiler; without it XLA would hoist the loop-invariant product out of the loop. The
efficiency of an epoch is floor / measured time (1.0 = nothing but matmuls at their own speed).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from jax import lax

from benchmarks.common import Mode, matmul_shapes, sizes_label
from benchmarks.throughput import FULL_CONFIGS, QUICK_CONFIGS, config_name
from benchmarks.timing import compile_seconds, measure

# Contraction dimension numbers for the three roles, with the operands as the step holds them:
# forward a (B, n_in) @ W (n_in, n_out); weight gradient a (B, n_in), delta (B, n_out) -> a.T @
# delta; input gradient delta (B, n_out), W (n_in, n_out) -> delta @ W.T.
FORWARD = (((1,), (0,)), ((), ()))
WEIGHT_GRADIENT = (((0,), (0,)), ((), ()))
INPUT_GRADIENT = (((1,), (1,)), ((), ()))


def _operands(role: str, m: int, k: int, n: int):
    """Operand shapes and dimension numbers for an (m, k) @ (k, n) product of this role."""
    if role.startswith("fwd"):
        return (m, k), (k, n), FORWARD
    if "a.T@delta" in role:
        return (k, m), (k, n), WEIGHT_GRADIENT  # a (B, n_in), delta (B, n_out)
    return (m, k), (n, k), INPUT_GRADIENT  # delta (B, n_out), W (n_in, n_out)


def time_matmul(
    lhs_shape, rhs_shape, dims, flops: int, mode: Mode, dtype=jnp.float32
) -> dict[str, Any]:
    """Seconds per product, from a scan of repetitions (about 20 ms of work per call)."""
    repetitions = int(min(max(2e9 / max(flops, 1), 4), 2000))
    if mode.quick:
        repetitions = max(repetitions // 4, 2)
    keys = jax.random.split(jax.random.key(0))
    lhs = jax.random.normal(keys[0], lhs_shape, dtype)
    rhs = jax.random.normal(keys[1], rhs_shape, dtype)
    out_shape = jax.eval_shape(lambda a, b: lax.dot_general(a, b, dims), lhs, rhs)

    def body(carry, _):
        lhs, rhs, _ = carry
        out = lax.dot_general(lhs, rhs, dims)
        return lax.optimization_barrier((lhs, rhs, out)), None

    @jax.jit
    def repeat(lhs, rhs):
        initial = (lhs, rhs, jnp.zeros(out_shape.shape, out_shape.dtype))
        return lax.scan(body, initial, None, length=repetitions)[0][2]

    compiled, _ = compile_seconds(repeat, lhs, rhs)
    timing = measure(
        lambda: compiled(lhs, rhs), repeats=mode.repeats, min_repeat_s=0.0, budget_s=mode.budget_s
    )
    seconds = timing["median_s"] / repetitions
    return {
        "seconds": seconds,
        "flops": flops,
        "flop_per_s": flops / seconds,
        "repetitions": repetitions,
    }


def peak(mode: Mode) -> dict[str, Any]:
    sizes = (1024,) if mode.quick else (1024, 2048, 4096)
    rows = {}
    for n in sizes:
        rows[str(n)] = time_matmul((n, n), (n, n), FORWARD, 2 * n**3, mode)
        print(f"  {n}^3 matmul: {rows[str(n)]['flop_per_s'] / 1e9:.1f} GFLOP/s", flush=True)
    best = max(rows.values(), key=lambda row: row["flop_per_s"])
    return {"sizes": rows, "best_flop_per_s": best["flop_per_s"]}


def floor(sizes, batch: int, mode: Mode) -> dict[str, Any]:
    """Sum of the step's matmul times at its own shapes."""
    products = []
    for role, m, k, n in matmul_shapes(sizes, batch):
        lhs, rhs, dims = _operands(role, m, k, n)
        products.append(
            {
                "role": role,
                "m": m,
                "k": k,
                "n": n,
                **time_matmul(lhs, rhs, dims, 2 * m * k * n, mode),
            }
        )
    step = sum(product["seconds"] for product in products)
    return {
        "architecture": sizes_label(sizes),
        "batch": batch,
        "step_floor_s": step,
        "step_flops": sum(product["flops"] for product in products),
        "products": products,
    }


def efficiency(
    throughput_config: dict[str, Any], floor_result: dict[str, Any], peak_flop_per_s: float
) -> dict[str, Any]:
    """Per implementation: floor time / epoch time, model FLOP/s and its fraction of the peak."""
    rows = {}
    per_example_floor = floor_result["step_floor_s"] / throughput_config["batch"]
    per_example_flops = floor_result["step_flops"] / throughput_config["batch"]
    for name, row in throughput_config["implementations"].items():
        if "epoch_s" not in row:
            continue
        floor_s = per_example_floor * row["examples"]
        flop_per_s = per_example_flops * row["examples"] / row["epoch_s"]
        rows[name] = {
            "epoch_s": row["epoch_s"],
            "floor_s": floor_s,
            "efficiency": floor_s / row["epoch_s"],
            "model_flop_per_s": flop_per_s,
            "fraction_of_peak": flop_per_s / peak_flop_per_s,
        }
    return rows


def run(mode: Mode, *, results: dict[str, Any] | None = None, **_: Any) -> dict[str, Any]:
    peak_result = peak(mode)
    throughput = ((results or {}).get("sections", {}).get("throughput") or {}).get("configs", [])
    configs = QUICK_CONFIGS if mode.quick else FULL_CONFIGS
    floors, table = {}, []
    for sizes, batch, optimizer, _ in configs:
        key = f"{sizes_label(sizes)} b{batch}"
        if key not in floors:
            floors[key] = floor(sizes, batch, mode)
            print(f"  floor {key}: {floors[key]['step_floor_s'] * 1e3:.3f} ms/step", flush=True)
        measured = next(
            (c for c in throughput if c["name"] == config_name(sizes, batch, optimizer)), None
        )
        if measured is not None:
            table.append(
                {
                    "config": measured["name"],
                    "implementations": efficiency(
                        measured, floors[key], peak_result["best_flop_per_s"]
                    ),
                }
            )
    goal: dict[str, Any] = {"config": "784-1024-1024-10 b128 sgd", "required_efficiency": 0.9}
    for row in table:
        if row["config"] == goal["config"] and "jaxmlp" in row["implementations"]:
            goal["efficiency"] = row["implementations"]["jaxmlp"]["efficiency"]
            goal["met"] = goal["efficiency"] >= 0.9
    return {"peak": peak_result, "floors": floors, "efficiency": table, "goal": goal}
