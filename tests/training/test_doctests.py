"""The examples in the docstrings of training's data, kernels and engine modules run as written
(``doctest``); the engine's trains four tiny models, about a second."""
import doctest
import importlib

import pytest


@pytest.mark.parametrize("name", ["training.data", "training.kernels", "training.engine"])
def test_doctests(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module)
    assert result.attempted > 0 and result.failed == 0, result
