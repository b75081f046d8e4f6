"""Field names of the feature record: the contract's schema in one place.

The scorer never hard-codes which features a model uses (the bundle's manifest says so);
this module only names the key and context fields every record shares and the default
feature set (the original bot-detector's ``view_ai_features_1h`` columns) that the trainer
starts from when ``FEATURES`` is not set.
"""

from __future__ import annotations

import re
from datetime import datetime, timezone
from typing import Any

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


def _short(value: Any) -> str:
    """A value for a one-line reason: repr, cut to 80 characters, no line breaks."""
    text = repr(value) if type(value) is str else str(value)
    return (text[:77] + "...") if len(text) > 80 else text


#: Optional context fields, passed through unchanged to the score record.
CONTEXT_FIELDS: tuple[str, ...] = ("asn_number", "country_code", "browser_family", "bot_name")

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
KNOWN_BOT = "KNOWN_BOT"
LEGITIMATE_BROWSER = "LEGITIMATE_BROWSER"
