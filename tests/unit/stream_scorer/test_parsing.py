"""Parsing: message bytes -> records, feature matrix and DLQ rejects (stream_scorer.parsing).

The contract's input rules, one behaviour per test, plus property tests: no input makes
``parse_batch`` raise, and every message is accounted for (scored records or rejects).
"""

from __future__ import annotations

import json
import math
import re

import numpy as np
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ja4_core.features import CONTEXT_FIELDS, KEY_FIELDS
from stream_scorer.parsing import ParsedBatch, Reject, parse_batch

FEATURES = ("hits", "post_ratio", "header_count")
KEYS = {"window_start": "2026-11-24T21:00:00Z", "src_ip": "10.0.0.1", "ja4": "t13d1516h2_8daaf6152771_02713d6af862",
        "host": "www.example.com"}


_DROP = object()


def rec(**overrides):
    """A valid record with all three features, overridable (None value = remove the field)."""
    base = {**KEYS, "hits": 12, "post_ratio": 0.25, "header_count": 9}
    for k, v in overrides.items():
        if v is _DROP:
            base.pop(k, None)
        else:
            base[k] = v
    return base


def dumps(obj) -> bytes:
    return orjson.dumps(obj)


def parse(*values, features=FEATURES) -> ParsedBatch:
    return parse_batch(list(values), features)


# --- well-formed input ---------------------------------------------------------------------

def test_single_object_gives_one_row_in_feature_order():
    out = parse(dumps(rec()))
    assert len(out) == 1 and out.rejects == []
    assert out.X.dtype == np.float64
    assert out.X.tolist() == [[12.0, 0.25, 9.0]]
    assert out.message_index == [0]
    assert out.records == [KEYS]


def test_columns_follow_the_requested_feature_order():
    out = parse(dumps(rec()), features=tuple(reversed(FEATURES)))
    assert out.X.tolist() == [[9.0, 0.25, 12.0]]


def test_envelope_gives_one_row_per_record_in_order():
    recs = [rec(src_ip=f"10.0.0.{i}", hits=i) for i in range(5)]
    out = parse(dumps(rec(src_ip="9.9.9.9")), dumps(recs))
    assert out.rejects == []
    assert [r["src_ip"] for r in out.records] == ["9.9.9.9"] + [f"10.0.0.{i}" for i in range(5)]
    assert out.message_index == [0, 1, 1, 1, 1, 1]
    assert out.X[:, 0].tolist() == [12.0, 0.0, 1.0, 2.0, 3.0, 4.0]


def test_empty_batch_gives_an_empty_matrix_with_the_feature_width():
    out = parse()
    assert out.X.shape == (0, len(FEATURES)) and out.records == [] and out.rejects == []


def test_extra_fields_are_ignored():
    out = parse(dumps(rec(label="bot", bot_kind="scraper", unused_feature=5, nested={"a": [1, 2]})))
    assert out.records == [KEYS]
    assert out.X.shape == (1, 3)


def test_context_fields_are_passed_through_unchanged():
    ctx = {"asn_number": 16509, "country_code": "US", "browser_family": "Chrome", "bot_name": "Googlebot"}
    out = parse(dumps(rec(**ctx)))
    assert out.records == [{**KEYS, **ctx}]
    assert set(CONTEXT_FIELDS) == set(ctx)


def test_only_the_context_fields_present_are_passed_through():
    out = parse(dumps(rec(country_code="DE")))
    assert out.records == [{**KEYS, "country_code": "DE"}]


@pytest.mark.parametrize("epoch", [1764018000, 1764018000.5, 0])
def test_window_start_as_epoch_seconds_is_accepted(epoch):
    out = parse(dumps(rec(window_start=epoch)))
    assert out.rejects == [] and out.records[0]["window_start"] == epoch


