"""The one subprocess helper (:mod:`ja4_dev.processes`) of the demo, the tests and the bench."""

from __future__ import annotations

import os
import signal
import sys
import time

import pytest

from ja4_dev.processes import ProbeTimeout, ProcessExited, ProductProcess
from tests.helpers import free_port

#: Ignores SIGTERM, starts a grandchild that does too, says so, then sleeps.
STUBBORN = r"""
import signal, subprocess, sys, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
child = subprocess.Popen([sys.executable, "-c",
    "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)"])
print("grandchild", child.pid, flush=True)
time.sleep(600)
"""

#: Answers GET with {"ready": true, "env": $PROBE_VALUE} on $PORT.
SERVER = r"""
import http.server, json, os
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = json.dumps({"ready": True, "env": os.environ["PROBE_VALUE"]}).encode()
        self.send_response(200); self.end_headers(); self.wfile.write(body)
    def log_message(self, *a): pass
http.server.HTTPServer(("127.0.0.1", int(os.environ["PORT"])), H).serve_forever()
"""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie (exited, not yet reaped by its parent) counts as gone
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split()[2] != "Z"
    except OSError:
        return False


def test_stop_is_sigterm_then_sigkill_after_the_grace_and_reaches_the_whole_group(tmp_path) -> None:
    p = ProductProcess("stubborn", [sys.executable, "-c", STUBBORN], {}, tmp_path / "stubborn.log").start()
    deadline = time.monotonic() + 20
    while "grandchild" not in p.log() and time.monotonic() < deadline:
        time.sleep(0.05)
    grandchild = int(p.log().split()[1])
    started = time.monotonic()
    code = p.stop(grace=1.0)
    took = time.monotonic() - started
    assert code == -signal.SIGKILL  # SIGTERM was ignored, so the grace ran out
    assert 1.0 <= took < 8.0
    deadline = time.monotonic() + 5
    while _alive(grandchild) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(grandchild), "the process group was not killed"
    assert p.stop() == -signal.SIGKILL  # stopping again is harmless


def test_a_graceful_process_exits_on_sigterm_within_the_grace(tmp_path) -> None:
    p = ProductProcess("sleeper", [sys.executable, "-c", "import time; time.sleep(600)"], {}, tmp_path / "s.log")
    p.start()
    time.sleep(0.2)
    assert p.stop(grace=10.0) == -signal.SIGTERM


def test_wait_http_returns_the_body_with_the_process_env_and_log(tmp_path) -> None:
    port = free_port()
    p = ProductProcess("server", [sys.executable, "-c", SERVER], {"PORT": str(port), "PROBE_VALUE": "x1"},
                       tmp_path / "server.log", cwd=tmp_path).start()
    try:
        body = p.wait_http(f"http://127.0.0.1:{port}/ready", lambda status, b: status == 200 and b["ready"], 30)
        assert body == {"ready": True, "env": "x1"}
        with pytest.raises(ProbeTimeout, match="server not ready within 0.5s"):
            p.wait_http(f"http://127.0.0.1:{port}/ready", lambda status, b: False, 0.5)
    finally:
        p.stop(grace=5)


def test_wait_http_raises_process_exited_with_the_log(tmp_path) -> None:
    p = ProductProcess("crasher", [sys.executable, "-c", "print('bad setting'); raise SystemExit(2)"], {},
                       tmp_path / "crasher.log").start()
    with pytest.raises(ProcessExited, match=r"crasher exited with 2:\s+bad setting"):
        p.wait_http(f"http://127.0.0.1:{free_port()}/ready", lambda status, b: True, 30)


def test_run_returns_the_exit_code(tmp_path) -> None:
    p = ProductProcess("step", [sys.executable, "-c", "raise SystemExit(3)"], {}, tmp_path / "step.log")
    assert p.run(timeout=30) == 3
