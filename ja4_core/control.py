"""Control messages: build, sign, parse, verify and order ``activate``, ``shadow`` and ``retire`` announcements.

Value (JSON) on ``TOPIC_CONTROL``, key = model name::

    {"type": "activate", "model": "default", "version": "...", "uri": "file:///...",
     "manifest_sha256": "...", "issued_at": "...", "issued_by": "trainer@host",
     "rollback": false, "signature": "..."}

The signature is HMAC-SHA256 over the canonical JSON of every other field (sorted keys,
compact), so any change to any field breaks it. Parsing refuses anything malformed before a
file is opened, and refuses it with a :class:`ControlError` subclass and nothing else (a
property-based test feeds it random bytes and random JSON): one bad message must never stop
a replica from reading the next one.

**One order for every message** (:func:`supersedes`): a message counts only when its
``issued_at`` is later than that of the latest message already accepted for its model. A
rollback is no exception: it is a *new* announcement of an older version, with a new
``issued_at``; its ``rollback`` field (our addition to the contract, optional, default
false) is information for people, not a pass. So a replayed message (the same bytes sent
again) changes nothing, and a message more than ``CONTROL_MAX_FUTURE_SKEW_S`` ahead of the
reader's clock is refused (:class:`ControlFutureError`) rather than pinning every replica
until its date. :func:`latest_valid` applies that order to a whole topic; a starting replica,
``stream-scorer status`` and ``stream-trainer status`` all use it, and a running replica
applies the same :func:`supersedes` message by message, so they end on the same version.

**Champion and challenger** (issue 17). Two more types, signed and parsed like ``activate``
and carrying the same fields: ``shadow`` announces a *challenger*, a version every replica
loads beside the active model (the *champion*, set by ``activate``) with the same
verification and refusals, scores every batch with as well and writes to the shadow topic
only; ``retire`` ends the challenger it names. They are sent with the Kafka key
``<model>/challenger`` (:func:`control_key`), so compaction keeps the champion's latest
``activate`` (key ``<model>``) and the challenger's latest message side by side. The
ordering rule stays :func:`supersedes`, applied per role: the champion is the latest
``activate``, the challenger slot the latest ``shadow`` or ``retire``; and a challenger is
live (:func:`challenger_live`) only while its ``shadow`` is later, by the same rule, than
the champion's ``activate``: a promotion (an ordinary ``activate`` of the challenger's
version) or any other activation ends the shadowing it follows.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections import Counter
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta, timezone
from typing import Callable, Iterable

import orjson

from ja4_core.bundle import check_name
from ja4_core.errors import (
    BundleError,
    ControlError,
    ControlFutureError,
    ControlMalformedError,
    ControlSignatureError,
    ControlUnexpectedError,
)
from ja4_core.features import utc_time

MAX_CONTROL_BYTES = 64 * 1024
_SHA_RE = re.compile(r"[0-9a-f]{64}")
#: A refusal message quotes at most this many characters of the bad value.
_QUOTE = 60

#: Logged by the worker and the trainer at start when no signing key is set.
W_UNSIGNED = ("CONTROL_SIGNING_KEY is unset: control messages are neither signed nor verified, so anyone "
              "who can write to the control topic can choose the model every replica serves")


#: Message types and the role each one sets (see the module docstring).
CHAMPION, CHALLENGER = "champion", "challenger"
ROLE_OF_TYPE: dict[str, str] = {"activate": CHAMPION, "shadow": CHALLENGER, "retire": CHALLENGER}
#: Kafka key suffix of the challenger's messages ('/' cannot occur in a model name).
CHALLENGER_KEY_SUFFIX = "/challenger"


def control_key(msg_type: str, model: str) -> bytes:
    """The Kafka key of a message: the model name for ``activate``, ``<model>/challenger``
    for ``shadow`` and ``retire``, so compaction never removes the champion's announcement.

    >>> control_key("activate", "default"), control_key("shadow", "default")
    (b'default', b'default/challenger')
    """
    return (model + (CHALLENGER_KEY_SUFFIX if ROLE_OF_TYPE[msg_type] == CHALLENGER else "")).encode()


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
        """``issued_at`` as an aware UTC time (naive times are taken as UTC)."""
        return _parse_time(self.issued_at)

    @property
    def role(self) -> str:
        """``champion`` (``activate``) or ``challenger`` (``shadow``, ``retire``)."""
        return ROLE_OF_TYPE[self.type]


def _quote(value: object) -> str:
    text = repr(value)
    return text if len(text) <= _QUOTE else text[:_QUOTE] + "..."


def _parse_time(value: str) -> datetime:
    """``issued_at`` by the product's one time parser (:func:`ja4_core.features.utc_time`)."""
    try:
        return utc_time(value)
    except ValueError:
        raise ControlMalformedError(f"issued_at {_quote(value)} is not an ISO-8601 time") from None


