"""Docstring examples of the pure modules are tests too."""

import doctest

import pytest

from stream_scorer import parsing

from ja4_core import ensemble

from ja4_core import logs

from ja4_core import kafka_admin as topics


@pytest.mark.parametrize("module", [ensemble, parsing, logs, topics])
def test_doctests(module) -> None:
    result = doctest.testmod(module)
    assert result.failed == 0
