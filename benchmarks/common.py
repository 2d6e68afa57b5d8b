"""Settings and inputs shared by the sections: the run mode and the synthetic MNIST-sized data."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import jax
import numpy as np


@dataclasses.dataclass(frozen=True)
class Mode:
    """How thorough a run is. ``quick`` is the CI smoke test; ``full`` the published figures."""

    name: str
    repeats: int  # timing repeats per figure (median taken)
    min_repeat_s: float  # each repeat lasts at least this long
    budget_s: float  # rough cap on the seconds one figure may take
    epoch_examples: int  # examples in one "epoch" of the throughput section
    epoch_repeats: int  # timed epochs per implementation (after one warm-up epoch)

    @property
    def quick(self) -> bool:
        return self.name == "quick"


QUICK = Mode(
    "quick", repeats=3, min_repeat_s=0.01, budget_s=0.3, epoch_examples=3_200, epoch_repeats=1
)
FULL = Mode(
    "full", repeats=7, min_repeat_s=0.05, budget_s=2.0, epoch_examples=60_000, epoch_repeats=3
)


def synthetic_mnist(
    n: int, features: int = 784, classes: int = 10, seed: int = 0, dtype=np.float32
) -> tuple[np.ndarray, np.ndarray]:
    """MNIST-shaped inputs: pixels uniform in [0, 1), labels uniform over the classes.

    Speed does not depend on the values, so random data stands in for MNIST and every
    implementation sees the very same arrays.
    """
    rng = np.random.default_rng(seed)
    x = rng.random((n, features), dtype=np.float64).astype(dtype)
    y = rng.integers(0, classes, n).astype(np.int32)
    return x, y


def sizes_label(sizes: Sequence[int]) -> str:
    """``784-256-256-10``."""
    return "-".join(str(size) for size in sizes)


def matmul_shapes(sizes: Sequence[int], batch: int) -> list[tuple[str, int, int, int]]:
    """The matrix products of one training step as (role, m, k, n) for an (m,k) @ (k,n) product.

    Forward: a @ W per layer. Backward: a.T @ delta per layer (the weight gradient) and
    delta @ W.T per layer but the first (the input needs no gradient).
    """
    shapes = []
    for index, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        shapes.append((f"fwd a@W{index + 1}", batch, n_in, n_out))
        shapes.append((f"bwd a.T@delta{index + 1}", n_in, batch, n_out))
        if index > 0:
            shapes.append((f"bwd delta@W{index + 1}.T", batch, n_out, n_in))
    return shapes


def step_flops(sizes: Sequence[int], batch: int) -> int:
    """Matmul FLOPs (2 m k n each) of one forward + backward step."""
    return sum(2 * m * k * n for _, m, k, n in matmul_shapes(sizes, batch))


def device_memory() -> dict | None:
    """The first device's memory statistics (GPU / TPU); None on CPU."""
    stats = jax.devices()[0].memory_stats()
    if not stats:
        return None
    return {
        key: stats[key]
        for key in ("bytes_in_use", "peak_bytes_in_use", "bytes_limit")
        if key in stats
    }
