"""Control messages of champion and challenger: ``shadow`` and ``retire`` parse, sign and
order like ``activate``; the ledger keeps the champion and the live challenger apart."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import orjson
import pytest

from ja4_core.control import (
    ControlRecord,
    build_control,
    challenger_live,
    control_key,
    latest_valid,
    parse_control,
)
from ja4_core.errors import ControlMalformedError, ControlSignatureError

KEY = "k"
SHA = "a" * 64
T0 = datetime(2026, 11, 24, 22, 0, tzinfo=timezone.utc)


def msg(msg_type: str, version: str, minutes: int, key: str | None = KEY) -> bytes:
    return build_control(msg_type, model="default", version=version, uri=f"file:///s/default/{version}",
                         manifest_sha256=SHA, issued_by="test", signing_key=key,
                         issued_at=T0 + timedelta(minutes=minutes))


@pytest.mark.parametrize("msg_type,role", [("activate", "champion"), ("shadow", "challenger"),
                                           ("retire", "challenger")])
def test_each_type_parses_signed_with_its_role(msg_type: str, role: str) -> None:
    parsed = parse_control(msg(msg_type, "v2", 1), (KEY,))
    assert (parsed.type, parsed.role, parsed.version) == (msg_type, role, "v2")


def test_a_shadow_message_is_signed_like_the_rest() -> None:
    data = orjson.loads(msg("shadow", "v2", 1))
    data["type"] = "activate"  # turning a challenger into a champion breaks the signature
    with pytest.raises(ControlSignatureError):
        parse_control(orjson.dumps(data), (KEY,))
    with pytest.raises(ControlSignatureError):
        parse_control(msg("shadow", "v2", 1, key=None), (KEY,))


def test_an_unknown_type_is_malformed() -> None:
    data = orjson.loads(msg("shadow", "v2", 1, key=None))
    data["type"] = "challenge"
    with pytest.raises(ControlMalformedError):
        parse_control(orjson.dumps(data))
    with pytest.raises(ControlMalformedError):
        build_control("promote", model="default", version="v", uri="u", manifest_sha256=SHA, issued_by="x")


def test_challenger_messages_have_their_own_kafka_key() -> None:
    assert control_key("activate", "default") == b"default"
    assert control_key("shadow", "default") == control_key("retire", "default") == b"default/challenger"


def _ledger(*values: bytes):
    return latest_valid([ControlRecord(v) for v in values], (KEY,))


def test_the_ledger_gives_the_champion_and_the_live_challenger() -> None:
    ledger = _ledger(msg("activate", "v1", 0), msg("shadow", "v2", 1))
    assert ledger.latest["default"].message.version == "v1"
    live = ledger.live_challenger("default")
    assert live is not None and live.message.version == "v2"


def test_the_choice_does_not_depend_on_reading_order() -> None:
    values = [msg("activate", "v1", 0), msg("shadow", "v2", 1), msg("activate", "v0", -5)]
    for order in (values, values[::-1], [values[1], values[0], values[2]]):
        ledger = _ledger(*order)
        assert ledger.latest["default"].message.version == "v1"
        assert ledger.live_challenger("default").message.version == "v2"  # type: ignore[union-attr]


@pytest.mark.parametrize("later", ["retire", "activate"])
def test_a_later_retire_or_activation_ends_the_shadowing(later: str) -> None:
    ledger = _ledger(msg("activate", "v1", 0), msg("shadow", "v2", 1), msg(later, "v2", 2))
    assert ledger.live_challenger("default") is None
    assert ledger.latest["default"].message.version == ("v2" if later == "activate" else "v1")


def test_a_shadow_older_than_the_champion_is_not_live() -> None:
    ledger = _ledger(msg("shadow", "v2", 0), msg("activate", "v3", 1))
    assert ledger.live_challenger("default") is None
    assert not challenger_live(None, None)


def test_a_replayed_shadow_after_a_retire_changes_nothing() -> None:
    shadow = msg("shadow", "v2", 1)
    ledger = _ledger(msg("activate", "v1", 0), shadow, msg("retire", "v2", 2), shadow)
    assert ledger.live_challenger("default") is None
    assert ledger.challenger["default"].message.type == "retire"
