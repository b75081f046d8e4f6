"""The review console's pure parts (issue 18): its access rule, its filters, and the docstring
examples of the label format and the console modules. (c1c1da8 had none of these modules.)"""

from __future__ import annotations

import doctest

import pytest

from ja4_core import label_record
from ja4_core.errors import ConfigError
from stream_scorer import console_auth, console_data
from stream_scorer.console_auth import bearer, check_bind, is_loopback, token_ok
from stream_scorer.console_data import ReviewQuery, ReviewQueryError, _reasons


@pytest.mark.parametrize("module", [label_record, console_auth, console_data])
def test_doctests(module) -> None:
    result = doctest.testmod(module)
    assert result.attempted > 0 and result.failed == 0


def test_off_loopback_needs_a_token_and_the_message_never_holds_one() -> None:
    for host in ("127.0.0.1", "127.3.4.5", "::1", "localhost"):
        check_bind(host, None)
        assert is_loopback(host)
    for host in ("0.0.0.0", "10.1.2.3", "::", "console.example"):
        with pytest.raises(ConfigError, match="CONSOLE_TOKEN: required"):
            check_bind(host, None)
        check_bind(host, "a-token-of-16-chars")


def test_token_check() -> None:
    assert token_ok(None, None) and token_ok("", "anything")
    assert token_ok("t" * 20, "t" * 20)
    assert not token_ok("t" * 20, None) and not token_ok("t" * 20, "t" * 19) and not token_ok("t" * 20, "")
    assert bearer("Bearer abc") == "abc" and bearer("bearer  abc ") == "abc"
    assert bearer("Basic abc") is None and bearer("Bearer ") is None and bearer(None) is None


@pytest.mark.parametrize(("params", "text"), [
    ({"level": "SEVERE"}, "not one of"),
    ({"limit": "0"}, "between 1 and"),
    ({"limit": "many"}, "integer"),
    ({"host": "h" * 256}, "at most 255"),
])
def test_bad_filters_are_refused(params, text) -> None:
    with pytest.raises(ReviewQueryError, match=text):
        ReviewQuery.from_params(params)


def test_reasons_text_is_read_leniently() -> None:
    assert _reasons('[{"feature": "hits"}]') == [{"feature": "hits"}]
    assert _reasons("") == [] and _reasons(None) == [] and _reasons("{oops") == [] and _reasons('{"a": 1}') == []


def test_console_settings() -> None:
    from ja4_core.settings import load_settings

    s = load_settings(environ={})
    assert (s.topic_labels, s.console_host, s.console_port, s.console_token) == ("ja4.labels", "127.0.0.1", 6068, None)
    with pytest.raises(ConfigError, match="^CONSOLE_TOKEN: must be at least 16 characters") as info:
        load_settings(environ={"CONSOLE_TOKEN": "short-secret"})
    assert "short-secret" not in str(info.value)
    token = "a-console-token-long-enough"
    s = load_settings(environ={"CONSOLE_TOKEN": token})
    assert token not in repr(s) and token in s.secret_values()
    with pytest.raises(ConfigError, match="^TOPIC_LABELS: "):
        load_settings(environ={"TOPIC_LABELS": "bad topic"})
