"""The retrain_request control message: build, sign, parse; refused with ControlError only;
never an activation for the existing readers."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ja4_core.control import latest_valid
from ja4_core.errors import ControlError, ControlFutureError, ControlMalformedError, ControlSignatureError
from ja4_core.retrain_request import build_retrain_request, is_retrain_request, key_for, parse_retrain_request


def _req(**kw: object) -> bytes:
    args: dict = dict(model="default", version="v1", issued_by="host:1:6066", drift_share=0.5, threshold=0.3,
                      drifted=["hits", "header_count"], window_s=300.0, window_records=1000, sustained_s=60.0,
                      signing_key="k")
    args.update(kw)
    return build_retrain_request(**args)


def test_round_trip_and_signature() -> None:
    req = parse_retrain_request(_req(), ("k",))
    assert req.model == "default" and req.version == "v1" and req.drifted_features == ["hits", "header_count"]
    assert req.figures()["drift_share"] == 0.5 and "signature" not in req.figures()
    assert parse_retrain_request(_req(), ("other", "k")).signature  # the previous key during rotation
    with pytest.raises(ControlSignatureError):
        parse_retrain_request(_req(), ("other",))
    with pytest.raises(ControlSignatureError):
        parse_retrain_request(_req(signing_key=None), ("k",))
    tampered = orjson.loads(_req())
    tampered["drift_share"] = 0.9
    with pytest.raises(ControlSignatureError):
        parse_retrain_request(orjson.dumps(tampered), ("k",))
    assert key_for("default") == b"retrain-request:default"


@pytest.mark.parametrize("change", [
    {"drift_share": 1.5}, {"drift_share": "0.5"}, {"window_records": -1}, {"window_records": 1.5},
    {"model": "../x"}, {"version": ""}, {"issued_at": "yesterday"}, {"drifted": ["a"]}, {"threshold": float("nan")},
    {"type": "activate"}, {"sustained_s": True},
])
def test_malformed_requests_are_refused(change: dict) -> None:
    data = orjson.loads(_req(signing_key=None))
    data.update(change)
    try:
        value = orjson.dumps(data)
    except orjson.JSONEncodeError:
        value = repr(data).encode()
    with pytest.raises(ControlMalformedError):
        parse_retrain_request(value)


def test_a_request_from_the_future_is_refused() -> None:
    value = _req(issued_at=datetime.now(timezone.utc) + timedelta(hours=1))
    with pytest.raises(ControlFutureError):
        parse_retrain_request(value, ("k",), max_future_skew_s=300)


def test_the_activate_readers_never_count_a_request_as_an_activation() -> None:
    ledger = latest_valid([_req(), _req(signing_key=None)], ("k",))
    assert ledger.latest == {} and ledger.refused["malformed"] == 2


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.binary(max_size=300), st.dictionaries(st.sampled_from(
    ["type", "model", "version", "issued_at", "issued_by", "drift_share", "threshold", "drifted", "window_s",
     "window_records", "sustained_s", "signature"]),
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=20), st.just("retrain_request"))
).map(orjson.dumps)))
def test_any_input_is_parsed_or_refused_with_a_control_error(value: bytes) -> None:
    is_retrain_request(value)
    try:
        parse_retrain_request(value, ("k",))
    except ControlError:
        pass
