"""Control messages (ja4_core.control): build, sign, parse, verify, refuse."""

from __future__ import annotations

from datetime import datetime, timezone

import orjson
import pytest

from ja4_core.control import MAX_CONTROL_BYTES, ControlMessage, build_activate, parse_control, sign, to_dict
from ja4_core.errors import BundleError, ControlError

SHA = "3f" * 32
WHEN = datetime(2026, 11, 24, 22, 10, tzinfo=timezone.utc)


def build(**kw) -> bytes:
    args = dict(model="default", version="20261124T221000000Z-3f2a",
                uri="file:///srv/models/default/20261124T221000000Z-3f2a", manifest_sha256=SHA,
                issued_by="trainer@host", issued_at=WHEN)
    args.update(kw)
    return build_activate(**args)


def fields(value: bytes) -> dict:
    return orjson.loads(value)


def test_round_trip_without_signature():
    msg = parse_control(build())
    assert msg == ControlMessage(type="activate", model="default", version="20261124T221000000Z-3f2a",
                                 uri="file:///srv/models/default/20261124T221000000Z-3f2a", manifest_sha256=SHA,
                                 issued_at=WHEN.isoformat(), issued_by="trainer@host", rollback=False,
                                 signature=None)
    assert msg.issued_at_dt == WHEN
    assert to_dict(msg)["version"] == msg.version


def test_round_trip_with_signature_and_rollback():
    value = build(signing_key="k1", rollback=True)
    assert "signature" in fields(value)
    msg = parse_control(value, keys=("k1",))
    assert msg.rollback is True and msg.signature == fields(value)["signature"]


def test_signature_is_hmac_sha256_over_every_other_field():
    import hashlib
    import hmac

    value = build(signing_key="k1")
    data = fields(value)
    body = {k: v for k, v in data.items() if k != "signature"}
    expected = hmac.new(b"k1", orjson.dumps(body, option=orjson.OPT_SORT_KEYS), hashlib.sha256).hexdigest()
    assert data["signature"] == expected == sign(data, "k1")


def test_unsigned_message_is_refused_when_keys_are_set():
    with pytest.raises(ControlError, match="unsigned"):
        parse_control(build(), keys=("k1",))


def test_signature_is_ignored_when_no_key_is_set():
    assert parse_control(build(signing_key="whatever")).model == "default"


def test_bad_signature_is_refused():
    with pytest.raises(ControlError, match="bad signature"):
        parse_control(build(signing_key="attacker"), keys=("k1",))


@pytest.mark.parametrize("signature", ["", "0" * 64, 5, None, ["x"]])
def test_malformed_signature_is_refused(signature):
    data = fields(build(signing_key="k1"))
    data["signature"] = signature
    with pytest.raises(ControlError):
        parse_control(orjson.dumps(data), keys=("k1",))


def test_previous_key_is_accepted_during_rotation():
    old = build(signing_key="old-key")
    assert parse_control(old, keys=("new-key", "old-key")).model == "default"
    assert parse_control(build(signing_key="new-key"), keys=("new-key", "old-key")).model == "default"
    with pytest.raises(ControlError, match="bad signature"):
        parse_control(old, keys=("new-key",))  # rotation finished: the old key is retired


@pytest.mark.parametrize("field, value", [
    ("version", "20261124T221000000Z-ffff"),
    ("uri", "file:///srv/evil/default/v"),
    ("manifest_sha256", "0" * 64),
    ("model", "other"),
    ("issued_at", "2030-01-01T00:00:00+00:00"),
    ("issued_by", "mallory@host"),
    ("rollback", True),
    ("extra", "added"),
])
def test_any_changed_or_added_field_breaks_the_signature(field, value):
    data = fields(build(signing_key="k1"))
    data[field] = value
    with pytest.raises(ControlError, match="bad signature"):
        parse_control(orjson.dumps(data), keys=("k1",))


def test_key_order_and_whitespace_do_not_matter():
    data = fields(build(signing_key="k1"))
    reordered = b"{\n" + b",\n".join(orjson.dumps({k: data[k]})[1:-1] for k in reversed(list(data))) + b"\n}"
    assert parse_control(reordered, keys=("k1",)).version == data["version"]


@pytest.mark.parametrize("value, match", [
    (None, "tombstone"),
    (b"", "not JSON"),
    (b"{oops", "not JSON"),
    (b"\xff\xfe", "not JSON"),
    (b"[1, 2]", "not a JSON object"),
    (b'"activate"', "not a JSON object"),
    (b"null", "not a JSON object"),
], ids=["tombstone", "empty", "broken", "bad-utf8", "array", "string", "null"])
def test_malformed_message_is_refused(value, match):
    with pytest.raises(ControlError, match=match):
        parse_control(value)