def test_window_start_checks_remembered_in_a_batch_give_each_record_its_own_outcome():
    """The batch remembers each window_start's check (records share a few windows): a record's
    outcome must still be the one it gets alone, whatever came before it in the batch."""
    starts = [1, True, 1764018000, True, 1764018000, "2026-11-24T21:00:00Z", "nope", "nope", [1], [1], 1e300, 1764018000.0,
              "2026-11-24T21:00:00Z", True, "1764018000"]
    envelope = dumps([rec(window_start=v) for v in starts])
    together = parse(envelope)
    alone = [parse(dumps(rec(window_start=v))) for v in starts]
    assert [r.reason.split(": ", 1)[1] for r in together.rejects] == [a.rejects[0].reason for a in alone if a.rejects]
    assert [r.record_index for r in together.rejects] == [i for i, a in enumerate(alone) if a.rejects]
    assert together.records == [a.records[0] for a in alone if not a.rejects]


# --- feature values: the imputation policy ---------------------------------------------------

@pytest.mark.parametrize("value, expected", [
    (_DROP, math.nan),          # missing
    (None, math.nan),           # null
    ("12", math.nan),           # numeric string: "non-numeric" per the contract, imputed
    ("abc", math.nan),
    ([1, 2], math.nan),
    ({"v": 1}, math.nan),
    (True, 1.0),                # booleans count as 0/1 (module docstring)
    (False, 0.0),
    (7, 7.0),
    (-3.5, -3.5),
    (2 ** 64 - 1, float(2 ** 64 - 1)),
])
def test_feature_value_becomes_a_number_or_nan(value, expected):
    out = parse(dumps(rec(hits=value)) if value is not _DROP else dumps(rec(hits=_DROP)))
    assert out.rejects == [] and len(out) == 1
    got = out.X[0, 0]
    if math.isnan(expected):
        assert math.isnan(got)
    else:
        assert got == expected
    assert out.X[0, 1:].tolist() == [0.25, 9.0]  # the other features are untouched


def test_integer_beyond_64_bits_is_a_finite_number():
    value = b'{"window_start":"2026-11-24T21:00:00Z","src_ip":"i","ja4":"j","host":"h","hits":' + b"9" * 30 + b"}"
    out = parse(value)
    assert out.rejects == [] and out.X[0, 0] == pytest.approx(1e30)


@pytest.mark.parametrize("literal", [b"1e400", b"-1e400", b"NaN", b"Infinity", b"-Infinity"],
                         ids=["1e400", "-1e400", "NaN", "Infinity", "-Infinity"])
def test_non_finite_feature_value_is_imputed_not_rejected(literal):
    value = b'{"window_start":"2026-11-24T21:00:00Z","src_ip":"i","ja4":"j","host":"h","hits":' + literal + b',"post_ratio":0.5}'
    out = parse(value)
    assert out.rejects == []
    assert len(out) == 1 and math.isnan(out.X[0, 0]) and out.X[0, 1] == 0.5


def test_non_finite_number_never_crashes_and_spares_other_messages():
    """Whatever the policy for 1e400, the batch goes on and other messages are parsed."""
    bad = b'{"window_start":"2026-11-24T21:00:00Z","src_ip":"i","ja4":"j","host":"h","hits":1e400}'
    out = parse(bad, dumps(rec()))
    assert out.message_index[-1:] == [1] and out.records[-1] == KEYS
    assert not np.isinf(out.X).any()
    assert len(out.rejects) + len(out) == 2


def test_python_json_dumps_with_nan_never_crashes():
    out = parse(json.dumps(rec(hits=float("nan"))).encode(), dumps(rec()))
    assert 1 in out.message_index
    assert not np.isinf(out.X).any()


# --- whole-message rejects -------------------------------------------------------------------

