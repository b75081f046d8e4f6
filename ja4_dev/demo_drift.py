"""The demo's last act (issue 19): the traffic moves, a replica asks for a retrain, the
trainer loop retrains at once, and every replica serves the new version.

After the campaign's retrain has been reloaded, :class:`DriftPhase` stops the sink (the
embedded ClickHouse takes one process at a time), starts ``stream-trainer loop`` (its first run
finds nothing to do and it sleeps for an hour), then makes the live traffic move with
:func:`browser_release`: a release of the simulated browsers changes 18 of the 39 features. The
replicas' drifted share rises past ``DRIFT_THRESHOLD`` in their live window (30 s in the demo),
one of them publishes a ``retrain_request`` after ``DRIFT_REQUEST_AFTER_S`` (5 s in the demo),
the loop acts on it at once (recording the request's figures as the run's ``drift``), and the
replicas hot-reload the version. The moved records are left out of the before/after quality
figures (those compare the first model with the campaign's retrain on the same traffic).
Runs shorter than :data:`MIN_DURATION_S` skip the act (the tests' shortened demo).
"""

from __future__ import annotations

import json
import time
import urllib.request
from typing import Any, Callable, Iterable

#: Settings of the demo's replicas: a short window and a short wait, so the act takes seconds.
REPLICA_DRIFT_ENV = {"LIVE_DRIFT_WINDOW_S": "30", "LIVE_DRIFT_MIN_RECORDS": "300", "DRIFT_REQUEST_AFTER_S": "5",
                     "DRIFT_REQUEST_COOLDOWN_S": "600"}
#: Demo runs of at least this many seconds of live traffic end with the act.
MIN_DURATION_S = 60.0
#: The features a release of the simulated browsers changes (scaled by 1.5, plus 1).
RELEASE_FEATURES = ("hits", "hit_velocity", "header_count", "header_order_shared_count", "post_ratio", "orphan_ratio",
                    "asset_ratio", "request_size_variance", "max_keepalives", "src_port_density", "tcp_shared_count",
                    "path_transition_entropy", "cadence_cv", "burst_ratio", "pause_ratio", "host_diversity",
                    "lag1_autocorrelation", "benford_deviation")
#: Longest the act waits for each of its steps (s).
STEP_TIMEOUT_S = 300.0


def browser_release(rec: dict[str, Any]) -> dict[str, Any]:
    """A record as the traffic looks after the release (no feature becomes constant)."""
    out = dict(rec)
    for f in RELEASE_FEATURES:
        v = rec.get(f)
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            out[f] = float(v) * 1.5 + 1.0
    return out


def _drift(url: str) -> dict[str, Any] | None:
    try:
        with urllib.request.urlopen(url + "/drift", timeout=1.5) as resp:
            return json.loads(resp.read())
    except Exception:  # noqa: BLE001 - a replica starting or stopping: no figure this time
        return None


def drift_line(replicas: Iterable[Any]) -> str:
    """``scorer-1 0.33 pending | scorer-2 0.31 held:cooldown``: each replica's drifted share and state."""
    parts = []
    for r in replicas:
        body = _drift(r.url) or {}
        share = body.get("drifted_share")
        state = body.get("outcome", "-") if body.get("ready") else "warming"
        parts.append(f"{r.name} {share:.2f} {state}" if isinstance(share, (int, float)) else f"{r.name} -")
    return " | ".join(parts)


def request_seen(replicas: Iterable[Any], version: str) -> dict[str, Any] | None:
    """The retrain request about ``version`` a replica published or read, or None."""
    for r in replicas:
        req = (_drift(r.url) or {}).get("last_request")
        if req and req.get("version") == version:
            return req
    return None


class DriftPhase:
    """The act as steps, one per call of :meth:`step` (the demo's loop calls it twice a second)."""

    def __init__(self, *, replicas: list[Any], traffic: Any, served: str, say: Callable[[str], None],
                 start_loop: Callable[[], Any], loop_runs: Callable[[], int], current: Callable[[], str | None],
                 versions: Callable[[], dict[str, str]]) -> None:
        self.replicas, self.traffic, self.served, self.say = replicas, traffic, served, say
        self.start_loop, self.loop_runs, self.current, self.versions = start_loop, loop_runs, current, versions
        self.step_name = "start"
        self.since = time.monotonic()
        self.loop: Any = None
        self.summary: dict[str, Any] = {}

    def _next(self, name: str) -> None:
        self.step_name, self.since = name, time.monotonic()

    def step(self) -> bool:
        """Advance; True once every replica serves the version the request led to."""
        if time.monotonic() - self.since > STEP_TIMEOUT_S:
            raise RuntimeError(f"the drift act did not get past {self.step_name!r} in {STEP_TIMEOUT_S:.0f} s")
        if self.step_name == "start":
            self.say("[5/6] the trainer loop starts; then a browser release moves the live traffic")
            self.loop = self.start_loop()
            self._next("loop_first_run")
        elif self.step_name == "loop_first_run" and self.loop_runs() >= 1:
            self.traffic.shift = browser_release
            self.summary["shift_at"] = time.time()
            self.say(f"      a browser release changes {len(RELEASE_FEATURES)} of the features; "
                     "watch the live drift rise")
            self._next("asked")
        elif self.step_name == "asked":
            req = request_seen(self.replicas, self.served)
            if req is not None:
                self.summary["request"] = req
                self.summary["request_after_s"] = round(time.time() - self.summary["shift_at"], 1)
                self.say(f"[5/6] {req['issued_by']} asks for a retrain {self.summary['request_after_s']:.0f} s after "
                         f"the shift: drifted share {req['drift_share']:.2f} >= {req['threshold']:.2f}; "
                         "the trainer loop acts at once")
                self._next("retrained")
        elif self.step_name == "retrained":
            version = self.current()
            if version and version != self.served and self.loop_runs() >= 2:
                self.summary["version"] = version
                self.summary["retrain_after_s"] = round(time.time() - self.summary["shift_at"], 1)
                self.say(f"      new version {version} trained on the request; waiting for every replica")
                self._next("reloaded")
        elif self.step_name == "reloaded":
            if set(self.versions().values()) == {self.summary["version"]}:
                self.summary["live_after_s"] = round(time.time() - self.summary["shift_at"], 1)
                self.say(f"[5/6] every replica serves {self.summary['version']}, "
                         f"{self.summary['live_after_s']:.0f} s after the traffic moved")
                self._next("done")
        return self.step_name == "done"