def test_oversized_message_is_refused_before_parsing():
    data = fields(build())
    data["issued_by"] = "x" * MAX_CONTROL_BYTES
    with pytest.raises(ControlError, match="exceeds"):
        parse_control(orjson.dumps(data))
    with pytest.raises(ControlError, match="exceeds"):
        parse_control(b"{" * (MAX_CONTROL_BYTES + 1))


@pytest.mark.parametrize("type_", ["deactivate", None, 1, "ACTIVATE"])
def test_unknown_type_is_refused(type_):
    data = fields(build())
    data["type"] = type_
    with pytest.raises(ControlError, match="type"):
        parse_control(orjson.dumps(data))


@pytest.mark.parametrize("name", ["model", "version", "uri", "manifest_sha256", "issued_at", "issued_by"])
@pytest.mark.parametrize("how", ["missing", "empty", "number", "null"])
def test_missing_or_non_string_field_is_refused(name, how):
    data = fields(build())
    if how == "missing":
        del data[name]
    else:
        data[name] = {"empty": "", "number": 7, "null": None}[how]
    with pytest.raises(ControlError, match=repr(name)):
        parse_control(orjson.dumps(data))


@pytest.mark.parametrize("field", ["model", "version"])
@pytest.mark.parametrize("unsafe", ["..", "../default", "a/b", "/abs", ".hidden", "x\\y", "v 1"])
def test_unsafe_model_or_version_is_refused(field, unsafe):
    data = fields(build())
    data[field] = unsafe
    with pytest.raises(ControlError, match="unsafe"):
        parse_control(orjson.dumps(data))


def test_build_refuses_unsafe_names():
    with pytest.raises(BundleError):
        build(version="../x")
    with pytest.raises(BundleError):
        build(model="a/b")


@pytest.mark.parametrize("sha", ["abc", "3F" * 32, "g" * 64, "0" * 65])
def test_malformed_manifest_sha_is_refused(sha):
    data = fields(build())
    data["manifest_sha256"] = sha
    with pytest.raises(ControlError, match="manifest_sha256"):
        parse_control(orjson.dumps(data))


@pytest.mark.parametrize("issued_at", ["yesterday", "2026-13-01T00:00:00Z", "1764018000"])
def test_bad_issued_at_is_refused(issued_at):
    data = fields(build())
    data["issued_at"] = issued_at
    with pytest.raises(ControlError, match="issued_at"):
        parse_control(orjson.dumps(data))


def test_naive_issued_at_is_taken_as_utc():
    data = fields(build())
    data["issued_at"] = "2026-11-24T22:10:00"
    assert parse_control(orjson.dumps(data)).issued_at_dt == WHEN


@pytest.mark.parametrize("rollback", ["true", 1, None])
def test_non_boolean_rollback_is_refused(rollback):
    data = fields(build())
    data["rollback"] = rollback
    with pytest.raises(ControlError, match="rollback"):
        parse_control(orjson.dumps(data))


def test_unknown_extra_fields_are_dropped_from_the_parsed_message():
    data = fields(build())
    data["note"] = "hello"
    assert not hasattr(parse_control(orjson.dumps(data)), "note")


def test_deeply_nested_field_is_refused_with_a_control_error():
    value = build(signing_key="k1")
    value = value[:-1] + b',"extra":' + b"[" * 300 + b"]" * 300 + b"}"
    with pytest.raises(ControlError):
        parse_control(value, keys=("k1",))


# --- refusals told apart by class; the one order (issue 13, items 1, 3, 9) ---------------

from datetime import timedelta  # noqa: E402

from ja4_core.control import ControlRecord, latest_valid, supersedes  # noqa: E402
from ja4_core.errors import ControlFutureError, ControlMalformedError, ControlSignatureError  # noqa: E402


@pytest.mark.parametrize("signature", ["é" * 64, "\u00e9" + "0" * 63, "😀", "0" * 63 + "\u0660", "AB" * 32])
def test_non_ascii_or_non_hex_signature_is_a_signature_refusal(signature):
    """hmac.compare_digest raises TypeError on a non-ASCII str: that must be a refusal."""
    data = fields(build(signing_key="k1"))
    data["signature"] = signature
    with pytest.raises(ControlSignatureError):
        parse_control(orjson.dumps(data), keys=("k1",))


def test_refusal_classes():
    with pytest.raises(ControlSignatureError):
        parse_control(build(), keys=("k1",))
    with pytest.raises(ControlSignatureError):
        parse_control(build(signing_key="attacker"), keys=("k1",))
    with pytest.raises(ControlMalformedError):
        parse_control(b"{oops", keys=("k1",))
    assert (ControlSignatureError.reason, ControlMalformedError.reason, ControlFutureError.reason) == \
        ("signature", "malformed", "future")


