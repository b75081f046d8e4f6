"""Hot reloads under a steady stream, measured without the measurement making the gaps.

The first form of this measurement (``scorer_bench.reloads``, removed) polled ``/model`` of every
replica every 20 ms during a reload and compared the longest gap between score arrivals then
with the longest gap of one quiet window without polling. On Tansu that ratio was 2.9; but
the polling alone, with no reload at all, made gaps of 0.33-0.52 s against 0.11-0.14 s without
it (2 replicas at ~4,900 records/s, HM's probe, 2026-12-01), while a bundle load itself held
the event loop for at most 3.4 ms (30 ms in a thread). So here:

- the time to active comes from each replica's own ``loaded_at`` (the swap, its wall clock;
  the same box's clock as the publish time), so ``/model`` is polled only every
  :data:`POLL_S` to see that the version changed;
- "without" is not one window before the reloads but, before each reload, a window of the
  same length in which the bench polls exactly as during a reload and publishes nothing, so
  both sides carry the same measurement load and last equally long.
"""

from __future__ import annotations

import threading
import time
from datetime import datetime
from typing import Any

from bench.common import keys_in_topic, log, percentile, records_messages
from bench.scorer_bench import RELOAD_DRAIN_S, Session, _active_versions, _max_gap, _open_loop, _publish

#: How often the bench asks each replica's ``/model`` during a window (5/s, not 50/s).
POLL_S = 0.2
#: Length of each window, the quiet one and the reload one (a reload takes ~0.3-0.6 s).
WINDOW_S = 2.0
#: Longest a reload may take to be active on every replica.
RELOAD_TIMEOUT_S = 30.0


def _loaded_at(s: Session, version: str) -> list[float] | None:
    """Each replica's swap time (epoch s) if every one serves ``version`` now, else None."""
    out = []
    for w in s.workers:
        try:
            _, body = w.get("/model", timeout=1.0)
        except OSError:
            return None
        active = body.get("active") or {}
        if active.get("model_version") != version:
            return None
        out.append(datetime.fromisoformat(active["loaded_at"]).timestamp())
    return out


def _window(s: Session, until: float, info: Any | None) -> float | None:
    """Poll every replica every ``POLL_S`` until ``until`` (monotonic); with ``info``, publish
    it first and return the seconds from the publish to the last replica's swap (None if
    not every replica swapped)."""
    published = None
    took: float | None = None
    if info is not None:
        published = time.time()
        _publish(s.bootstrap, s.env["TOPIC_CONTROL"], info)
    deadline = max(until, time.monotonic() + (RELOAD_TIMEOUT_S if info is not None else 0.0))
    while time.monotonic() < deadline:
        if info is None:
            _active_versions(s.workers)
        elif took is None:
            swapped = _loaded_at(s, info.version)
            if swapped is not None:
                took = max(swapped) - published  # type: ignore[operator]
                deadline = until
        else:  # as often as in the quiet window, to the end
            _active_versions(s.workers)
        if time.monotonic() >= until and (info is None or took is not None):
            break
        time.sleep(POLL_S)
    return took


