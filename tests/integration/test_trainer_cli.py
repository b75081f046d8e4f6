"""``stream-trainer`` end to end, in process: init-db, load, run-once, status, activate."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from ja4_core.bundle import ModelStore
from ja4_core.settings import load_settings
from ja4_dev.simulator import TrafficSimulator
from trainer.cli import main
from ja4_core.clickhouse_io import FEATURES_TABLE, LABELS_TABLE, connect
from trainer.publish import read_control_latest


@pytest.fixture
def common(chdb_url: str, tmp_path: Path, kafka_bootstrap: str, unique: str) -> list[str]:
    return ["--clickhouse-url", chdb_url, "--model-store", str(tmp_path / "models"),
            "--kafka-bootstrap-servers", kafka_bootstrap, "--topic-control", f"trainer-cli-{unique}",
            "--eif-ntrees", "30", "--ae-epochs", "2", "--log-level", "warning", "--promotion-policy", "direct"]


def _settings(common: list[str]):
    flags = dict(zip(common[::2], common[1::2]))
    return load_settings({"CLICKHOUSE_URL": flags["--clickhouse-url"], "MODEL_STORE": flags["--model-store"],
                          "KAFKA_BOOTSTRAP_SERVERS": flags["--kafka-bootstrap-servers"],
                          "TOPIC_CONTROL": flags["--topic-control"]})


def test_train_status_and_rollback_from_the_command_line(common: list[str], capsys: pytest.CaptureFixture) -> None:
    assert main(["init-db", *common]) == 0
    assert main(["init-db", *common]) == 0  # idempotent
    assert main(["load", *common, "--simulate", "--days", "2", "--rate", "80", "--label-share", "0.3"]) == 0
    assert "analyst labels" in capsys.readouterr().out

    assert main(["run-once", *common]) == 0
    out = capsys.readouterr().out
    assert "trained" in out and "ROC AUC" in out
    assert main(["run-once", *common]) == 0
    assert "reused" in capsys.readouterr().out
    assert main(["run-once", *common, "--force"]) == 0
    store = ModelStore(_settings(common).model_store)
    v1, v2 = store.versions("default")
    assert store.current("default") == v2

    assert main(["activate", v1, *common]) == 0
    assert store.current("default") == v1
    entry = read_control_latest(_settings(common))["default"]
    assert entry.message.version == v1 and entry.message.rollback

    capsys.readouterr()
    assert main(["status", "--json", *common]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["current"] == v1 and [v["version"] for v in info["versions"]] == [v1, v2]
    assert [d["decision"] for d in info["decisions"][:4]] == ["rollback", "trained", "reused", "trained"]
    assert info["control"]["message"]["version"] == v1 and info["control"]["message"]["rollback"]
    assert main(["status", *common]) == 0
    assert "rollback" in capsys.readouterr().out

    assert main(["activate", "20990101T000000000Z-0000", *common]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "no version" in err
    assert store.current("default") == v1


@pytest.mark.parametrize("argv, env, name", [
    (["run-once", "--drift-threshold", "2"], {}, "DRIFT_THRESHOLD"),
    (["status"], {"EIF_NTREES": "many"}, "EIF_NTREES"),
    (["init-db"], {"CLICKHOUSE_URL": "mysql://db"}, "CLICKHOUSE_URL"),
    (["init-db", "--clickhouse-url", "chdb:///tmp/x?database=no-dashes"], {}, "CLICKHOUSE_URL"),
    (["load"], {}, "--file"),
])
def test_a_bad_setting_exits_2_with_one_line_naming_it(argv: list[str], env: dict, name: str,
                                                        capsys: pytest.CaptureFixture) -> None:
    assert main(argv, environ=env) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and name in err


def test_load_from_ndjson_and_csv_files(common: list[str], tmp_path: Path, chdb_url: str) -> None:
    rows = TrafficSimulator(seed=3).records(40, span_s=7200)
    ndjson = tmp_path / "rows.ndjson"
    ndjson.write_text("\n".join(json.dumps({**r, "my_extra_feature": 1.5}) for r in rows[:20]) + "\n"
                      + json.dumps(rows[20:25]) + "\n")  # a batch envelope line too
    with open(tmp_path / "rows.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        for r in rows[25:]:
            writer.writerow({**r, "hits": "" if r is rows[25] else r["hits"]})
    assert main(["load", *common, "--file", str(ndjson)]) == 0
    assert main(["load", *common, "--file", str(tmp_path / "rows.csv")]) == 0
    with connect(chdb_url) as ch:
        assert ch.count(FEATURES_TABLE) == 40 and ch.count(LABELS_TABLE) == 0
        assert "my_extra_feature" in ch.numeric_columns()
        nulls = ch.client.query(f"SELECT countIf(hits IS NULL), countIf(my_extra_feature = 1.5) "
                                f"FROM {ch.table(FEATURES_TABLE)}").result_rows[0]
        assert nulls == (1, 20)
    bad = tmp_path / "bad.ndjson"
    bad.write_text('{"window_start": 1}\nnot json\n')
    assert main(["load", *common, "--file", str(bad)]) == 1
