"""Run the suite without the BLAS overrides this kind of machine sets.

OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE pin OpenBLAS to a conservative kernel and cache size,
which makes NumPy's and PyTorch's matrix products about three times slower. They are read once,
when the BLAS library loads, so they must be gone before NumPy is imported: the process replaces
itself with a copy whose environment lacks them, and records what it removed. This module
imports only the standard library, so it is safe to import first.
"""

from __future__ import annotations

import json
import os
import sys

BLAS_OVERRIDES = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
REMOVED_VARIABLE = "JAXMLP_BENCH_REMOVED_ENV"


def clean_environment(environment: dict[str, str]) -> dict[str, str]:
    """A copy of ``environment`` without the BLAS overrides (for subprocesses too)."""
    return {key: value for key, value in environment.items() if key not in BLAS_OVERRIDES}


def reexec_without_blas_overrides(module: str = "benchmarks") -> None:
    """If a BLAS override is set, replace this process with ``python -m module`` without it."""
    present = {name: os.environ[name] for name in BLAS_OVERRIDES if name in os.environ}
    if not present:
        return
    if "numpy" in sys.modules:
        raise RuntimeError("the BLAS environment must be cleaned before NumPy is imported")
    environment = clean_environment(dict(os.environ))
    environment[REMOVED_VARIABLE] = json.dumps(present)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, "-m", module, *sys.argv[1:]], environment)


def removed_overrides() -> dict[str, str]:
    """The overrides the re-execution removed (empty if none were set)."""
    return json.loads(os.environ.get(REMOVED_VARIABLE, "{}"))
