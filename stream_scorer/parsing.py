"""Bytes -> validated records -> feature matrix. Pure: no Kafka, no models.

Input contract: a message value is UTF-8 JSON, either one object (one record) or an array
of objects (a batch envelope). :func:`parse_batch` turns the values of a whole batch of
messages into one float64 matrix (rows = records, columns = the bundle's features, NaN
where a value is missing, ``null``, non-numeric or non-finite) plus what is needed to
build the score records, and a list of rejects for the DLQ:

* a message that is not JSON, or not an object/array of objects, is rejected whole and
  dead-lettered with its original bytes;
* an envelope of more than ``max_envelope_records`` items (``SCORER_MAX_ENVELOPE_RECORDS``)
  is rejected whole, once, with its original bytes: so no message ever gives more DLQ
  entries than that bound (a 1 MB ``[{},{},...]`` would otherwise give 333,333);
* a record missing a key field is rejected alone. A single-object message is dead-lettered
  with its original bytes; a bad record inside an envelope is dead-lettered as that
  record's JSON (so replaying the DLQ never duplicates the envelope's good records), with
  its index in the ``source-record-index`` header;
* ``window_start`` must be ISO-8601 text or epoch seconds (a number, or digits as text)
  between 1970 and 2200 (:func:`~ja4_core.features.window_start_seconds`); any other value
  rejects the record alone, like a missing key field.

Every reject carries its :data:`RejectCategory` (the ``error-category`` DLQ header and the
``reason`` label of ``ja4_dlq_total``), set here where the reject is made; ``reason`` is the
one-line text for people.

Feature values follow the product's one missing-value rule,
:func:`ja4_core.features.feature_value` (the trainer's import and both file readers use it
too): a JSON number or boolean (0/1) that is finite as a double is used; anything else --
missing, ``null``, any string (numeric strings too, e.g. ``"1.5"``: the contract says
"non-numeric"), arrays, objects, NaN, infinities, integers beyond a double -- is missing and
imputed. The hot loop is one ``map`` of the record's ``get`` over the feature names per record;
the batch's cells become a matrix in one vectorised call (:func:`ja4_core.features.feature_matrix`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Literal, Sequence

import numpy as np
import orjson

from ja4_core.errors import RecordError
from ja4_core.features import CONTEXT_FIELDS, KEY_FIELDS, feature_matrix, window_start_seconds

_SCALARS = (str, int, float, bool)
#: The default of ``SCORER_MAX_ENVELOPE_RECORDS``: most records one envelope may hold.
DEFAULT_MAX_ENVELOPE_RECORDS = 10_000


#: Why an input was dead-lettered, as a bounded label (DLQ header ``error-category``, metric
#: ``ja4_dlq_total{reason}``). ``empty``: no value or an empty array; ``invalid_json``: not JSON;
#: ``not_object``: JSON but not an object/array of objects (or an envelope item that is not an
#: object); ``envelope_too_large``: more items than ``SCORER_MAX_ENVELOPE_RECORDS``;
#: ``missing_key``: a key field missing, empty or not a string; ``bad_window_start``: a
#: ``window_start`` that is not a time in range; ``oversized``: the score record would not fit a
#: producer request; ``scoring_error``: scoring the batch failed (a model or code bug);
#: ``sink_invalid`` / ``sink_refused``: the sink could not make a row of a score record /
#: ClickHouse refused the row; ``label_invalid``: the sink could not store a label of
#: ``TOPIC_LABELS`` (:mod:`ja4_core.label_record` says why).
RejectCategory = Literal["empty", "invalid_json", "not_object", "envelope_too_large", "missing_key",
                         "bad_window_start", "oversized", "scoring_error", "sink_invalid", "sink_refused",
                         "label_invalid"]


@dataclass(frozen=True)
class Reject:
    """One DLQ entry: which message, the bytes to dead-letter, why (``category`` for programs,
    ``reason`` for people)."""

    message_index: int
    value: bytes
    reason: str
    record_index: int | None = None
    category: RejectCategory = field(kw_only=True)


@dataclass
class ParsedBatch:
    """Records of a batch of messages, in order, ready to score."""

    X: np.ndarray                      #: rows x features, NaN where a value is unusable
    records: list[dict[str, Any]]      #: per row: key and context fields to echo
    message_index: list[int]           #: per row: index of the message it came from
    rejects: list[Reject] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.records)


_INVALID = object()


_INT_MIN, _INT_MAX = -(2**63), 2**64 - 1


def _parse_int(text: str) -> int | float:
    """As orjson reads them: integers beyond 64 bits become floats (inf beyond a double)."""
    n = int(text)
    return n if _INT_MIN <= n <= _INT_MAX else float(text)


def _lenient_loads(value: bytes) -> Any:
    """Second chance for what orjson refuses but producers commonly write: the ``NaN`` and
    ``Infinity`` literals of Python's ``json.dumps`` and numbers beyond a double (``1e400``).
    Such values are then imputed like any non-finite value. Only reached on the error path;
    strict UTF-8, and refused unless orjson can write the result back (lone surrogates)."""
    try:
        doc = json.loads(value.decode("utf-8"), parse_int=_parse_int)
        orjson.dumps(doc)
    except (ValueError, RecursionError, TypeError):  # incl. UnicodeDecodeError, JSONEncodeError
        return _INVALID
    return doc


def _dumps_item(item: Any, envelope: bytes) -> bytes:
    """An envelope item's own JSON for the DLQ; the whole envelope if it cannot be re-encoded
    (orjson refuses to write deeper nesting than it reads)."""
    try:
        return orjson.dumps(item)
    except (orjson.JSONEncodeError, TypeError):
        return envelope


def _window_problem(value: Any, seen: dict[tuple[type, Any], str | None]) -> str | None:
    """Why ``value`` is not a ``window_start``, or None. ``seen`` keeps the answer per (type,
    value) for one batch: its records share a handful of windows, and parsing the same ISO text
    again and again was a fifth of the parse."""
    key = (type(value), value)  # the type too: True == 1, but True is not a time
    try:
        return seen[key]
    except KeyError:
        hashable = True
    except TypeError:  # an array or object: not a time, and nothing to remember it by
        hashable = False
    try:
        window_start_seconds(value)
        problem = None
    except RecordError as exc:
        problem = str(exc)
    if hashable and value == value:  # NaN would never be found again
        seen[key] = problem
    return problem


def _key_problem(rec: dict[str, Any], windows: dict[tuple[type, Any], str | None]) -> tuple[RejectCategory, str] | None:
    """Why a record cannot be keyed, or None. Key fields are non-empty strings (``type(v) is
    str``: a str subclass cannot come out of JSON) and ``window_start`` a time in range
    (``windows``: the batch's answers so far, :func:`_window_problem`)."""
    for name in KEY_FIELDS:
        v = rec.get(name)
        if v is None:
            return "missing_key", f"missing key field {name!r}"
        if type(v) is str and not v:
            return "missing_key", f"empty key field {name!r}"
        if name == "window_start":
            problem = _window_problem(v, windows)
            if problem is not None:
                return "bad_window_start", problem
        elif type(v) is not str:
            return "missing_key", f"key field {name!r} must be a string, got {type(v).__name__}"
    return None


def parse_batch(values: Sequence[bytes | None], features: Sequence[str],
                max_envelope_records: int = DEFAULT_MAX_ENVELOPE_RECORDS) -> ParsedBatch:
    """Parse the values of many messages into one feature matrix (see module docstring)."""
    rows: list[list[Any]] = []  # raw cells; feature_matrix applies the missing-value rule
    records: list[dict[str, Any]] = []
    origin: list[int] = []
    rejects: list[Reject] = []
    feats = tuple(features)
    keep = KEY_FIELDS + CONTEXT_FIELDS
    windows: dict[tuple[type, Any], str | None] = {}
    for i, value in enumerate(values):
        if value is None:
            rejects.append(Reject(i, b"", "empty message (no value)", category="empty"))
            continue
        try:
            doc = orjson.loads(value)
        except orjson.JSONDecodeError as exc:
            doc = _lenient_loads(value)
            if doc is _INVALID:
                rejects.append(Reject(i, value, f"not valid JSON: {str(exc).splitlines()[0][:200]}",
                                      category="invalid_json"))
                continue
        items: Sequence[Any]
        if type(doc) is dict:
            items, envelope = (doc,), False
        elif type(doc) is list:
            if not doc:
                rejects.append(Reject(i, value, "empty array: no records", category="empty"))
                continue
            if len(doc) > max_envelope_records:
                rejects.append(Reject(i, value, f"envelope of {len(doc)} records exceeds "
                                                f"SCORER_MAX_ENVELOPE_RECORDS ({max_envelope_records})",
                                      category="envelope_too_large"))
                continue
            items, envelope = doc, True
        else:
            rejects.append(Reject(i, value, f"not a JSON object or array of objects (got {type(doc).__name__})",
                                  category="not_object"))
            continue
        for j, rec in enumerate(items):
            if type(rec) is not dict:
                reason = f"envelope item {j} is not a JSON object (got {type(rec).__name__})"
                rejects.append(Reject(i, _dumps_item(rec, value), reason, j, category="not_object"))
                continue
            problem = _key_problem(rec, windows)
            if problem is not None:
                category, why = problem
                if envelope:
                    rejects.append(Reject(i, _dumps_item(rec, value), f"envelope item {j}: {why}", j,
                                          category=category))
                else:
                    rejects.append(Reject(i, value, why, category=category))
                continue
            get = rec.get
            rows.append(list(map(get, feats)))  # raw cells; converted for the whole batch below
            # Key fields are checked scalars; context fields pass through only as scalars.
            records.append({k: v for k in keep if (v := get(k)) is not None and type(v) in _SCALARS})
            origin.append(i)
    X = feature_matrix(rows, len(feats))
    return ParsedBatch(X=X, records=records, message_index=origin, rejects=rejects)