@pytest.mark.parametrize("value, reason_start", [
    (b"{not json", "not valid JSON"),
    (b'{"window_start": "w", "src_ip": "i", ', "not valid JSON"),
    (b"", "not valid JSON"),
    (b'{"src_ip": "\xff\xfe", "ja4": "j"}', "not valid JSON"),       # invalid UTF-8
    (b"\xef\xbb\xbf" + b"{}", None),                                     # BOM: refused one way or another
    (b"42", "not a JSON object"),
    (b"4.5", "not a JSON object"),
    (b'"a string"', "not a JSON object"),
    (b"null", "not a JSON object"),
    (b"true", "not a JSON object"),
    (b"[]", "empty array"),
], ids=["garbage", "truncated", "empty-bytes", "bad-utf8", "bom", "int", "float", "string", "null", "bool",
        "empty-array"])
def test_unusable_message_is_rejected_whole_with_its_original_bytes(value, reason_start):
    out = parse(value, dumps(rec()))
    assert out.message_index == [1], "the good message after it must still be parsed"
    assert len(out.rejects) == 1
    rej = out.rejects[0]
    assert rej.message_index == 0 and rej.value == value and rej.record_index is None
    if reason_start is not None:
        assert rej.reason.startswith(reason_start), rej.reason
    assert "\n" not in rej.reason  # goes into a one-line Kafka header


def test_message_without_value_is_rejected():
    out = parse(None, dumps(rec()))
    assert out.message_index == [1]
    assert out.rejects == [Reject(0, b"", "empty message (no value)", category="empty")]


def test_invalid_json_reason_is_short():
    out = parse(b"{" + b"x" * 100_000)
    assert len(out.rejects[0].reason) < 300


# --- records missing key fields --------------------------------------------------------------

_BAD_KEYS = {"missing": _DROP, "null": None, "empty": "", "int": 5, "bool": True, "list": [], "dict": {}}


@pytest.mark.parametrize("key, bad", [
    pytest.param(key, bad, id=f"{key}-{name}") for key in KEY_FIELDS for name, bad in _BAD_KEYS.items()
    if not (key == "window_start" and name == "int")  # epoch seconds are a valid window_start
])
def test_single_record_with_a_bad_key_field_is_rejected_with_original_bytes(key, bad):
    value = dumps(rec(**{key: bad}))
    out = parse(value)
    assert len(out) == 0
    assert len(out.rejects) == 1
    rej = out.rejects[0]
    assert rej.value == value and rej.record_index is None and rej.message_index == 0
    assert repr(key) in rej.reason


def test_envelope_item_missing_a_key_is_rejected_alone_as_its_own_json():
    bad = rec(host=_DROP, src_ip="10.9.9.9")
    items = [rec(src_ip="10.0.0.1"), bad, rec(src_ip="10.0.0.3")]
    value = dumps(items)
    out = parse(dumps(rec(src_ip="1.1.1.1")), value)
    assert [r["src_ip"] for r in out.records] == ["1.1.1.1", "10.0.0.1", "10.0.0.3"]
    assert out.message_index == [0, 1, 1]
    assert len(out.rejects) == 1
    rej = out.rejects[0]
    assert rej.message_index == 1 and rej.record_index == 1
    assert orjson.loads(rej.value) == bad          # the record's own JSON, not the envelope
    assert rej.value != value
    assert "'host'" in rej.reason and "item 1" in rej.reason


@pytest.mark.parametrize("item", [5, "text", None, [1, 2], True], ids=["int", "str", "null", "list", "bool"])
def test_envelope_non_object_item_is_rejected_alone(item):
    out = parse(dumps([rec(src_ip="a"), item, rec(src_ip="c")]))
    assert [r["src_ip"] for r in out.records] == ["a", "c"]
    assert len(out.rejects) == 1
    rej = out.rejects[0]
    assert rej.record_index == 1 and orjson.loads(rej.value) == item
    assert "not a JSON object" in rej.reason


def test_nested_envelope_is_not_flattened():
    out = parse(dumps([[rec()]]))
    assert len(out) == 0 and out.rejects[0].record_index == 0


# --- hostile nesting ---------------------------------------------------------------------------

