"""The ``retrain_request`` control message: a scorer replica asks the trainer to retrain now.

A replica whose live drifted share (:mod:`stream_scorer.live_drift`) stayed at or above
``DRIFT_THRESHOLD`` for ``DRIFT_REQUEST_AFTER_S`` publishes one on the control topic,
key ``retrain-request:<model>`` (``:`` is not allowed in a model name, so the key never meets
an ``activate`` key, and compaction keeps the latest request per model). Value (JSON, every
field a scalar, like every control message)::

    {"type": "retrain_request", "model": "default", "version": "<the version it serves>",
     "issued_at": "...", "issued_by": "host:pid:port", "drift_share": 0.41, "threshold": 0.3,
     "drifted": "hits,header_count", "window_s": 300.0, "window_records": 51234,
     "sustained_s": 60.0, "signature": "..."}

Signed like ``activate`` (HMAC-SHA256 over the canonical JSON of the other fields,
:func:`ja4_core.control.sign`) when ``CONTROL_SIGNING_KEY`` is set, and refused unsigned or
badly signed then. Parsing refuses anything malformed with a :class:`ControlError` subclass and
nothing else. The ``activate`` readers (:func:`ja4_core.control.parse_control`, the ledger,
``latest_valid``) refuse this type as malformed: a request never counts as an activation.
"""

from __future__ import annotations

import hmac
import math
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta, timezone

import orjson

from ja4_core.bundle import check_name
from ja4_core.control import MAX_CONTROL_BYTES, sign
from ja4_core.errors import BundleError, ControlFutureError, ControlMalformedError, ControlSignatureError
from ja4_core.features import utc_time

TYPE = "retrain_request"
#: Key prefix of requests on the control topic (``retrain-request:<model>``).
KEY_PREFIX = "retrain-request:"
#: At most this many drifted feature names are carried (the most drifted first).
MAX_DRIFTED = 20
_STR_FIELDS = ("model", "version", "issued_at", "issued_by")
_NUM_FIELDS = ("drift_share", "threshold", "window_s", "sustained_s")


@dataclass(frozen=True)
class RetrainRequest:
    """A verified retrain request."""

    model: str
    version: str
    issued_at: str
    issued_by: str
    drift_share: float
    threshold: float
    drifted: str
    window_s: float
    window_records: int
    sustained_s: float
    signature: str | None = None

    @property
    def issued_at_dt(self) -> datetime:
        return utc_time(self.issued_at)

    @property
    def drifted_features(self) -> list[str]:
        return [f for f in self.drifted.split(",") if f]

    def figures(self) -> dict[str, object]:
        """What the trainer records as the run's ``drift`` (no signature)."""
        out: dict[str, object] = {k: v for k, v in asdict(self).items() if k != "signature"}
        out["drifted"] = self.drifted_features
        out["source"] = "replica"
        return out


def key_for(model: str) -> bytes:
    return (KEY_PREFIX + check_name(model, "model name")).encode()


def build_retrain_request(*, model: str, version: str, issued_by: str, drift_share: float, threshold: float,
                          drifted: list[str], window_s: float, window_records: int, sustained_s: float,
                          signing_key: str | None = None, issued_at: datetime | None = None) -> bytes:
    """The JSON value of a request, signed when a key is given."""
    fields: dict[str, object] = {
        "type": TYPE, "model": check_name(model, "model name"), "version": check_name(version, "version"),
        "issued_at": (issued_at or datetime.now(timezone.utc)).isoformat(), "issued_by": issued_by,
        "drift_share": float(drift_share), "threshold": float(threshold),
        "drifted": ",".join(drifted[:MAX_DRIFTED]), "window_s": float(window_s),
        "window_records": int(window_records), "sustained_s": float(sustained_s)}
    if signing_key:
        fields["signature"] = sign(fields, signing_key)
    return orjson.dumps(fields)


def is_retrain_request(value: bytes | None) -> bool:
    """Whether a raw control value says it is a retrain request (cheap; verifies nothing)."""
    if not value or len(value) > MAX_CONTROL_BYTES or b'"retrain_request"' not in value:
        return False
    try:
        data = orjson.loads(value)
    except orjson.JSONDecodeError:
        return False
    return isinstance(data, dict) and data.get("type") == TYPE


def _number(data: dict, name: str) -> float:
    value = data.get(name)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise ControlMalformedError(f"field {name!r} must be a finite number >= 0")
    return float(value)


def parse_retrain_request(value: bytes | None, keys: tuple[str, ...] = (), *,
                          max_future_skew_s: float | None = None, now: datetime | None = None) -> RetrainRequest:
    """Parse and verify one request, or raise a :class:`ControlError` subclass (never
    anything else). ``keys`` as for :func:`ja4_core.control.parse_control`."""
    if not isinstance(value, (bytes, bytearray)) or not value:
        raise ControlMalformedError("empty retrain request")
    if len(value) > MAX_CONTROL_BYTES:
        raise ControlMalformedError(f"retrain request of {len(value)} bytes exceeds {MAX_CONTROL_BYTES}")
    try:
        data = orjson.loads(value)
    except orjson.JSONDecodeError:
        raise ControlMalformedError("retrain request is not JSON") from None
    if not isinstance(data, dict) or data.get("type") != TYPE:
        raise ControlMalformedError(f"not a {TYPE} message")
    for name, field_value in data.items():
        if isinstance(field_value, (dict, list)):
            raise ControlMalformedError(f"field {name[:60]!r} must be a scalar")
    for name in _STR_FIELDS:
        if not isinstance(data.get(name), str) or not data[name]:
            raise ControlMalformedError(f"field {name!r} missing or not a string")
    try:
        check_name(data["model"], "model name")
        check_name(data["version"], "version")
        issued = utc_time(data["issued_at"])
    except (BundleError, ValueError) as exc:
        raise ControlMalformedError(str(exc)[:200]) from None
    numbers = {name: _number(data, name) for name in _NUM_FIELDS}
    records = data.get("window_records")
    if isinstance(records, bool) or not isinstance(records, int) or records < 0:
        raise ControlMalformedError("field 'window_records' must be an integer >= 0")
    if numbers["drift_share"] > 1 or numbers["threshold"] > 1:
        raise ControlMalformedError("drift_share and threshold must lie between 0 and 1")
    drifted = data.get("drifted", "")
    if not isinstance(drifted, str):
        raise ControlMalformedError("field 'drifted' must be a string")
    signature = data.get("signature")
    if signature is not None and not isinstance(signature, str):
        raise ControlMalformedError("signature must be a string")
    if keys:
        if signature is None:
            raise ControlSignatureError("unsigned retrain request while CONTROL_SIGNING_KEY is set")
        # sign() raises ControlMalformedError for a body that cannot be made canonical.
        if not any(hmac.compare_digest(sign(data, k).encode(), signature.encode()) for k in keys):
            raise ControlSignatureError("bad signature")
    request = RetrainRequest(model=data["model"], version=data["version"], issued_at=data["issued_at"],
                             issued_by=data["issued_by"], drifted=drifted, window_records=records,
                             signature=signature, **numbers)
    if max_future_skew_s is not None:
        now = now or datetime.now(timezone.utc)
        if issued > now + timedelta(seconds=max_future_skew_s):
            raise ControlFutureError(f"issued_at {request.issued_at} is more than {max_future_skew_s:g} s ahead "
                                     "of this clock", message=None)
    return request
