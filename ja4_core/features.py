"""Field names of the feature record: the contract's schema in one place.

The scorer never hard-codes which features a model uses (the bundle's manifest says so);
this module only names the key and context fields every record shares and the default
feature set (the original bot-detector's ``view_ai_features_1h`` columns) that the trainer
starts from when ``FEATURES`` is not set.
"""

from __future__ import annotations

import re
from datetime import datetime, timezone
from itertools import chain
from typing import Any, Sequence

import numpy as np
import orjson

from ja4_core.errors import RecordError

#: Fields that identify a record; a record missing any of them goes to the DLQ.
KEY_FIELDS: tuple[str, ...] = ("window_start", "src_ip", "ja4", "host")

#: ``window_start`` must fall in [1970-01-01, 2200-01-01) UTC, as epoch seconds. Outside it a
#: value is a producer bug (milliseconds sent as seconds, ``1e300``), not a time window.
WINDOW_START_MIN: int = 0
WINDOW_START_MAX: int = 7_258_118_400  # 2200-01-01T00:00:00Z, excluded

#: Epoch seconds written as text (what ``stream-trainer`` imports also accept).
_EPOCH_TEXT = re.compile(r"[+-]?[0-9]+(\.[0-9]*)?")


def window_start_seconds(value: Any) -> float:
    """Epoch seconds of a ``window_start``: ISO-8601 text (no offset = UTC; ``Z`` allowed) or
    epoch seconds (a JSON number, or decimal digits as text), within
    [:data:`WINDOW_START_MIN`, :data:`WINDOW_START_MAX`). Anything else raises
    :class:`RecordError` naming the value: such a record cannot be keyed or stored.

    >>> window_start_seconds("2026-11-24T21:00:00Z"), window_start_seconds(1795514400)
    (1795554000.0, 1795514400.0)
    >>> window_start_seconds(1e300)
    Traceback (most recent call last):
    ...
    ja4_core.errors.RecordError: key field 'window_start' is out of range (1970 to 2200): 1e+300
    """
    t = type(value)
    if t is int or t is float:  # bool excluded: True is not a time
        if not WINDOW_START_MIN <= value < WINDOW_START_MAX:  # also refuses NaN; ints compared exactly
            raise RecordError(f"key field 'window_start' is out of range (1970 to 2200): {_short(value)}")
        return float(value)
    if t is not str:
        raise RecordError(f"key field 'window_start' must be ISO-8601 text or epoch seconds, got {t.__name__}")
    text = value.strip()
    if _EPOCH_TEXT.fullmatch(text):
        return window_start_seconds(float(text))
    try:
        dt = datetime.fromisoformat(text[:-1] + "+00:00" if text[-1:] in ("Z", "z") else text)
        seconds = (dt if dt.tzinfo else dt.replace(tzinfo=timezone.utc)).timestamp()
    except (ValueError, OverflowError):
        raise RecordError(f"key field 'window_start' is neither ISO-8601 nor epoch seconds: {_short(value)}") from None
    return window_start_seconds(seconds)


def utc_time(value: Any) -> datetime:
    """ISO-8601 text -> an aware UTC time (no offset = UTC; ``Z`` allowed); anything else raises
    :class:`ValueError`. The one parser of the times the product writes (control messages'
    ``issued_at``, manifests' ``trained_at``/``created_at``). Normalised here, so that a time
    such as ``9999-12-31T23:59-23:59`` (past year 9999 in UTC) is refused now rather than
    overflowing in a later comparison.

    >>> utc_time("2026-11-24T22:10:00Z").isoformat(), utc_time("2026-11-24T23:10:00+01:00").isoformat()
    ('2026-11-24T22:10:00+00:00', '2026-11-24T22:10:00+00:00')
    """
    if type(value) is not str:
        raise ValueError(f"not ISO-8601 text: {type(value).__name__}")
    text = value.strip()
    try:
        dt = datetime.fromisoformat(text[:-1] + "+00:00" if text[-1:] in ("Z", "z") else text)
        return dt.replace(tzinfo=timezone.utc) if dt.tzinfo is None else dt.astimezone(timezone.utc)
    except OverflowError:
        raise ValueError(f"out of range: {_short(value)}") from None


def _short(value: Any) -> str:
    """A value for a one-line reason: repr, cut to 80 characters, no line breaks."""
    text = repr(value) if type(value) is str else str(value)
    return (text[:77] + "...") if len(text) > 80 else text


#: Optional context fields, passed through unchanged to the score record.
CONTEXT_FIELDS: tuple[str, ...] = ("asn_number", "country_code", "browser_family", "bot_name")
#: Fields whose CSV cells stay text (every other cell is read as the number it spells, if any).
TEXT_FIELDS: tuple[str, ...] = KEY_FIELDS + ("country_code", "browser_family", "bot_name")

