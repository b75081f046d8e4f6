"""Property: the control path only accepts or refuses, whatever the bytes.

``parse_control`` returns a message or raises a :class:`ControlError`; the follower's parse
(``ControlFollower._offer``) returns a message or None, counts the refusal and never raises;
the holder's ordering of an accepted message never raises either. A single message that
raised anything else would send the follower back to the start of the topic, to meet the
same message again, forever (issue 13, item 1).
"""

from __future__ import annotations

import asyncio
import json
from collections import namedtuple
from datetime import datetime, timezone

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ja4_core.bundle import ModelStore
from ja4_core.control import ControlMessage, latest_valid, order_key, parse_control, sign, supersedes
from stream_scorer.control_follower import ControlFollower
from ja4_core.errors import ControlError
from stream_scorer.model_holder import ModelHolder
from ja4_core.settings import load_settings

KEY = "fuzz-key"
FIELDS = ("type", "model", "version", "uri", "manifest_sha256", "issued_at", "issued_by", "rollback", "signature")
GOOD = {"type": "activate", "model": "default", "version": "20261124T221000000Z-3f2a",
        "uri": "file:///srv/models/default/20261124T221000000Z-3f2a", "manifest_sha256": "3f" * 32,
        "issued_at": "2026-11-24T22:10:00+00:00", "issued_by": "trainer@host", "rollback": False}

Record = namedtuple("Record", "value key partition offset")

# Scalars of every JSON type, including what orjson cannot dump back (integers beyond 64
# bits), non-ASCII and odd code points, and huge strings; then the same nested.
scalars = st.one_of(
    st.none(), st.booleans(),
    st.integers(), st.integers(min_value=2**63 - 2, max_value=2**64 + 2), st.integers(min_value=10**30),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(), st.text(alphabet=st.characters(codec="utf-8"), max_size=80),
    st.sampled_from(["é" * 64, "0" * 64, "Z", "9999-12-31T23:59:59-23:59", "0001-01-01T00:00:00+23:59",
                     "9999-12-31T23:59:59+00:00", "2026-11-24", "2026-11-24T22:10:00Z\n", "\u0660" * 4,
                     "../x", "file:///[", "http://[::1", "file:///srv/models/default/x\x00y", "\ud800"]),
    st.just("x" * 70_000),
)
json_values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=12)


def _dumps(obj: object) -> bytes:
    """JSON text the way a hostile producer may write it (big ints, NaN, lone surrogates)."""
    return json.dumps(obj, ensure_ascii=False).encode("utf-8", "surrogatepass")


@st.composite
def messages(draw) -> tuple[bytes, dict | None]:
    """Near-valid messages: each field kept, dropped or replaced by any JSON value; extra
    fields; and often a correct signature, so that the checks after it are reached too."""
    data: dict = {}
    for name in FIELDS:
        choice = draw(st.sampled_from(["keep", "keep", "drop", "any"]))
        if choice == "keep" and name in GOOD:
            data[name] = GOOD[name]
        elif choice == "any":
            data[name] = draw(json_values)
    data.update(draw(st.dictionaries(st.text(max_size=10), json_values, max_size=3)))
    if draw(st.booleans()):
        try:
            data["signature"] = sign(data, KEY)
        except ControlError:
            pass
    return _dumps(data), data


def _follower() -> ControlFollower:
    settings = load_settings({"CONTROL_SIGNING_KEY": KEY})
    return ControlFollower(settings, ModelHolder(ModelStore("/nonexistent-store"), "default"))


def _check_accepted(msg: ControlMessage) -> None:
    assert isinstance(msg, ControlMessage)
    order_key(msg)  # the ordering of an accepted message must work too
    assert not supersedes(msg, msg)


def _parse_only_accepts_or_refuses(value: bytes, keys: tuple[str, ...]) -> None:
    try:
        msg = parse_control(value, keys, max_future_skew_s=300.0, now=datetime.now(timezone.utc))
    except ControlError:
        return
    _check_accepted(msg)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=512))
def test_random_bytes_are_accepted_or_refused(value: bytes) -> None:
    for keys in ((), (KEY,)):
        _parse_only_accepts_or_refuses(value, keys)


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(messages())
def test_random_json_messages_are_accepted_or_refused(case) -> None:
    value, _ = case
    for keys in ((), (KEY,), ("other-key", KEY)):
        _parse_only_accepts_or_refuses(value, keys)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(st.lists(st.one_of(messages().map(lambda c: c[0]), st.binary(max_size=64), st.none()), max_size=6))
def test_follower_parse_and_topic_reader_never_raise(values) -> None:
    follower = _follower()
    seen = 0
    for offset, value in enumerate(values):
        msg = follower._offer(Record(value, b"default", 0, offset))
        assert msg is None or isinstance(msg, ControlMessage)
        seen += 1
    assert follower.messages_seen == seen
    ledger = latest_valid(values, (KEY,), max_future_skew_s=300.0)
    for chosen in ledger.latest.values():
        _check_accepted(chosen.message)
    assert sum(ledger.refused.values()) <= len(values)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(messages())
def test_holder_never_raises_on_an_accepted_message(case) -> None:
    """Past parsing: the holder's order, URI resolution and load refuse, never raise."""
    value, _ = case
    try:
        msg = parse_control(value, (KEY,))
    except ControlError:
        return
    holder = ModelHolder(ModelStore("/nonexistent-store"), msg.model)
    outcome = asyncio.run(holder.apply(msg))
    assert outcome.startswith(("refused:", "ignored:", "activated")), outcome


def test_the_known_poison_message_is_refused_by_the_follower() -> None:
    """The message of the bug report: a signed message whose signature is non-ASCII."""
    follower = _follower()
    poison = _dumps({**GOOD, "signature": "é" * 64})
    assert follower._offer(Record(poison, b"default", 0, 0)) is None
    assert follower.holder.outcomes["refused:signature"] == 1
    # Read again after a reconnect (the topic is replayed): not counted twice.
    follower._offer(Record(poison, b"default", 0, 0))
    assert follower.holder.outcomes["refused:signature"] == 1
    good = _dumps({**GOOD, "issued_at": datetime.now(timezone.utc).isoformat(),
                   "signature": sign({**GOOD, "issued_at": "x"}, KEY)})
    assert follower._offer(Record(good, b"default", 0, 1)) is None  # wrong signature: refused too
    fields = {**GOOD, "issued_at": datetime.now(timezone.utc).isoformat()}
    signed = _dumps({**fields, "signature": sign(fields, KEY)})
    assert follower._offer(Record(signed, b"default", 0, 2)).version == GOOD["version"]


@pytest.mark.parametrize("value", [_dumps({**GOOD, "signature": "é" * 64}), _dumps({**GOOD, "issued_at": 2**70}),
                                   _dumps({**GOOD, "rollback": 10**40})])
def test_examples_refused(value: bytes) -> None:
    with pytest.raises(ControlError):
        parse_control(value, (KEY,))
