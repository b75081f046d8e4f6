"""The one check of a label (issue 18), shared by the sink's label feed and
``stream-trainer label --file``: each kind of bad input is its own error class with a clear
reason; a file's bad line is named. (c1c1da8 had no label format: the module is new.)"""

from __future__ import annotations

import orjson
import pytest

from ja4_core.label_record import (
    LABEL_MAX_BYTES,
    NOTE_MAX_CHARS,
    LabelFieldError,
    LabelFileError,
    LabelNotJSONError,
    LabelTooLargeError,
    parse_label,
    read_label,
    read_label_file,
)

GOOD = {"window_start": "2026-11-24T10:00:00Z", "src_ip": "10.0.0.1", "ja4": "t13d", "host": "shop.example",
        "label": "bot", "source": "siem"}


def test_a_good_label_and_its_message_round_trip() -> None:
    lab = read_label(orjson.dumps({**GOOD, "analyst": "ann", "note": "n"}))
    assert lab.key == (1795514400, "10.0.0.1", "t13d", "shop.example")
    assert (lab.label, lab.source, lab.analyst, lab.note) == ("bot", "siem", "ann", "n")
    assert read_label(orjson.dumps(lab.as_message())) == lab
    assert parse_label({**GOOD, "window_start": 1795514400}) == parse_label(GOOD)


@pytest.mark.parametrize(("doc", "error", "text"), [
    ({**GOOD, "lable": "bot"}, LabelFieldError, "unknown field 'lable'"),
    ({**GOOD, "label": "maybe"}, LabelFieldError, "'bot' or 'human'"),
    ({**GOOD, "label": "BOT"}, LabelFieldError, "'bot' or 'human'"),
    ({**GOOD, "label": None}, LabelFieldError, "'bot' or 'human'"),
    ({k: v for k, v in GOOD.items() if k != "host"}, LabelFieldError, "'host' is missing"),
    ({k: v for k, v in GOOD.items() if k != "source"}, LabelFieldError, "'source' is missing"),
    ({**GOOD, "src_ip": 7}, LabelFieldError, "'src_ip' must be text"),
    ({**GOOD, "window_start": "yesterday"}, LabelFieldError, "window_start"),
    ({**GOOD, "window_start": 1e300}, LabelFieldError, "out of range"),
    ({**GOOD, "note": "x" * (NOTE_MAX_CHARS + 1)}, LabelTooLargeError, f"more than {NOTE_MAX_CHARS}"),
    ({**GOOD, "analyst": "a" * 500}, LabelTooLargeError, "'analyst'"),
    ([GOOD], LabelNotJSONError, "JSON object"),
])
def test_each_bad_label_is_refused_with_its_reason(doc, error, text) -> None:
    with pytest.raises(error, match=".*" + text.replace("(", r"\(").replace(")", r"\)")):
        parse_label(doc)


def test_bytes_that_are_not_a_label_are_refused() -> None:
    with pytest.raises(LabelNotJSONError, match="not JSON"):
        read_label(b'{"window_start": ')
    with pytest.raises(LabelNotJSONError):
        read_label(None)
    with pytest.raises(LabelTooLargeError, match=str(LABEL_MAX_BYTES)):
        read_label(b" " * (LABEL_MAX_BYTES + 1))


def test_a_note_at_the_limit_is_taken() -> None:
    assert len(parse_label({**GOOD, "note": "x" * NOTE_MAX_CHARS}).note) == NOTE_MAX_CHARS


def test_a_file_is_read_whole_or_refused_naming_the_line(tmp_path) -> None:
    csv = tmp_path / "l.csv"
    csv.write_text("window_start,src_ip,ja4,host,label,note\n2026-11-24T10:00:00Z,10.0.0.1,t13d,h,bot,\n"
                   "2026-11-24T10:00:00Z,10.0.0.2,t13d,h,human,ok\n")
    labels = read_label_file(csv, default_source="import")
    assert [(x.src_ip, x.label, x.source, x.note) for x in labels] == [("10.0.0.1", "bot", "import", ""),
                                                                       ("10.0.0.2", "human", "import", "ok")]
    with pytest.raises(LabelFileError, match=r"l.csv:2: field 'source' is missing"):
        read_label_file(csv)
    nd = tmp_path / "l.ndjson"
    nd.write_bytes(orjson.dumps(GOOD) + b"\n\n" + orjson.dumps({**GOOD, "label": "robot"}) + b"\n")
    with pytest.raises(LabelFileError, match=r"l.ndjson:3: field 'label' must be 'bot' or 'human'"):
        read_label_file(nd)
    nd.write_bytes(orjson.dumps(GOOD) + b"\n{oops\n")
    with pytest.raises(LabelFileError, match=r"l.ndjson:2: not JSON"):
        read_label_file(nd)
    csv.write_text("window_start,src_ip,ja4,host,label,source\n2026-11-24T10:00:00Z,a,b,c,bot,s,extra\n")
    with pytest.raises(LabelFileError, match=r"l.csv:2: more cells than the header"):
        read_label_file(csv)