# --- the one missing-value rule --------------------------------------------------------------
#
# A feature value is usable when it is a JSON number or boolean (0/1) that is finite as a
# double; anything else -- missing, null, a string (even "1.5"), an array, an object, NaN,
# +-inf, an integer beyond a double -- is *missing* (NaN), imputed later with the training
# median. The contract says "flat, top-level numbers" and "a non-numeric value is imputed", so a
# numeric string is non-numeric: producers must send numbers. The scorer (``parse_batch``), the
# trainer's feature import (``ClickHouseIO.insert_features``) and both file readers use this rule;
# a CSV cell, having no type, is first read as the JSON value it spells (:func:`csv_cell`).

_NAN = float("nan")
_INF = float("inf")
_PLAIN_NUMBERS = frozenset({float, int, bool, type(None)})


def feature_value(raw: Any) -> float:
    """One feature cell -> a finite float, or NaN when it is missing (the rule above).

    >>> [feature_value(v) for v in (1.5, 2, True, None, "1.5", float("inf"), [1], 2**1100)]
    [1.5, 2.0, 1.0, nan, nan, nan, nan, nan]
    """
    t = type(raw)
    if t is float:
        return raw if -_INF < raw < _INF else _NAN  # NaN and +-inf become missing
    if t is int or t is bool:
        try:
            return float(raw)
        except OverflowError:  # an integer beyond a double
            return _NAN
    return _NAN


def feature_matrix(rows: Sequence[Sequence[Any]], n_features: int) -> np.ndarray:
    """Rows of raw feature cells -> float64 matrix, :func:`feature_value` for every cell.

    The batch path of the rule: when every cell is a JSON number, boolean or null, numpy
    converts the whole batch in one call and non-finite values then become NaN; any other
    cell type sends the batch through :func:`feature_value` cell by cell (strings must become
    NaN, never be parsed as numbers).

    >>> feature_matrix([[1, None], [True, float("inf")]], 2).tolist()
    [[1.0, nan], [1.0, nan]]
    """
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
    return np.array([[feature_value(v) for v in row] for row in rows], dtype=np.float64)


def csv_cell(name: str, text: str | None) -> Any:
    """A CSV cell as the JSON value a producer would have sent: None for an empty cell; the
    text itself for a key or text context field (:data:`TEXT_FIELDS`); otherwise the JSON
    number or boolean the text spells (``12``, ``1.5``, ``1e3``, ``true``), else the text
    (then imputed by :func:`feature_value`, like a string sent as JSON). Both file readers
    (``stream-scorer produce --file``, ``stream-trainer load --file``) read CSV through it.

    >>> [csv_cell("hits", t) for t in ("12", " 1.5", "", "abc", "nan")], csv_cell("src_ip", "10")
    ([12, 1.5, None, 'abc', 'nan'], '10')
    """
    if text is None or text == "":
        return None
    if name in TEXT_FIELDS:
        return text
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        return text
    return value if type(value) in (int, float, bool) else text

#: The original's feature columns, grouped as in the contract.
DEFAULT_FEATURES: tuple[str, ...] = (
    # volume
    "hits", "hit_velocity",
    # headers
    "header_count", "has_accept_language", "has_cookie", "has_referer", "has_sec_ch_ua",
    "modern_browser_score", "ua_ch_mismatch", "header_order_shared_count",
    # request mix
    "post_ratio", "fuzzing_index", "orphan_ratio", "asset_ratio", "direct_access_ratio",
    # transport
    "ip_id_zero_ratio", "multiplexing_efficiency", "mss_mobile_mismatch",
    "request_size_variance", "port_exhaustion_ratio", "max_keepalives", "src_port_density",
    "tcp_shared_count",
    # TLS / HTTP2 coherence
    "h2_settings_known", "h2_pseudo_order_match", "fingerprint_coherence_score",
    "tls_h2_family_mismatch",
    # fingerprint population
    "is_ua_rotating", "distinct_ja4_count", "is_rare_ja4", "ja4_asn_concentration",
    "ja4_country_concentration",
    # behaviour
    "path_transition_entropy", "cadence_cv", "burst_ratio", "pause_ratio", "host_diversity",
    "lag1_autocorrelation", "benford_deviation",
)

#: Threat levels in increasing order of the combined score.
SCORE_LEVELS: tuple[str, ...] = ("NORMAL", "LOW", "MEDIUM", "HIGH", "CRITICAL")
#: What each threat level means: the quantile of the combined score on humans where it starts,
#: i.e. about 10 / 3 / 1 / 0.1 % of human windows at or above LOW / MEDIUM / HIGH / CRITICAL.
LEVEL_QUANTILES: dict[str, float] = {"LOW": 0.90, "MEDIUM": 0.97, "HIGH": 0.99, "CRITICAL": 0.999}
KNOWN_BOT = "KNOWN_BOT"
LEGITIMATE_BROWSER = "LEGITIMATE_BROWSER"
