"""Docstring examples of the pure modules are tests too."""

import doctest

import pytest

from ja4_core import ensemble, features, logs
from ja4_core import kafka_admin as topics
from ja4_dev import demo
from stream_scorer import output_producer


@pytest.mark.parametrize("module", [ensemble, features, logs, topics, output_producer, demo])
def test_doctests(module) -> None:
    result = doctest.testmod(module)
    assert result.attempted > 0 and result.failed == 0
