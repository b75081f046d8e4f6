"""Control messages: build, sign, parse and verify ``activate`` announcements.

Value (JSON) on ``TOPIC_CONTROL``, key = model name::

    {"type": "activate", "model": "default", "version": "...", "uri": "file:///...",
     "manifest_sha256": "...", "issued_at": "...", "issued_by": "trainer@host",
     "rollback": false, "signature": "..."}

``rollback`` (our addition to the contract, optional, default false) marks an operator's
explicit activation of an older version, which replicas accept even though its version is
older than the active one. The signature is HMAC-SHA256 over the canonical JSON of every
other field (sorted keys, compact), so any change to any field breaks it. Parsing refuses
anything malformed before a file is opened.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from dataclasses import asdict, dataclass
from datetime import datetime, timezone

import orjson

from .bundle import check_name
from .errors import BundleError, ControlError

MAX_CONTROL_BYTES = 64 * 1024
_SHA_RE = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class ControlMessage:
    type: str
    model: str
    version: str
    uri: str
    manifest_sha256: str
    issued_at: str
    issued_by: str
    rollback: bool = False
    signature: str | None = None

    @property
    def issued_at_dt(self) -> datetime:
        return _parse_time(self.issued_at)


def _parse_time(value: str) -> datetime:
    try:
        dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except (ValueError, AttributeError):
        raise ControlError(f"issued_at {value!r} is not an ISO-8601 time") from None
    return dt if dt.tzinfo else dt.replace(tzinfo=timezone.utc)


def _canonical(fields: dict) -> bytes:
    body = {k: v for k, v in fields.items() if k != "signature"}
    return orjson.dumps(body, option=orjson.OPT_SORT_KEYS)


def sign(fields: dict, key: str) -> str:
    return hmac.new(key.encode(), _canonical(fields), hashlib.sha256).hexdigest()


def build_activate(*, model: str, version: str, uri: str, manifest_sha256: str, issued_by: str,
                   signing_key: str | None = None, rollback: bool = False,
                   issued_at: datetime | None = None) -> bytes:
    """The JSON value of an ``activate`` message, signed when a key is given."""
    fields = {"type": "activate", "model": check_name(model, "model name"),
              "version": check_name(version, "version"), "uri": uri,
              "manifest_sha256": manifest_sha256,
              "issued_at": (issued_at or datetime.now(timezone.utc)).isoformat(),
              "issued_by": issued_by, "rollback": rollback}
    if signing_key:
        fields["signature"] = sign(fields, signing_key)
    return orjson.dumps(fields)


def parse_control(value: bytes | None, keys: tuple[str, ...] = ()) -> ControlMessage:
    """Parse and verify one control message; ``keys`` are the accepted signing keys
    (current and previous, for rotation). With no key, signatures are not required."""
    if value is None:
        raise ControlError("empty control message (tombstone)")
    if len(value) > MAX_CONTROL_BYTES:
        raise ControlError(f"control message of {len(value)} bytes exceeds {MAX_CONTROL_BYTES}")
    try:
        data = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        raise ControlError(f"not JSON ({exc})") from None
    if not isinstance(data, dict):
        raise ControlError("not a JSON object")
    for name, field_value in data.items():  # nested values cannot be signed or trusted
        if isinstance(field_value, (dict, list)):
            raise ControlError(f"field {str(name)[:50]!r} must be a scalar")
    if data.get("type") != "activate":
        raise ControlError(f"type {data.get('type')!r} is not supported (expected 'activate')")
    for name in ("model", "version", "uri", "manifest_sha256", "issued_at", "issued_by"):
        if not isinstance(data.get(name), str) or not data[name]:
            raise ControlError(f"field {name!r} missing or not a string")
    try:
        check_name(data["model"], "model name")
        check_name(data["version"], "version")
    except BundleError as exc:
        raise ControlError(str(exc)) from None
    if not _SHA_RE.match(data["manifest_sha256"]):
        raise ControlError("manifest_sha256 is not a hex sha256")
    _parse_time(data["issued_at"])
    rollback = data.get("rollback", False)
    if not isinstance(rollback, bool):
        raise ControlError("rollback must be true or false")
    signature = data.get("signature")
    if keys:
        if not isinstance(signature, str):
            raise ControlError("unsigned control message while CONTROL_SIGNING_KEY is set")
        if not any(hmac.compare_digest(sign(data, k), signature) for k in keys):
            raise ControlError("bad signature")
    known = {f for f in ControlMessage.__dataclass_fields__}
    return ControlMessage(**{k: v for k, v in data.items() if k in known})


def to_dict(msg: ControlMessage) -> dict:
    return asdict(msg)
