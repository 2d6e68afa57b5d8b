"""The examples in the docstrings (``>>>`` lines of their ``Examples:`` sections) run as written:
each module of the package is one test, tiny shapes on the CPU, and the printed output must match.
"""

import doctest
import importlib
import pkgutil

import pytest

import jaxmlp


def _modules() -> list[str]:
    names = [m.name for m in pkgutil.walk_packages(jaxmlp.__path__, "jaxmlp.")]
    return ["jaxmlp"] + [name for name in names if name != "jaxmlp.__main__"]  # that one runs


def _with_examples() -> list[str]:
    finder = doctest.DocTestFinder()
    found = []
    for name in _modules():
        module = importlib.import_module(name)
        if any(test.examples for test in finder.find(module, name)):
            found.append(name)
    return found


MODULES = _with_examples()


def test_the_main_functions_have_examples():
    for name in ("jaxmlp.model", "jaxmlp.losses", "jaxmlp.backprop", "jaxmlp.training._fit"):
        assert name in MODULES


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE, verbose=False)
    assert result.attempted > 0
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples in {name} failed"
