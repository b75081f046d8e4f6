"""``stream-trainer label --file`` (issue 18): CSV or NDJSON labels with the label feed's own
check; a bad line is an error naming it and nothing is stored; labels of windows never scored
are imported and counted apart. On c1c1da8 the command did not exist (usage error, exit 2)."""

from __future__ import annotations

import json
import subprocess
import sys

import orjson

from trainer.cli import main

WINDOW = "2026-11-24T10:00:00Z"


def _rows(dsn: str, sql: str) -> list:
    code = ("import json,sys; from ja4_core.clickhouse_io import connect; ch = connect(sys.argv[1]); ch.init_db(); "
            "print(json.dumps(ch.client.query(sys.argv[2]).result_rows, default=str))")
    out = subprocess.run([sys.executable, "-c", code, dsn, sql], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _score(dsn: str, ip: str) -> None:
    rec = {"window_start": WINDOW, "src_ip": ip, "ja4": "t13d", "host": "h", "anomaly_score": 0.9,
           "threat_level": "HIGH", "model_version": "v1"}
    code = ("import json,sys; from ja4_core.clickhouse_io import connect; ch = connect(sys.argv[1]); ch.init_db(); "
            "ch.insert_scores([json.loads(sys.argv[2])]); ch.close()")
    subprocess.run([sys.executable, "-c", code, dsn, json.dumps(rec)], check=True)


def test_label_file_import_counts_unscored_and_refuses_a_bad_line_whole(tmp_path, capsys) -> None:
    dsn = f"chdb://{tmp_path / 'ch'}"
    _score(dsn, "10.0.0.1")
    env = {"CLICKHOUSE_URL": dsn}
    csv = tmp_path / "labels.csv"
    csv.write_text("window_start,src_ip,ja4,host,label,source,analyst,note\n"
                   f"{WINDOW},10.0.0.1,t13d,h,bot,siem,ann,seen scraping\n"
                   f"{WINDOW},10.0.0.2,t13d,h,human,,,\n")
    assert main(["label", "--file", str(csv), "--source", "export"], environ=env) == 0
    out = capsys.readouterr().out
    assert "imported 2 labels (1 bot, 1 human)" in out and "1 of them for windows never scored" in out
    assert _rows(dsn, "SELECT src_ip, label, source, analyst, note FROM ja4.soc_labels ORDER BY src_ip") == [
        ["10.0.0.1", "bot", "siem", "ann", "seen scraping"], ["10.0.0.2", "human", "export", "", ""]]

    good = {"window_start": WINDOW, "src_ip": "10.0.0.9", "ja4": "t13d", "host": "h", "label": "bot", "source": "s"}
    cases = {
        "unknown field": (orjson.dumps({**good, "colour": "red"}), ":2: unknown field 'colour'"),
        "label value": (orjson.dumps({**good, "label": "spam"}), ":2: field 'label' must be 'bot' or 'human'"),
        "malformed": (b'{"window_start": "2026', ":2: not JSON"),
        "oversized note": (orjson.dumps({**good, "note": "n" * 1001}), ":2: field 'note' is 1001 characters"),
    }
    for name, (line, expected) in cases.items():
        nd = tmp_path / f"{name.replace(' ', '_')}.ndjson"
        nd.write_bytes(orjson.dumps(good) + b"\n" + line + b"\n" + orjson.dumps(good) + b"\n")
        assert main(["label", "--file", str(nd)], environ=env) == 1, name
        err = capsys.readouterr().err
        assert f"{nd}{expected}" in err, (name, err)
    # Nothing of the refused files was stored, not even their good lines.
    assert _rows(dsn, "SELECT count() FROM ja4.soc_labels") == [[2]]


def test_a_label_with_a_bot_kind_lands_with_it_in_soc_labels(tmp_path, capsys) -> None:
    """Issue 16: an optional ``kind`` on bot labels (the trainer's recall per kind); a kind on
    a human is refused and nothing of that file is stored. On c1c1da8 the column did not exist
    and ``kind`` was an unknown field."""
    dsn = f"chdb://{tmp_path / 'ch'}"
    env = {"CLICKHOUSE_URL": dsn}
    csv = tmp_path / "labels.csv"
    csv.write_text("window_start,src_ip,ja4,host,label,source,kind\n"
                   f"{WINDOW},10.0.0.1,t13d,h,bot,siem,headless_impersonator\n"
                   f"{WINDOW},10.0.0.2,t13d,h,bot,siem,\n")
    assert main(["label", "--file", str(csv)], environ=env) == 0
    assert _rows(dsn, "SELECT src_ip, label, kind FROM ja4.soc_labels ORDER BY src_ip") == [
        ["10.0.0.1", "bot", "headless_impersonator"], ["10.0.0.2", "bot", ""]]
    capsys.readouterr()
    bad = tmp_path / "bad.ndjson"
    bad.write_bytes(orjson.dumps({"window_start": WINDOW, "src_ip": "10.0.0.3", "ja4": "t13d", "host": "h",
                                  "label": "human", "source": "s", "kind": "scraper"}) + b"\n")
    assert main(["label", "--file", str(bad)], environ=env) == 1
    assert f"{bad}:1: field 'kind' names a bot family" in capsys.readouterr().err
    assert _rows(dsn, "SELECT count() FROM ja4.soc_labels") == [[2]]