def reloads(s: Session, records: list[dict], versions: list, n_reloads: int, stream_rate: float,
            baseline_s: float) -> dict[str, Any]:
    """``n_reloads`` reloads under a steady open-loop stream, each after a quiet window of
    the same length and polling (versions cycle; each message has a new ``issued_at``).
    Gaps are between consecutive scores as the workers produced them (their record timestamps);
    keys as its first form gave, plus ``gap_windows``."""
    assert s.counter is not None
    n = int(stream_rate * (baseline_s + n_reloads * 2 * (WINDOW_S + 0.5) + 30))
    recs = (records * (n // len(records) + 1))[:n]
    msgs = records_messages(recs, 1, key_prefix="rl-")
    sent: dict[bytes, float] = {}
    stop = threading.Event()
    th = threading.Thread(target=_open_loop, args=(s.bootstrap, s.features, msgs, stream_rate, sent, stop), daemon=True)
    arrivals_before = len(s.counter.arrivals)
    th.start()
    quiet: list[tuple[float, float]] = []
    loud: list[tuple[float, float]] = []
    times: list[float | None] = []
    try:
        time.sleep(2.0 + baseline_s / 2)  # the stream settles
        for i in range(n_reloads):
            t0 = time.time()
            _window(s, time.monotonic() + WINDOW_S, None)
            quiet.append((t0, time.time()))
            t0 = time.time()
            times.append(_window(s, time.monotonic() + WINDOW_S, versions[(i + 1) % len(versions)]))
            loud.append((t0, time.time()))
        time.sleep(1.0)
    finally:
        stop.set()
        th.join(60)
    stream_end = time.monotonic()
    deadline = stream_end + RELOAD_DRAIN_S
    keys: set[bytes] = set()
    while time.monotonic() < deadline:
        keys = {k for _, k, _ in s.counter.arrivals[arrivals_before:] if k and k.startswith(b"rl-")}
        if len(keys) >= len(sent):
            break
        time.sleep(0.5)
    drained_s = time.monotonic() - stream_end
    reread: int | None = None
    if len(keys) < len(sent):  # the live reader's miss, or the workers'? The topic tells.
        reread = len(keys | keys_in_topic(s.bootstrap, s.env["TOPIC_SCORES"], b"rl-"))
    # When the workers produced each score (the record's timestamp, set by the worker's producer,
    # ms resolution), not when this process read it: a pause of this process (its garbage
    # collector walking ~700,000 kept arrivals took up to ~0.5 s) would otherwise read as a gap
    # of both replicas at once. The arrival times are kept beside, for comparison.
    made = [s.counter.created[k] for k in keys if k in s.counter.created]
    arr = [t for t, k, _ in s.counter.arrivals[arrivals_before:] if k and k.startswith(b"rl-")]

    def each(windows: list[tuple[float, float]], times: list[float] = made) -> list[float | None]:
        return [_max_gap(times, lo, hi) for lo, hi in windows]

    def longest(windows: list[tuple[float, float]]) -> float | None:
        gaps = [g for g in each(windows) if g is not None]
        return max(gaps) if gaps else None

    ok = [t for t in times if t is not None]
    res = {"replicas": len(s.workers), "reloads": n_reloads, "succeeded": len(ok), "stream_rate": stream_rate,
           "to_all_replicas_median_s": percentile(ok, 50), "to_all_replicas_max_s": max(ok) if ok else None,
           "to_all_replicas_all_s": times,
           "max_gap_without_reloads_s": longest(quiet), "max_gap_during_reloads_s": longest(loud),
           "gap_windows": {"each_s": WINDOW_S, "quiet": len(quiet), "reload": len(loud), "poll_s": POLL_S,
                           "without": "a window of the same length and polling before each reload",
                           # each window's longest gap, in order: one outlier or a pattern
                           "quiet_max_gaps_s": each(quiet), "reload_max_gaps_s": each(loud),
                           "by_arrival": {"quiet_max_gaps_s": each(quiet, arr), "reload_max_gaps_s": each(loud, arr)}},
           "records_sent": len(sent), "records_scored_unique": len(keys),
           # None: the live reader saw them all; else what the scores topic holds, read again
           "records_scored_unique_reread": reread,
           "backlog_drained_after_stream_s": drained_s if len(keys) >= len(sent) else None}
    log(f"  reloads: median {res['to_all_replicas_median_s']} max {res['to_all_replicas_max_s']} s; gap "
        f"{res['max_gap_without_reloads_s']} -> {res['max_gap_during_reloads_s']} s (equal windows, same polling); "
        f"{res['records_scored_unique']}/{res['records_sent']} scored"
        + (f" ({reread} in the scores topic, read again)" if reread is not None else ""))
    return res