@pytest.mark.parametrize("depth", [1100, 100_000])
def test_deeply_nested_message_is_rejected_not_a_crash(depth):
    deep_array = b"[" * depth + b"]" * depth
    deep_object = b'{"a":' * depth + b"1" + b"}" * depth
    out = parse(deep_array, deep_object, dumps(rec()))
    assert out.message_index == [2]
    assert {r.message_index for r in out.rejects} == {0, 1}
    assert all(r.record_index is None for r in out.rejects)


def test_deep_but_legal_nesting_in_an_ignored_field_is_fine():
    value = b'{"window_start":"2026-11-24T21:00:00Z","src_ip":"i","ja4":"j","host":"h","junk":' + b"[" * 1000 + b"]" * 1000 + b"}"
    out = parse(value)
    assert len(out) == 1 and out.records == [{"window_start": "2026-11-24T21:00:00Z", "src_ip": "i", "ja4": "j", "host": "h"}]


@pytest.mark.parametrize("where", ["non-object item", "record missing a key"])
def test_deeply_nested_envelope_item_is_rejected_alone(where):
    deep = b"[" * 400 + b"]" * 400
    item = deep if where == "non-object item" else b'{"src_ip":' + deep + b"}"
    value = b"[" + item + b"," + dumps(rec()) + b"]"
    out = parse(value, dumps(rec(src_ip="other")))
    assert [r["src_ip"] for r in out.records] == [KEYS["src_ip"], "other"]
    assert len(out.rejects) == 1 and out.rejects[0].record_index == 0


# --- window_start: ISO-8601 or epoch seconds between 1970 and 2200 (issue 13, item 6) ----------

@pytest.mark.parametrize("value", [
    "2026-11-24T21:00:00Z", "2026-11-24T21:00:00+02:00", "2026-11-24T21:00:00.123456", "2026-11-24 21:00:00",
    "2026-11-24", " 2026-11-24T21:00:00Z ", 1764018000, 1764018000.5, 0, "1764018000", "1764018000.5",
    7258118399, "2199-12-31T23:59:59Z",
])
def test_window_start_iso_or_epoch_in_range_is_scored(value):
    out = parse(dumps(rec(window_start=value)))
    assert out.rejects == [] and out.records[0]["window_start"] == value  # echoed as given


@pytest.mark.parametrize("value", [
    "garbage", 1e300, -1e300, -1, 7258118400, 2**63, "1e300", "2200-01-01T00:00:00Z", "1969-12-31T23:59:59Z",
    "0001-01-01T00:00:00", "9999-12-31T23:59:59+14:00", "nan", "inf", "-5", "2026-13-01", "21:00:00", " ", 1.5e10,
], ids=repr)
def test_window_start_that_is_not_a_time_is_rejected_with_the_reason(value):
    value_bytes = dumps(rec(window_start=value))
    out = parse(value_bytes, dumps(rec()))
    assert out.message_index == [1], "the good message after it is still scored"
    assert len(out.rejects) == 1
    rej = out.rejects[0]
    assert rej.value == value_bytes and rej.record_index is None
    assert "'window_start'" in rej.reason and "\n" not in rej.reason and len(rej.reason) < 300


def test_envelope_item_with_a_bad_window_start_is_rejected_alone():
    items = [rec(src_ip="a"), rec(src_ip="b", window_start="garbage"), rec(src_ip="c", window_start=1e300)]
    out = parse(dumps(items))
    assert [r["src_ip"] for r in out.records] == ["a"]
    assert [r.record_index for r in out.rejects] == [1, 2]
    assert [orjson.loads(r.value) for r in out.rejects] == items[1:]
    assert all("'window_start'" in r.reason for r in out.rejects)


def test_window_start_rule_examples_run() -> None:
    import doctest

    from ja4_core import features

    result = doctest.testmod(features)
    assert result.attempted >= 2 and result.failed == 0


# --- the bound on records per envelope (issue 13, item 5) -------------------------------------

def test_envelope_at_the_bound_is_scored_record_by_record():
    out = parse_batch([dumps([rec(src_ip=f"10.0.0.{i}") for i in range(50)])], FEATURES, max_envelope_records=50)
    assert len(out) == 50 and out.rejects == []