def _canonical(fields: dict) -> bytes:
    body = {k: v for k, v in fields.items() if k != "signature"}
    try:
        return orjson.dumps(body, option=orjson.OPT_SORT_KEYS)
    except TypeError as exc:  # orjson.JSONEncodeError: e.g. an integer beyond 64 bits
        raise ControlMalformedError(f"cannot be signed: {exc}") from None


def sign(fields: dict, key: str) -> str:
    return hmac.new(key.encode(), _canonical(fields), hashlib.sha256).hexdigest()


def build_activate(*, model: str, version: str, uri: str, manifest_sha256: str, issued_by: str,
                   signing_key: str | None = None, rollback: bool = False,
                   issued_at: datetime | None = None) -> bytes:
    """The JSON value of an ``activate`` message, signed when a key is given.

    ``issued_at`` defaults to now: every announcement, a rollback included, is newer than
    every earlier one (see :func:`supersedes`)."""
    return build_control("activate", model=model, version=version, uri=uri, manifest_sha256=manifest_sha256,
                         issued_by=issued_by, signing_key=signing_key, rollback=rollback, issued_at=issued_at)


def build_control(msg_type: str, *, model: str, version: str, uri: str, manifest_sha256: str, issued_by: str,
                  signing_key: str | None = None, rollback: bool = False,
                  issued_at: datetime | None = None) -> bytes:
    """The JSON value of a message of ``msg_type`` (``activate``, ``shadow`` or ``retire``),
    signed when a key is given; send it with the key :func:`control_key` gives."""
    if msg_type not in ROLE_OF_TYPE:
        raise ControlMalformedError(f"type {_quote(msg_type)} is not one of {', '.join(ROLE_OF_TYPE)}")
    fields = {"type": msg_type, "model": check_name(model, "model name"),
              "version": check_name(version, "version"), "uri": uri,
              "manifest_sha256": manifest_sha256,
              "issued_at": (issued_at or datetime.now(timezone.utc)).isoformat(),
              "issued_by": issued_by, "rollback": rollback}
    if signing_key:
        fields["signature"] = sign(fields, signing_key)
    return orjson.dumps(fields)


