"""``python -m benchmarks``: re-execute without the BLAS overrides, then run the suite."""

import sys

from benchmarks.environment import reexec_without_blas_overrides

if __name__ == "__main__":
    reexec_without_blas_overrides()
    from benchmarks.cli import main

    sys.exit(main())