def test_envelope_beyond_the_bound_is_rejected_once_whole_with_its_original_bytes():
    value = dumps([rec(src_ip=f"10.0.0.{i}") for i in range(51)])
    out = parse_batch([value, dumps(rec())], FEATURES, max_envelope_records=50)
    assert out.message_index == [1], "the next message is still scored"
    assert out.rejects == [Reject(0, value, "envelope of 51 records exceeds SCORER_MAX_ENVELOPE_RECORDS (50)",
                                  category="envelope_too_large")]


def test_a_1mb_envelope_of_empty_objects_gives_one_dlq_entry_by_default():
    """The report's case: 333,333 items gave 333,333 DLQ entries and a stall."""
    value = b"[" + b",".join([b"{}"] * 333_333) + b"]"
    assert len(value) == 1_000_000
    out = parse(value)
    assert len(out) == 0 and len(out.rejects) == 1
    assert out.rejects[0].value == value and out.rejects[0].record_index is None
    assert "SCORER_MAX_ENVELOPE_RECORDS (10000)" in out.rejects[0].reason


@settings(max_examples=100, deadline=None)
@given(st.integers(1, 30), st.lists(st.one_of(st.just(rec()), st.just({}), st.integers(-5, 5), st.none()), max_size=60))
def test_no_message_gives_more_dlq_entries_than_the_bound(bound, items):
    value = dumps(items)
    out = parse_batch([value], FEATURES, max_envelope_records=bound)
    assert len(out.rejects) <= bound
    if len(items) > bound:
        assert len(out) == 0 and [r.value for r in out.rejects] == [value]
    else:
        assert len(out) + len(out.rejects) == max(1, len(items))


# --- property tests ----------------------------------------------------------------------------

def _account(values: list[bytes | None], out: ParsedBatch) -> None:
    """Every message is scored records and/or rejects, consistently with what it contains."""
    n = len(values)
    assert out.X.shape == (len(out.records), len(FEATURES))
    assert len(out.message_index) == len(out.records)
    assert out.message_index == sorted(out.message_index), "records keep message order"
    assert not np.isinf(out.X).any(), "non-finite values become NaN, never inf"
    for r in out.records:
        assert set(r) <= set(KEY_FIELDS) | set(CONTEXT_FIELDS)
        assert all(k in r for k in KEY_FIELDS)
    for rej in out.rejects:
        assert 0 <= rej.message_index < n and isinstance(rej.value, bytes)
        assert rej.reason and "\n" not in rej.reason
    for i, value in enumerate(values):
        recs = out.message_index.count(i)
        rejs = [r for r in out.rejects if r.message_index == i]
        assert recs + len(rejs) >= 1, f"message {i} vanished"
        whole = [r for r in rejs if r.record_index is None]
        if whole:
            assert len(rejs) == 1 and recs == 0
            assert whole[0].value == (value or b"")
            continue
        doc = orjson.loads(value)
        if isinstance(doc, dict):
            assert recs == 1 and not rejs
        else:
            assert isinstance(doc, list)
            assert recs + len(rejs) == len(doc)
            idx = [r.record_index for r in rejs]
            assert len(set(idx)) == len(idx) and all(0 <= j < len(doc) for j in idx)
            for r in rejs:
                assert orjson.loads(r.value) == doc[r.record_index]


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.one_of(st.none(), st.binary(max_size=64)), max_size=8))
def test_arbitrary_bytes_never_raise_and_are_accounted_for(values):
    out = parse_batch(values, FEATURES)
    _account(values, out)


_scalars = st.one_of(st.none(), st.booleans(), st.integers(-(2 ** 70), 2 ** 70),
                     st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=8))
_json = st.recursive(_scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                       st.dictionaries(st.text(max_size=6), inner, max_size=4)),
                     max_leaves=12)
_key_value = st.one_of(st.text(max_size=6), st.integers(-5, 2 ** 40), st.floats(allow_nan=False, allow_infinity=False),
                       st.none(), st.booleans())
