"""Test-wide settings: silent broadcasting between arrays of different ranks is an error here.

(Strict dtype promotion is not switched on: optax's own updates mix Python floats with int32
step counts, which that mode rejects.)
"""

import os

import jax
import pytest
from cli_support import require_mnist

jax.config.update("jax_numpy_rank_promotion", "raise")

# The command's persistent compilation cache is process-wide: tests keep it off, so that no test
# depends on what an earlier one compiled; tests/test_compilation_cache.py turns it on.
os.environ.setdefault("JAXMLP_COMPILATION_CACHE", "0")


@pytest.fixture
def needs_data():
    """Skip the test when the real MNIST files are not there (fail, under JAXMLP_REQUIRE_DATA)."""
    require_mnist()


@pytest.fixture
def x64():
    """Run a test with 64-bit floats enabled (for gradient checks to 1e-10)."""
    with jax.enable_x64(True):
        yield