@pytest.mark.parametrize("sha", [SHA + "\n", SHA + "\r\n", "\n" + SHA, SHA + " "])
def test_manifest_sha_with_trailing_newline_is_refused_at_parse(sha):
    data = fields(build())
    data["manifest_sha256"] = sha
    with pytest.raises(ControlMalformedError, match="manifest_sha256"):
        parse_control(orjson.dumps(data))


@pytest.mark.parametrize("issued_at", ["9999-12-31T23:59:59-23:59", "0001-01-01T00:00:00+23:59"])
def test_issued_at_outside_the_utc_range_is_refused(issued_at):
    data = fields(build())
    data["issued_at"] = issued_at
    with pytest.raises(ControlMalformedError, match="issued_at"):
        parse_control(orjson.dumps(data))


def test_future_dated_message_is_refused_and_carries_the_message():
    now = datetime.now(timezone.utc)
    value = build(signing_key="k1", issued_at=datetime(9999, 1, 1, tzinfo=timezone.utc))
    assert parse_control(value, keys=("k1",)).version  # no skew given: not checked
    with pytest.raises(ControlFutureError) as info:
        parse_control(value, keys=("k1",), max_future_skew_s=300, now=now)
    assert info.value.message.issued_at_dt.year == 9999
    within = build(issued_at=now + timedelta(seconds=299))
    assert parse_control(within, max_future_skew_s=300, now=now)
    with pytest.raises(ControlFutureError):
        parse_control(build(issued_at=now + timedelta(seconds=301)), max_future_skew_s=300, now=now)


def test_a_rollback_does_not_bypass_the_order():
    old = parse_control(build(version="v1", issued_at=WHEN))
    new = parse_control(build(version="v2", issued_at=WHEN + timedelta(seconds=10)))
    replayed_rollback = parse_control(build(version="v1", rollback=True, issued_at=WHEN + timedelta(seconds=5)))
    fresh_rollback = parse_control(build(version="v1", rollback=True, issued_at=WHEN + timedelta(seconds=20)))
    assert supersedes(new, old) and not supersedes(old, new)
    assert not supersedes(replayed_rollback, new)
    assert supersedes(fresh_rollback, new)
    assert not supersedes(new, new)  # the same message again changes nothing


def test_latest_valid_skips_bad_messages_and_replays():
    key = ("k1",)
    v1 = build(version="v1", signing_key="k1", issued_at=WHEN)
    v2 = build(version="v2", signing_key="k1", issued_at=WHEN + timedelta(seconds=10))
    rollback = build(version="v1", signing_key="k1", rollback=True, issued_at=WHEN + timedelta(seconds=20))
    v3 = build(version="v3", signing_key="k1", issued_at=WHEN + timedelta(seconds=30))
    poison = orjson.dumps({**fields(v3), "version": "v9", "signature": "é" * 64})
    future = build(version="v8", signing_key="k1", issued_at=datetime(9999, 1, 1, tzinfo=timezone.utc))
    topic = [v1, v2, rollback, poison, future, None, b"\xff", v3, rollback, v1, v2]
    ledger = latest_valid([ControlRecord(v, b"default", 0, i) for i, v in enumerate(topic)], key,
                          max_future_skew_s=300)
    chosen = ledger.latest["default"]
    assert chosen.message.version == "v3" and chosen.record.offset == 7
    assert ledger.refused == {"signature": 1, "future": 1, "malformed": 2}
    assert set(ledger.last_refused) == {"default"}


def test_latest_valid_is_independent_of_arrival_order():
    """Partitions interleave differently for each reader: the winner must not depend on it."""
    import random

    values = [build(version=f"v{i}", issued_at=WHEN + timedelta(seconds=i % 7)) for i in range(20)]
    winners = set()
    for seed in range(10):
        shuffled = values[:]
        random.Random(seed).shuffle(shuffled)
        winners.add(latest_valid(shuffled).latest["default"].message)
    assert len(winners) == 1


def test_deferred_future_message_is_taken_up_when_due():
    from ja4_core.control import ControlLedger

    clock = [WHEN]
    ledger = ControlLedger(max_future_skew_s=60, clock=lambda: clock[0])
    assert ledger.offer(build(version="v1", issued_at=WHEN)).outcome == "latest"
    early = ledger.offer(build(version="v2", issued_at=WHEN + timedelta(seconds=600)))
    assert early.outcome == "deferred" and early.reason == "future"
    assert ledger.due() == [] and ledger.latest["default"].message.version == "v1"
    clock[0] = WHEN + timedelta(seconds=541)
    (offer,) = ledger.due()
    assert offer.outcome == "latest" and ledger.latest["default"].message.version == "v2"
    # A replica starting now reads the same topic and chooses the same message.
    assert latest_valid([build(version="v1", issued_at=WHEN), build(version="v2", issued_at=WHEN + timedelta(seconds=600))],
                        max_future_skew_s=60, clock=lambda: clock[0]).latest["default"].message.version == "v2"
