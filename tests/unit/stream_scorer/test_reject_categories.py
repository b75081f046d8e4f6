"""A DLQ category carried on the reject itself (issue 14), set where the reject is made.

On c6ab0d5 a reject had only its text and ``metrics.dlq_category`` parsed it again: an envelope
over ``SCORER_MAX_ENVELOPE_RECORDS`` was counted as ``not_object`` and a bad ``window_start`` as
``missing_key``.
"""

from __future__ import annotations

import typing

import orjson
import pytest

from stream_scorer import metrics
from stream_scorer.parsing import RejectCategory, parse_batch

KEY = {"window_start": "2026-11-24T21:00:00Z", "src_ip": "10.0.0.1", "ja4": "t13d", "host": "a.example"}

CASES = [
    (None, "empty"),
    (b"[]", "empty"),
    (b"{not json", "invalid_json"),
    (b"42", "not_object"),
    (b"[1]", "not_object"),
    (orjson.dumps([KEY] * 3), "envelope_too_large"),
    (orjson.dumps({**KEY, "host": ""}), "missing_key"),
    (orjson.dumps({k: v for k, v in KEY.items() if k != "ja4"}), "missing_key"),
    (orjson.dumps({**KEY, "src_ip": 7}), "missing_key"),
    (orjson.dumps({**KEY, "window_start": "yesterday"}), "bad_window_start"),
    (orjson.dumps({**KEY, "window_start": 1e300}), "bad_window_start"),
    (orjson.dumps([KEY, {**KEY, "window_start": -5}]), "bad_window_start"),
]


@pytest.mark.parametrize(("value", "category"), CASES)
def test_each_reject_carries_its_category(value, category):
    (rej,) = parse_batch([value], ["hits"], max_envelope_records=2).rejects
    assert rej.category == category
    assert rej.category in typing.get_args(RejectCategory)


def test_the_metric_no_longer_parses_reason_text():
    assert not hasattr(metrics, "dlq_category")
