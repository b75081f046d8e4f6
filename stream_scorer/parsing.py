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
  between 1970 and 2200 (:func:`~.features.window_start_seconds`); any other value rejects
  the record as a missing key field does.

Booleans count as numbers (0/1); numeric strings do not (they are imputed), as the contract
says "non-numeric". The hot loop is one list comprehension per record.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import chain
import json
from typing import Any, Sequence

import numpy as np
import orjson

from ja4_core.errors import RecordError
from ja4_core.features import CONTEXT_FIELDS, KEY_FIELDS, window_start_seconds

_NAN = float("nan")
_INF = float("inf")
_SCALARS = (str, int, float, bool)
#: Key fields must be non-empty strings; window_start a time (see the module docstring).
_STR = str
#: The default of ``SCORER_MAX_ENVELOPE_RECORDS``: most records one envelope may hold.
DEFAULT_MAX_ENVELOPE_RECORDS = 10_000


@dataclass(frozen=True)
class Reject:
    """One DLQ entry: which message, the bytes to dead-letter, and why."""

    message_index: int
    value: bytes
    reason: str
    record_index: int | None = None


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


def _as_number(v: Any) -> float:
    t = type(v)
    if t is float:
        return v if -_INF < v < _INF else _NAN  # NaN and +-inf become missing
    if t is int or t is bool:
        try:
            return float(v)
        except OverflowError:
            return _NAN
    return _NAN


_PLAIN_NUMBERS = frozenset({float, int, bool, type(None)})


def _to_matrix(rows: list[list[Any]], n_features: int) -> np.ndarray:
    """Raw feature cells -> float64 matrix, with :func:`_as_number`'s meaning for every cell.

    The common case (every cell a JSON number, boolean or null) is converted by numpy in one
    call, then non-finite values become NaN; any other cell type sends the batch through
    :func:`_as_number` cell by cell (strings must become NaN, never parsed as numbers)."""
    if not rows:
        return np.empty((0, n_features), dtype=np.float64)
    if set(map(type, chain.from_iterable(rows))) <= _PLAIN_NUMBERS:
        try:
            X = np.array(rows, dtype=np.float64)  # null -> NaN, bool -> 0/1, int -> nearest double
        except OverflowError:  # an integer beyond a double: the cell-by-cell path makes it NaN
            pass
        else:
            X[~np.isfinite(X)] = np.nan
            return X
    return np.array([[_as_number(v) for v in row] for row in rows], dtype=np.float64)


def _key_problem(rec: dict[str, Any]) -> str | None:
    for name in KEY_FIELDS:
        v = rec.get(name)
        if v is None:
            return f"missing key field {name!r}"
        if type(v) is _STR and not v:
            return f"empty key field {name!r}"
        if name == "window_start":
            try:
                window_start_seconds(v)
            except RecordError as exc:
                return str(exc)
        elif type(v) is not _STR:
            return f"key field {name!r} must be a string, got {type(v).__name__}"
    return None


def parse_batch(values: Sequence[bytes | None], features: Sequence[str],
                max_envelope_records: int = DEFAULT_MAX_ENVELOPE_RECORDS) -> ParsedBatch:
    """Parse the values of many messages into one feature matrix (see module docstring)."""
    rows: list[list[float]] = []
    records: list[dict[str, Any]] = []
    origin: list[int] = []
    rejects: list[Reject] = []
    feats = tuple(features)
    keep = KEY_FIELDS + CONTEXT_FIELDS
    for i, value in enumerate(values):
        if value is None:
            rejects.append(Reject(i, b"", "empty message (no value)"))
            continue
        try:
            doc = orjson.loads(value)
        except orjson.JSONDecodeError as exc:
            doc = _lenient_loads(value)
            if doc is _INVALID:
                rejects.append(Reject(i, value, f"not valid JSON: {str(exc).splitlines()[0][:200]}"))
                continue
        if type(doc) is dict:
            items, envelope = (doc,), False
        elif type(doc) is list:
            if not doc:
                rejects.append(Reject(i, value, "empty array: no records"))
                continue
            if len(doc) > max_envelope_records:
                rejects.append(Reject(i, value, f"envelope of {len(doc)} records exceeds "
                                                f"SCORER_MAX_ENVELOPE_RECORDS ({max_envelope_records})"))
                continue
            items, envelope = doc, True
        else:
            rejects.append(Reject(i, value, f"not a JSON object or array of objects (got {type(doc).__name__})"))
            continue
        for j, rec in enumerate(items):
            if type(rec) is not dict:
                reason = f"envelope item {j} is not a JSON object (got {type(rec).__name__})"
                rejects.append(Reject(i, _dumps_item(rec, value), reason, j))
                continue
            problem = _key_problem(rec)
            if problem is not None:
                if envelope:
                    rejects.append(Reject(i, _dumps_item(rec, value), f"envelope item {j}: {problem}", j))
                else:
                    rejects.append(Reject(i, value, problem))
                continue
            get = rec.get
            rows.append([get(f) for f in feats])  # raw cells; converted for the whole batch below
            # Key fields are checked scalars; context fields pass through only as scalars.
            records.append({k: v for k in keep if (v := get(k)) is not None and type(v) in _SCALARS})
            origin.append(i)
    X = _to_matrix(rows, len(feats))
    return ParsedBatch(X=X, records=records, message_index=origin, rejects=rejects)