_record = st.fixed_dictionaries(
    {k: _key_value for k in KEY_FIELDS},
    optional={**{f: _scalars for f in FEATURES}, **{c: _scalars for c in CONTEXT_FIELDS}, "extra": _json})
_message_doc = st.one_of(_record, st.lists(st.one_of(_record, _json), max_size=5), _json)


def _valid(item) -> bool:
    """Independent oracle of the key-field rule: non-empty strings; window_start may be a number."""
    if type(item) is not dict:
        return False
    for k in KEY_FIELDS:
        v = item.get(k)
        if type(v) is str and v:
            continue
        if k == "window_start" and type(v) in (int, float):
            continue
        return False
    return _valid_time(item["window_start"])


def _valid_time(v) -> bool:
    """Independent oracle of the window_start rule: ISO-8601 or epoch seconds in [1970, 2200)."""
    from datetime import datetime, timezone

    if type(v) is str:
        text = v.strip()
        if re.fullmatch(r"[+-]?[0-9]+(\.[0-9]*)?", text):  # epoch seconds as digits
            v = float(text)
        else:
            try:
                dt = datetime.fromisoformat(text[:-1] + "+00:00" if text.endswith(("Z", "z")) else text)
            except ValueError:
                return False
            v = (dt if dt.tzinfo else dt.replace(tzinfo=timezone.utc)).timestamp()
    return 0 <= v < datetime(2200, 1, 1, tzinfo=timezone.utc).timestamp()


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_message_doc, max_size=6))
def test_arbitrary_json_never_raises_and_is_accounted_for(docs):
    values = [json.dumps(d).encode() for d in docs]
    out = parse_batch(values, FEATURES)
    _account(values, out)
    # Exactly the valid records, in order; their features are their numbers (bools as 0/1), NaN otherwise.
    expected = []
    for i, d in enumerate(docs):
        items = [d] if isinstance(d, dict) else (d if isinstance(d, list) else [])
        expected += [(i, item) for item in items if _valid(item)]
    assert out.message_index == [i for i, _ in expected]
    for row, (_, item) in enumerate(expected):
        # Key fields as given; context fields only when they are scalars (nested values and
        # nulls are not passed through to the score record).
        assert out.records[row] == {k: item[k] for k in (*KEY_FIELDS, *CONTEXT_FIELDS)
                                    if k in item and (k in KEY_FIELDS or type(item[k]) in (str, int, float, bool))}
        for j, f in enumerate(FEATURES):
            v = item.get(f)
            got = out.X[row, j]
            if type(v) in (int, float, bool):
                assert got == pytest.approx(float(v), rel=1e-15)
            else:
                assert math.isnan(got)


# -- the whole-batch conversion equals the cell-by-cell meaning --------------------------------

_cells = st.one_of(st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
                   st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=3),
                   st.sampled_from(["1.5", "nan", "1e3"]), st.lists(st.integers(), max_size=2))


@given(st.lists(st.lists(_cells, min_size=3, max_size=3), min_size=1, max_size=20))
def test_batch_conversion_equals_cell_by_cell(rows) -> None:
    from ja4_core.features import feature_matrix as _to_matrix
    from ja4_core.features import feature_value as _as_number

    expected = np.array([[_as_number(v) for v in row] for row in rows], dtype=np.float64)
    np.testing.assert_array_equal(_to_matrix(rows, 3), expected)


def test_batch_conversion_of_plain_numbers_takes_numpys_path() -> None:
    from ja4_core.features import feature_matrix as _to_matrix

    X = _to_matrix([[1, None, True], [2.5, float("inf"), False], [2**64 - 1, -0.0, float("nan")]], 3)
    np.testing.assert_array_equal(X, [[1.0, np.nan, 1.0], [2.5, np.nan, 0.0], [float(2**64 - 1), -0.0, np.nan]])
    assert _to_matrix([], 4).shape == (0, 4)
