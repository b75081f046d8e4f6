"""Product processes started by the demo, the tests and the benchmarks: the one subprocess helper.

A product process (a scorer replica, the sink, a trainer step, a benchmark's counter) runs
with the caller's environment plus its own settings, its stdout and stderr appended to one log
file, and in a process group of its own: a stop then reaches every child it started, and a
Ctrl-C in the terminal reaches only the caller, which stops its children in order.

Stopping is the processes' own graceful stop first (SIGTERM: finish the batch in hand, ack,
commit, leave the group), then SIGKILL once a grace period has passed. Readiness is an HTTP
probe of the process's web server (``/ready``, ``/health``) polled until it says so, the
process exits (:class:`ProcessExited`) or the time is up (:class:`ProbeTimeout`).

This module imports no product package: it starts them as programs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from signal import SIGKILL, SIGTERM
from typing import Any, Callable

#: How long a stopping process may take for its graceful stop before it is killed (s).
STOP_GRACE_S = 30.0
#: How long a killed process may take to be reaped (s).
KILL_WAIT_S = 5.0


class ProcessError(RuntimeError):
    """A product process did not do what its caller waited for."""


class ProcessExited(ProcessError):
    """The process exited while its caller waited for it to become ready."""


class ProbeTimeout(ProcessError):
    """The process's HTTP probe did not say "ready" in time."""


def python_module(module: str, *args: str) -> list[str]:
    """The argv that runs ``python -m module args...`` with this interpreter."""
    return [sys.executable, "-m", module, *args]


def get_json(url: str, timeout: float = 2.0) -> tuple[int, dict[str, Any]]:
    """``GET url`` -> (status, JSON body); an HTTP error status is returned, not raised (a
    body that is not JSON reads as ``{}``). Connection errors raise :class:`OSError`."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status, json.loads(resp.read() or b"{}")
    except urllib.error.HTTPError as exc:
        try:
            return exc.code, json.loads(exc.read() or b"{}")
        except ValueError:
            return exc.code, {}


@dataclass
class ProductProcess:
    """One product process: started once, probed, stopped (see the module docstring)."""

    name: str
    argv: list[str]
    env: dict[str, str]  #: added to (and winning over) the caller's environment
    log_path: Path
    cwd: Path | None = None
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> "ProductProcess":
        """Start the process in its own process group, output appended to ``log_path``."""
        with open(self.log_path, "ab") as log:  # the child keeps its own copy of the descriptor
            self.proc = subprocess.Popen(self.argv, cwd=self.cwd, env={**os.environ, **self.env}, stdout=log,
                                         stderr=subprocess.STDOUT, start_new_session=True)
        return self

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def returncode(self) -> int | None:
        return None if self.proc is None else self.proc.poll()

    def signal(self, sig: int = SIGTERM) -> None:
        """Send ``sig`` to the process's group (nothing if it is not running)."""
        if self.proc is None or self.proc.poll() is not None:
            return
        try:
            os.killpg(self.proc.pid, sig)
        except ProcessLookupError:  # exited between the check and the signal
            pass

    def stop(self, grace: float = STOP_GRACE_S, sig: int = SIGTERM) -> int | None:
        """Stop with ``sig`` (the graceful stop), then SIGKILL after ``grace`` seconds; return
        the exit code (None if it never started)."""
        if self.proc is None:
            return None
        if self.proc.poll() is not None:
            return self.proc.returncode
        self.signal(sig)
        try:
            return self.proc.wait(grace)
        except subprocess.TimeoutExpired:
            self.signal(SIGKILL)
            return self.proc.wait(KILL_WAIT_S)

    def wait(self, timeout: float | None = None) -> int:
        """Wait for the process to exit; :class:`subprocess.TimeoutExpired` after ``timeout``."""
        assert self.proc is not None, "not started"
        return self.proc.wait(timeout)

    def run(self, timeout: float = 1800.0, grace: float = STOP_GRACE_S) -> int:
        """Start, wait for the exit code; stop it if the wait ends any other way (timeout, Ctrl-C)."""
        self.start()
        try:
            return self.wait(timeout)
        except BaseException:
            self.stop(grace)
            raise

    def log(self) -> str:
        """What the process wrote so far."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def wait_http(self, url: str, ok: Callable[[int, dict[str, Any]], bool], timeout: float = 60.0,
                  interval: float = 0.3) -> dict[str, Any]:
        """Poll ``url`` until ``ok(status, body)``; return the body. Raises :class:`ProcessExited`
        if the process exits meanwhile and :class:`ProbeTimeout` when ``timeout`` has passed,
        both with the end of the log."""
        deadline = time.monotonic() + timeout
        last: Any = None
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise ProcessExited(f"{self.name} exited with {self.proc.returncode}:\n{self.log()[-3000:]}")
            try:
                status, body = get_json(url)
                last = body
                if ok(status, body):
                    return body
            except (OSError, ValueError):  # not listening yet, or a half-written answer
                pass
            time.sleep(interval)
        raise ProbeTimeout(f"{self.name} not ready within {timeout}s (last {last}):\n{self.log()[-3000:]}")
