"""Pure helpers of the ClickHouse module: DSNs, times, identifiers; and the modules' doctests."""

import doctest
from datetime import datetime, timezone

import pytest

import ja4_core.clickhouse_io as chio
from ja4_core.errors import ConfigError, SchemaError
from trainer import drift, fit, labels, plan, prepare, publish


@pytest.mark.parametrize("dsn, kind, database, path", [
    ("chdb:///var/lib/ch", "chdb", "ja4", "/var/lib/ch"),
    ("chdb:///var/lib/ch?database=bots", "chdb", "bots", "/var/lib/ch"),
    ("chdb://memory", "chdb", "ja4", None),
    ("chdb://memory/other", "chdb", "other", None),
    ("http://u:p@ch:8123/bots", "http", "bots", None),
    ("https://ch:8443", "http", "ja4", None),
    ("clickhouses://ch:8443/x", "http", "x", None),
])
def test_parse_dsn(dsn: str, kind: str, database: str, path: str | None) -> None:
    target = chio.parse_dsn(dsn)
    assert (target.kind, target.database, target.chdb_path) == (kind, database, path)
    if kind == "http":
        assert "/bots" not in (target.http_dsn or "") and (target.http_dsn or "").startswith("http")


def test_relative_chdb_path_is_resolved() -> None:
    target = chio.parse_dsn("chdb://./var/clickhouse")
    assert target.chdb_path is not None and target.chdb_path.endswith("/var/clickhouse") and target.database == "ja4"


@pytest.mark.parametrize("dsn", ["chdb:///x?database=a-b", "http://h/x-y", "mysql://h/db", "chdb://"])
def test_bad_dsns_are_config_errors(dsn: str) -> None:
    with pytest.raises(ConfigError, match="CLICKHOUSE_URL"):
        chio.parse_dsn(dsn)


@pytest.mark.parametrize("value", ["2026-11-24T10:00:00Z", "2026-11-24T10:00:00+00:00", "2026-11-24 10:00:00",
                                   1795514400, 1795514400.7, "1795514400",
                                   datetime(2026, 11, 24, 10, tzinfo=timezone.utc), datetime(2026, 11, 24, 10)])
def test_window_start_forms(value: object) -> None:
    assert chio.to_epoch(value) == 1795514400


@pytest.mark.parametrize("value", [None, True, "yesterday", float("nan"), [1]])
def test_bad_window_start(value: object) -> None:
    with pytest.raises(SchemaError):
        chio.to_epoch(value)


@pytest.mark.parametrize("name", ["a-b", "1abc", "x y", "a`b", "", "é"])
def test_identifiers_are_validated(name: str) -> None:
    with pytest.raises(SchemaError):
        chio.ident(name)


@pytest.mark.parametrize("module", [chio, drift, fit, labels, plan, prepare, publish])
def test_doctests(module: object) -> None:
    assert doctest.testmod(module).failed == 0


def test_trainer_metrics_textfile(tmp_path) -> None:
    """The run's figures land in a Prometheus textfile that node-exporter can read."""
    from types import SimpleNamespace

    from prometheus_client.parser import text_string_to_metric_families

    from trainer.metrics import write_run_metrics

    result = SimpleNamespace(decision="trained", duration_s=12.5, timings={"fit": 9.0},
                             metrics={"evaluation": {"eif": {"roc_auc": 0.93}, "ensemble": {"roc_auc": 0.97}}},
                             drift=SimpleNamespace(share=0.1), publish_error=None)
    path = tmp_path / "trainer.prom"
    write_run_metrics(result, path)
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for fam in text_string_to_metric_families(path.read_text()) for s in fam.samples}
    assert samples[("ja4_trainer_last_decision", (("decision", "trained"),))] == 1.0
    assert samples[("ja4_trainer_last_decision", (("decision", "reused"),))] == 0.0
    assert samples[("ja4_trainer_roc_auc", (("component", "ensemble"),))] == 0.97
    assert samples[("ja4_trainer_phase_seconds", (("phase", "fit"),))] == 9.0
    assert samples[("ja4_trainer_drift_share", ())] == 0.1