def parse_control(value: bytes | None, keys: tuple[str, ...] = (), *, max_future_skew_s: float | None = None,
                  now: datetime | None = None) -> ControlMessage:
    """Parse and verify one control message, or raise a :class:`ControlError` subclass.

    ``keys`` are the accepted signing keys (current and previous, for rotation); with no
    key, signatures are not required. With ``max_future_skew_s``, a message issued further
    than that ahead of ``now`` (default: the clock) raises :class:`ControlFutureError`,
    which carries the verified message."""
    if value is None:
        raise ControlMalformedError("empty control message (tombstone)")
    if not isinstance(value, (bytes, bytearray, memoryview)):
        raise ControlMalformedError(f"control message value is a {type(value).__name__}, not bytes")
    if len(value) > MAX_CONTROL_BYTES:
        raise ControlMalformedError(f"control message of {len(value)} bytes exceeds {MAX_CONTROL_BYTES}")
    try:
        data = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        raise ControlMalformedError(f"not JSON ({str(exc)[:200]})") from None
    if not isinstance(data, dict):
        raise ControlMalformedError("not a JSON object")
    for name, field_value in data.items():  # nested values cannot be signed or trusted
        if isinstance(field_value, (dict, list)):
            raise ControlMalformedError(f"field {_quote(name)} must be a scalar")
    if data.get("type") not in ROLE_OF_TYPE:
        raise ControlMalformedError(f"type {_quote(data.get('type'))} is not supported "
                                    f"(expected one of {', '.join(ROLE_OF_TYPE)})")
    for name in ("model", "version", "uri", "manifest_sha256", "issued_at", "issued_by"):
        if not isinstance(data.get(name), str) or not data[name]:
            raise ControlMalformedError(f"field {name!r} missing or not a string")
    try:
        check_name(data["model"], "model name")
        check_name(data["version"], "version")
    except BundleError as exc:
        raise ControlMalformedError(str(exc)[:200]) from None
    if not _SHA_RE.fullmatch(data["manifest_sha256"]):
        raise ControlMalformedError(f"manifest_sha256 {_quote(data['manifest_sha256'])} is not a hex sha256")
    issued_at = _parse_time(data["issued_at"])
    rollback = data.get("rollback", False)
    if not isinstance(rollback, bool):
        raise ControlMalformedError("rollback must be true or false")
    signature = data.get("signature")
    if signature is not None and not isinstance(signature, str):
        raise ControlMalformedError("signature must be a string")
    if keys:
        if signature is None:
            raise ControlSignatureError("unsigned control message while CONTROL_SIGNING_KEY is set")
        # Checked before comparing: hmac.compare_digest raises TypeError on a non-ASCII str.
        if not _SHA_RE.fullmatch(signature):
            raise ControlSignatureError(f"bad signature {_quote(signature)}: not 64 lowercase hex digits")
        body = _canonical(data)
        if not any(hmac.compare_digest(hmac.new(k.encode(), body, hashlib.sha256).digest(),
                                       bytes.fromhex(signature)) for k in keys):
            raise ControlSignatureError("bad signature")
    known = {f for f in ControlMessage.__dataclass_fields__}
    msg = ControlMessage(**{k: v for k, v in data.items() if k in known})
    if max_future_skew_s is not None:
        now = now or datetime.now(timezone.utc)
        if issued_at > now + timedelta(seconds=max_future_skew_s):
            raise ControlFutureError(
                f"issued_at {msg.issued_at} is more than {max_future_skew_s:g} s ahead of this clock "
                f"({now.isoformat(timespec='seconds')})", message=msg)
    return msg


def to_dict(msg: ControlMessage) -> dict:
    return asdict(msg)


# --- the one order ------------------------------------------------------------------------

def order_key(msg: ControlMessage) -> tuple:
    """Messages are ordered by ``issued_at``; the other fields only break exact ties, so
    that every reader picks the same message whatever order it read them in."""
    return (msg.issued_at_dt, msg.version, msg.manifest_sha256, msg.uri, msg.issued_by, msg.rollback)


def supersedes(candidate: ControlMessage, current: ControlMessage | None) -> bool:
    """True when ``candidate`` is later than ``current`` (the latest message accepted so far
    for the same model) and so replaces it. The only ordering rule of the product."""
    return current is None or order_key(candidate) > order_key(current)


def challenger_live(challenger: ControlMessage | None, champion: ControlMessage | None) -> bool:
    """True when the challenger slot's latest message is a ``shadow`` later (by
    :func:`supersedes`) than the champion's latest ``activate``: a challenger shadows until it
    is retired or any activation (its promotion included) follows it."""
    return challenger is not None and challenger.type == "shadow" and supersedes(challenger, champion)


@dataclass(frozen=True)
class ControlRecord:
    """One raw message of the control topic and where it was read."""

    value: bytes | None
    key: bytes | None = None
    partition: int = 0
    offset: int = -1


@dataclass(frozen=True)
class Chosen:
    """The latest valid message of one model and the record it came in."""

    message: ControlMessage
    record: ControlRecord


@dataclass(frozen=True)
class Offer:
    """What one raw message did to a :class:`ControlLedger`.

    ``outcome``: ``latest`` (it is now the latest of its model), ``older`` (not later than
    the latest: a replay or an out-of-date message), ``deferred`` (verified but issued in
    the future: taken up by :meth:`ControlLedger.due` once it is not) or ``refused``."""

    outcome: str
    message: ControlMessage | None = None
    error: ControlError | None = None

    @property
    def reason(self) -> str:
        """The counter label of a refusal (``malformed``, ``signature``, ``future``, ``error``)."""
        return self.error.reason if self.error is not None else ""


