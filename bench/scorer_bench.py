"""The scorer end to end: throughput (1 and 2 workers; 1 record/message, envelopes of 100 and
1,000), latency under an open-loop producer, and a worker's memory over reloads (the reloads
under a steady stream are :mod:`bench.reload_bench`)."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

from bench.common import (Counter, CpuWindow, Proc, create_topics, log, percentile, produce_all, producer, records_messages,
                     scorer_worker, topic_env, wait_partitions)


class Session:
    """N scorer workers on private topics; always stopped in ``close``."""

    def __init__(self, bootstrap: str, store: Path, workdir: Path, suffix: str, n_workers: int,
                 batch_wait_ms: int) -> None:
        self.bootstrap = bootstrap
        self.env = topic_env(bootstrap, suffix, store, SCORER_BATCH_WAIT_MS=str(batch_wait_ms))
        self.workers: list[Proc] = []
        self.n_workers = n_workers
        self.workdir = workdir
        self.counter: Counter | None = None
        #: Seconds from starting the workers to every one ready (model loaded, partitions split).
        self.start_to_ready_s: float | None = None

    def __enter__(self) -> "Session":
        create_topics(self.bootstrap, [self.env["TOPIC_FEATURES"], self.env["TOPIC_SCORES"], self.env["TOPIC_DLQ"]])
        create_topics(self.bootstrap, [self.env["TOPIC_CONTROL"]], partitions=1, config={"cleanup.policy": "compact"})
        try:
            t0 = time.perf_counter()
            for _ in range(self.n_workers):
                self.workers.append(scorer_worker(self.env, self.workdir).start())
            wait_partitions(self.workers, poll_s=0.05)
            self.start_to_ready_s = time.perf_counter() - t0
            log(f"  {self.n_workers} worker(s): start -> ready (model loaded, partitions assigned) "
                f"{self.start_to_ready_s:.2f} s")
            self.counter = Counter(self.bootstrap, self.env["TOPIC_SCORES"], keep=True)
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        if self.counter is not None:
            self.counter.close()
        for w in self.workers:
            w.stop()

    @property
    def features(self) -> str:
        return self.env["TOPIC_FEATURES"]

    def cpu(self) -> float:
        return sum(w.cpu_seconds() for w in self.workers)

    def rss_mb(self) -> list[float]:
        return [round(w.rss() / 2**20, 1) for w in self.workers]


def stage_means(before: dict[str, tuple[float, float]], after: dict[str, tuple[float, float]]) -> dict[str, float]:
    """Mean ms a batch spent in each worker stage between two ``stage_totals`` readings, and
    the mean records per batch (``records``)."""
    out = {}
    for k, (s1, c1) in after.items():
        s0, c0 = before.get(k, (0.0, 0.0))
        if c1 > c0:
            out[k] = round((s1 - s0) / (c1 - c0) * (1 if k == "records" else 1000.0), 2)
    return out


#: Envelope shapes are measured on this many times the records of the 1 record/message run.
ENVELOPE_REPEAT = 4


def throughput(s: Session, records: list[dict], shapes: tuple[int, ...], timeout: float = 300) -> list[dict]:
    """Per message shape: the workers drain a backlog, as the ceilings do. The workers are
    stopped, all input is produced, the workers are started again; the steady rate is taken
    from the score arrivals (10 % -> 90 %), so start-up and the last batch do not count and the
    producer does not compete with the workers for the CPU. ``records_per_s`` is the overall
    rate from the restart to the last score."""
    assert s.counter is not None
    out = []
    for per in shapes:
        # Envelope runs get more records: a batch holds ~2,000 of them, and the steady rate
        # needs many batches between the 10 % and the 90 % score to mean anything.
        recs = records if per == 1 else records * ENVELOPE_REPEAT
        msgs = records_messages(recs, per, key_prefix=f"tp{per}-")
        start_count = s.counter.count
        start_arrivals = len(s.counter.arrivals)
        for w in s.workers:
            w.stop()
        produce_s = produce_all(s.bootstrap, s.features, msgs)
        t0 = time.perf_counter()
        for w in s.workers:
            w.start()
        # CPU between 10 % and 90 % of the scores: the steady state, without start-up.
        s.counter.wait_count(start_count + len(recs) // 10, timeout)
        cpu0, c0 = s.cpu(), s.counter.count
        window = CpuWindow(s.workers)
        stages0 = s.workers[0].stage_totals()
        s.counter.wait_count(start_count + 9 * len(recs) // 10, timeout)
        cpu, c1 = s.cpu() - cpu0, s.counter.count
        cores = window.cores()
        stages = stage_means(stages0, s.workers[0].stage_totals())
        done = s.counter.wait_count(start_count + len(recs), timeout)
        el = time.perf_counter() - t0
        got = s.counter.count - start_count
        steady = _steady_rate([t for t, _, _ in s.counter.arrivals[start_arrivals:]])
        row = {"records_per_s_steady": steady, "workers": s.n_workers, "records_per_message": per, "records": len(recs), "messages": len(msgs),
               "complete": done, "scored": got, "seconds": el, "produce_seconds": produce_s,
               "records_per_s": got / el, "cpu_s_per_record": cpu / max(c1 - c0, 1),
               "cpu_utilisation": cpu * (steady or 0) / max(c1 - c0, 1), "rss_mb": s.rss_mb(), "cores": cores,
               "worker_stages_ms_mean": stages}
        log(f"  throughput {s.n_workers}w x{per}: {row['records_per_s']:.0f} rec/s (steady {steady or 0:.0f}), "
            f"{row['cpu_s_per_record'] * 1e6:.0f} us CPU/rec, RSS {row['rss_mb']}, cores {cores}, stages {stages}")
        out.append(row)
        time.sleep(1.0)
    wait_partitions(s.workers)
    return out


#: The open-loop producer's linger: like a real producer it batches for a moment, so the
#: broker (on the same cores) is not flooded with one request per record. Part of the latency.
OPEN_LOOP_LINGER_MS = 2


def _steady_rate(times: list[float], lo: float = 0.1, hi: float = 0.9) -> float | None:
    """Records/s between the arrival of the 10 % and the 90 % record: the rate once the
    pipeline is full, without the start (first fetch, first batch) and the tail (last batch)."""
    ts = sorted(times)
    if len(ts) < 20:
        return None
    i, j = int(lo * (len(ts) - 1)), int(hi * (len(ts) - 1))
    return (j - i) / (ts[j] - ts[i]) if ts[j] > ts[i] else None


#: The open-loop producer wakes at most this often and sends every record that is due: a
#: spinning generator would take a core from the worker on a small box (it took 0.7-0.8 of
#: the two cores at 2,000+ records/s before this).
OPEN_LOOP_TICK_S = 0.001


def _open_loop(bootstrap: str, topic: str, msgs: list[tuple[bytes, bytes]], rate: float,
               sent: dict[bytes, float], stop: threading.Event | None = None) -> float:
    """Send at a fixed rate regardless of the consumer (open loop); return achieved rate.
    Each record is stamped just before its ``produce`` call (so a record sent up to one tick
    late, and the linger, count as latency)."""
    p = producer(bootstrap, **{"linger.ms": OPEN_LOOP_LINGER_MS})
    t0 = time.perf_counter()
    wall0 = time.time()
    i, n = 0, len(msgs)
    while i < n and not (stop is not None and stop.is_set()):
        due = min(n, int((time.perf_counter() - t0) * rate) + 1)
        while i < due:
            key, value = msgs[i]
            sent[key] = wall0 + (time.perf_counter() - t0)
            try:
                p.produce(topic, value, key)
            except BufferError:
                p.poll(0.01)
                p.produce(topic, value, key)
            i += 1
        p.poll(0)
        wait = t0 + i / rate - time.perf_counter()
        if wait > 0:
            time.sleep(max(wait, OPEN_LOOP_TICK_S))
    p.flush(30)
    el = time.perf_counter() - t0
    return i / el if el > 0 else 0.0


def latency(s: Session, records: list[dict], max_rate: float, fractions: tuple[float, ...],
            duration: float) -> list[dict]:
    assert s.counter is not None
    out = []
    for frac in fractions:
        rate = max(1.0, frac * max_rate)
        n = int(rate * duration)
        recs = (records * (n // len(records) + 1))[:n]
        msgs = records_messages(recs, 1, key_prefix=f"lat{frac}-")
        sent: dict[bytes, float] = {}
        arrivals_before = len(s.counter.arrivals)
        window = CpuWindow(s.workers)
        stages0 = s.workers[0].stage_totals()
        achieved = _open_loop(s.bootstrap, s.features, msgs, rate, sent)
        cores = window.cores()
        s.counter.wait_count(s.counter.count + 0, 0)  # no-op: keep order
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            got = {k for _, k, _ in s.counter.arrivals[arrivals_before:] if k in sent}
            if len(got) >= len(sent):
                break
            time.sleep(0.05)
        stages = stage_means(stages0, s.workers[0].stage_totals())
        lat = {}
        for t, k, _ in s.counter.arrivals[arrivals_before:]:
            if k in sent and k not in lat:
                lat[k] = (t - sent[k]) * 1000.0
        vals = list(lat.values())
        # Where it went: stamp -> the worker produced the score record (its Kafka timestamp, ms
        # resolution: fetch, batch wait, parse, score), then -> readable (linger, broker, fetch).
        in_worker = [(s.counter.created[k] - sent[k]) * 1000.0 for k in lat if k in s.counter.created]
        to_read = [(lat[k] - (s.counter.created[k] - sent[k]) * 1000.0) for k in lat if k in s.counter.created]
        row = {"fraction_of_max": frac, "target_rate": rate, "achieved_rate": achieved, "records": n,
               "received": len(vals), "p50_ms": percentile(vals, 50), "p95_ms": percentile(vals, 95),
               "p99_ms": percentile(vals, 99), "max_ms": max(vals) if vals else None, "cores": cores,
               "worker_stages_ms_mean": stages,
               "to_worker_produce_ms": {q: percentile(in_worker, q) for q in (50, 99)},
               "produce_to_readable_ms": {q: percentile(to_read, q) for q in (50, 99)}}
        ms = lambda x: "-" if x is None else f"{x:.1f}"  # noqa: E731 - nothing arrived in time
        log(f"  latency {int(frac * 100)}% ({rate:.0f}/s): p50 {ms(row['p50_ms'])} p95 {ms(row['p95_ms'])} "
            f"p99 {ms(row['p99_ms'])} ms ({len(vals)}/{n}); in worker {row['to_worker_produce_ms']}, "
            f"to readable {row['produce_to_readable_ms']}; cores {cores}; stages {stages}")
        out.append(row)
        time.sleep(1.0)
    return out


def _active_versions(workers: list[Proc]) -> list[str | None]:
    vs = []
    for w in workers:
        try:
            _, body = w.get("/model", timeout=1.0)
            vs.append((body.get("active") or {}).get("model_version"))
        except OSError:
            vs.append(None)
    return vs


def _publish(bootstrap: str, topic: str, info, rollback: bool = False) -> float:
    from ja4_core.control import build_activate

    value = build_activate(model=info.model, version=info.version, uri=info.uri,
                           manifest_sha256=info.manifest_sha256, issued_by="bench@localhost", rollback=rollback)
    p = producer(bootstrap, **{"linger.ms": 0})
    t = time.perf_counter()
    p.produce(topic, value, info.model.encode())
    p.flush(10)
    return t


def _reload_once(s: Session, info, timeout: float = 30.0) -> float | None:
    t0 = _publish(s.bootstrap, s.env["TOPIC_CONTROL"], info)
    deadline = t0 + timeout
    while time.perf_counter() < deadline:
        if all(v == info.version for v in _active_versions(s.workers)):
            return time.perf_counter() - t0
        time.sleep(0.02)
    return None


def _max_gap(times: list[float], lo: float, hi: float) -> float | None:
    ts = sorted(t for t in times if lo <= t <= hi)
    if len(ts) < 2:
        return None
    return max(b - a for a, b in zip(ts, ts[1:]))


#: How long the reload run waits for the replicas to score everything that was sent.
RELOAD_DRAIN_S = 180


def reload_memory(s: Session, versions: list, n: int) -> dict[str, Any]:
    """RSS of one worker before and after n reloads in a row (versions cycle)."""
    import gc

    gc.collect()
    w = s.workers[0]
    rss0 = w.rss()
    times = []
    for i in range(n):
        times.append(_reload_once(s, versions[(i + 1) % len(versions)]))
    from stream_scorer.model_holder import TRIM_AFTER_S

    time.sleep(TRIM_AFTER_S + 2.0)  # after the worker's heap trim that follows the last swap
    rss1 = w.rss()
    res = {"reloads": n, "succeeded": sum(t is not None for t in times), "rss_before_mb": rss0 / 2**20,
           "rss_after_mb": rss1 / 2**20, "growth_mb": (rss1 - rss0) / 2**20}
    log(f"  {n} reloads in one worker: RSS {res['rss_before_mb']:.0f} -> {res['rss_after_mb']:.0f} MB")
    return res
