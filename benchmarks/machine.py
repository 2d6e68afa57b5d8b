"""What the numbers were measured on: CPU, cores, memory, load, library versions, BLAS kernel."""

from __future__ import annotations

import datetime
import os
import platform
import re
import sys
from typing import Any

import jax
import numpy as np

from benchmarks.environment import BLAS_OVERRIDES, removed_overrides


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _memory_gib() -> float | None:
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemTotal"):
                    return round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    return None


def _blas_info() -> list[dict[str, Any]]:
    """The BLAS libraries loaded now and the kernel (architecture) each picked."""
    try:
        import threadpoolctl
    except ImportError:
        return [{"note": "threadpoolctl not installed; kernel unknown"}]
    return [
        {
            key: entry.get(key)
            for key in ("internal_api", "version", "architecture", "num_threads", "filepath")
        }
        for entry in threadpoolctl.threadpool_info()
    ]


def torch_info() -> dict[str, Any] | None:
    try:
        import torch
    except ImportError:
        return None
    return {
        "version": torch.__version__,
        "threads": torch.get_num_threads(),
        "mkldnn": torch.backends.mkldnn.is_available(),
    }


def describe() -> dict[str, Any]:
    """A JSON-able description of the machine and software, taken when the run starts."""
    device = jax.devices()[0]
    removed = removed_overrides()
    still_set = {name: os.environ[name] for name in BLAS_OVERRIDES if name in os.environ}
    return {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "memory_gib": _memory_gib(),
        "load_average_at_start": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "jax": jax.__version__,
        "jaxlib": getattr(jax.lib, "__version__", None) or _jaxlib_version(),
        "backend": jax.default_backend(),
        "device": str(device),
        "device_kind": device.device_kind,
        "device_count": jax.device_count(),
        "numpy": np.__version__,
        "xla_flags": os.environ.get("XLA_FLAGS"),
        "blas_env_removed": removed,
        "blas_env_still_set": still_set,
        "blas": _blas_info(),
    }


def _jaxlib_version() -> str | None:
    try:
        import jaxlib

        return jaxlib.__version__
    except (ImportError, AttributeError):
        return None


def slug(description: dict[str, Any]) -> str:
    """``<machine>`` for file names: the accelerator or CPU model, the core count, the backend."""
    if description["backend"] == "cpu":
        name = description["cpu"]
    else:
        name = description["device_kind"]
    name = re.sub(r"\(r\)|\(tm\)|cpu|processor|\d+-core", "", name, flags=re.IGNORECASE)
    name = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
    return f"{name}-{description['cores']}c-{description['backend']}"