class ControlLedger:
    """The latest valid message per model, under :func:`supersedes`; refusals counted by class.

    Fed one raw record at a time (:meth:`offer`), so a starting replica, a running one and
    the status commands share every step from bytes to "which message wins"."""

    #: Verified future-dated messages kept for later (the earliest due first); a message
    #: dated 9999 is thereby crowded out by any number of nearer ones.
    MAX_DEFERRED = 16
    #: Kafka keys whose last refusal is remembered (for ``status``); bounded against spam.
    MAX_REFUSED_KEYS = 256

    def __init__(self, keys: tuple[str, ...] = (), max_future_skew_s: float | None = None,
                 clock: Callable[[], datetime] | None = None) -> None:
        self.keys = keys
        self.max_future_skew_s = max_future_skew_s
        self.clock = clock or (lambda: datetime.now(timezone.utc))
        #: The champion's latest ``activate`` per model.
        self.latest: dict[str, Chosen] = {}
        #: The challenger slot's latest ``shadow`` or ``retire`` per model (see :meth:`live_challenger`).
        self.challenger: dict[str, Chosen] = {}
        self.refused: Counter[str] = Counter()
        self.last_refused: dict[str, tuple[ControlRecord, ControlError]] = {}
        self._deferred: list[Chosen] = []

    def offer(self, record: ControlRecord | bytes | None) -> Offer:
        """Parse, verify and order one raw message. Never raises for a bad message."""
        if not isinstance(record, ControlRecord):
            record = ControlRecord(record)
        try:
            msg = parse_control(record.value, self.keys, max_future_skew_s=self.max_future_skew_s,
                                now=self.clock())
        except ControlFutureError as exc:
            self._defer(exc.message, record)
            return self._refuse(record, exc, "deferred")
        except ControlError as exc:
            return self._refuse(record, exc)
        except Exception as exc:  # noqa: BLE001 - a bug in parsing must refuse one message, not stop a replica
            return self._refuse(record, ControlUnexpectedError(
                f"unexpected {type(exc).__name__} while parsing: {str(exc)[:200]}"))
        return self._order(msg, record)

    def due(self) -> list[Offer]:
        """Deferred messages whose ``issued_at`` is now within the allowed skew, ordered in."""
        if not self._deferred:
            return []
        limit = self.clock() + timedelta(seconds=self.max_future_skew_s or 0.0)
        ready = [c for c in self._deferred if c.message.issued_at_dt <= limit]
        self._deferred = [c for c in self._deferred if c.message.issued_at_dt > limit]
        return [self._order(c.message, c.record) for c in ready]

    def _order(self, msg: ControlMessage, record: ControlRecord) -> Offer:
        slot = self.latest if msg.role == CHAMPION else self.challenger
        current = slot.get(msg.model)
        if supersedes(msg, current.message if current else None):
            slot[msg.model] = Chosen(msg, record)
            return Offer("latest", msg)
        return Offer("older", msg)

    def live_challenger(self, model: str) -> Chosen | None:
        """The ``shadow`` message of the challenger ``model``'s replicas load now, or None."""
        chosen, champion = self.challenger.get(model), self.latest.get(model)
        if chosen is not None and challenger_live(chosen.message, champion.message if champion else None):
            return chosen
        return None

    def _defer(self, msg: object, record: ControlRecord) -> None:
        if isinstance(msg, ControlMessage):
            self._deferred.append(Chosen(msg, record))
            self._deferred.sort(key=lambda c: order_key(c.message))
            del self._deferred[self.MAX_DEFERRED:]

    def _refuse(self, record: ControlRecord, exc: ControlError, outcome: str = "refused") -> Offer:
        self.refused[exc.reason] += 1
        key = (record.key or b"").decode("utf-8", "replace")
        if key in self.last_refused or len(self.last_refused) < self.MAX_REFUSED_KEYS:
            self.last_refused[key] = (record, exc)
        return Offer(outcome, exc.message if isinstance(exc, ControlFutureError) else None, exc)  # type: ignore[arg-type]


def latest_valid(records: Iterable[ControlRecord | bytes | None], keys: tuple[str, ...] = (), *,
                 max_future_skew_s: float | None = None,
                 clock: Callable[[], datetime] | None = None) -> ControlLedger:
    """Read a whole control topic (in offset order): the latest valid message per model is
    ``.latest``, the refusals are counted in ``.refused``. Bad messages are skipped, never raised."""
    ledger = ControlLedger(keys, max_future_skew_s, clock)
    for record in records:
        ledger.offer(record)
    return ledger
