"""Timing helpers shared by every section.

Rules: warm-up calls are never timed; compile time is measured apart (``jit(f).lower().compile()``);
every timed call ends with ``jax.block_until_ready`` so asynchronous dispatch cannot hide work;
a figure is the median over repeats, each repeat long enough to swamp the clock's resolution.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

import jax


def block(value: Any) -> Any:
    """Wait for every JAX array in ``value``; NumPy and PyTorch results are already done."""
    return jax.block_until_ready(value)


def summarise(seconds: list[float], number: int) -> dict[str, float | int]:
    """Median, min and max of per-call times (each repeat divided by its call count)."""
    return {
        "median_s": statistics.median(seconds),
        "min_s": min(seconds),
        "max_s": max(seconds),
        "repeats": len(seconds),
        "calls_per_repeat": number,
    }


def measure(
    call: Callable[[], Any],
    *,
    repeats: int = 7,
    min_repeat_s: float = 0.05,
    budget_s: float = 3.0,
    warmup: int = 1,
    sync: Callable[[Any], Any] = block,
) -> dict[str, float | int]:
    """Per-call seconds of ``call()`` (synchronised after every call), median over repeats.

    The number of calls per repeat grows until a repeat lasts ``min_repeat_s``; fewer repeats
    (at least three) are taken when a single call is slow, so one figure costs about
    ``budget_s`` at most.
    """
    for _ in range(warmup):
        sync(call())

    def run(number: int) -> float:
        start = time.perf_counter()
        for _ in range(number):
            sync(call())
        return time.perf_counter() - start

    number = 1
    elapsed = run(number)
    while elapsed < min_repeat_s:
        number = max(2 * number, int(number * min_repeat_s / max(elapsed, 1e-7)) + 1)
        elapsed = run(number)
    repeats = max(3, min(repeats, int(budget_s / elapsed)))
    seconds = [elapsed / number] + [run(number) / number for _ in range(repeats - 1)]
    return summarise(seconds, number)


def compile_seconds(function: Callable, *args: Any, **kwargs: Any) -> tuple[Callable, float]:
    """Lower and compile a jitted ``function`` for these arguments; (executable, seconds)."""
    start = time.perf_counter()
    compiled = function.lower(*args, **kwargs).compile()
    return compiled, time.perf_counter() - start
