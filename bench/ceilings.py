"""Ceilings measured in the same run: transport (raw aiokafka), framework (a counting Faust
agent), model (the ensemble in-process, per member and combined, plus the pure
``score_values`` pipeline: parse + score + serialise, no Kafka)."""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import CpuWindow, Proc, create_topics, log, produce_all


async def _aiokafka_consume(bootstrap: str, topic: str, n: int, timeout: float) -> dict[str, Any]:
    from aiokafka import AIOKafkaConsumer, TopicPartition

    c = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                         auto_offset_reset="earliest", max_partition_fetch_bytes=8 * 1024 * 1024,
                         fetch_max_bytes=64 * 1024 * 1024)
    await c.start()
    try:
        parts = c.partitions_for_topic(topic)
        for _ in range(50):
            if parts:
                break
            await c._client.force_metadata_update()  # noqa: SLF001
            await asyncio.sleep(0.1)
            parts = c.partitions_for_topic(topic)
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        c.assign(tps)
        await c.seek_to_beginning(*tps)
        got, first, last = 0, None, None
        asked = time.perf_counter()
        deadline = time.monotonic() + timeout
        while got < n and time.monotonic() < deadline:
            batch = await c.getmany(timeout_ms=200, max_records=20000)
            now = time.perf_counter()
            for recs in batch.values():
                if recs and first is None:
                    first = now
                got += len(recs)
            if batch:
                last = now
        # From the first record's arrival; when everything came in one fetch (Apache Kafka
        # returns 20,000 small records at once), from the first request instead.
        secs = (last - first) if first and last and last > first else \
            (last - asked) if last else float("nan")
        return {"messages": got, "seconds": secs, "msgs_per_s": got / secs if secs == secs and secs > 0 else None}
    finally:
        await c.stop()


def transport_ceiling(bootstrap: str, topic: str, n: int) -> dict[str, Any]:
    return asyncio.run(_aiokafka_consume(bootstrap, topic, n, timeout=120))


def framework_ceiling(bootstrap: str, topic: str, n: int, workdir: Path, suffix: str) -> dict[str, Any]:
    from bench.common import REPO

    env = {"PYTHONPATH": str(REPO), "BENCH_BOOTSTRAP": bootstrap, "BENCH_TOPIC": topic, "BENCH_APP_ID": f"bench-counter-{suffix}"}
    p = Proc([sys.executable, "-m", "bench.faust_counter", "worker", "-l", "warn"], env, workdir, name="faust-counter")
    p.start()
    try:
        cpu0 = p.cpu_seconds()
        p.wait_http("/count", lambda s, b: s == 200 and b.get("count", 0) >= n // 10, timeout=240)
        window = CpuWindow([p])
        p.wait_http("/count", lambda s, b: s == 200 and b.get("count", 0) >= 9 * n // 10, timeout=240)
        cores = window.cores()
        body = p.wait_http("/count", lambda s, b: s == 200 and b.get("count", 0) >= n, timeout=240)
        # wait a moment for the last timestamp to settle
        cpu = p.cpu_seconds() - cpu0
        secs = body["last"] - body["first"]
        return {"messages": body["count"], "seconds": secs,
                "msgs_per_s": (body["count"] - 1) / secs if secs > 0 else None,
                "cpu_s": cpu, "rss_mb": p.rss() / 2**20, "cores": cores}
    finally:
        p.stop()


def _rate(fn, X: np.ndarray, batch: int, min_time: float = 1.0) -> float:
    """rows/s of ``fn`` over ``X`` in batches of ``batch`` rows, repeated to at least ``min_time``."""
    fn(X[:min(batch, len(X))])  # warm-up
    rows, t0 = 0, time.perf_counter()
    while True:
        for i in range(0, len(X), batch):
            fn(X[i:i + batch])
            rows += len(X[i:i + batch])
        el = time.perf_counter() - t0
        if el >= min_time:
            return rows / el


def model_ceiling(bundle_path: Path, records: list[dict], quick: bool) -> dict[str, Any]:
    """rows/s per member, combined, and through ``score_values`` (1 record/message and
    envelopes of 1,000) on batches of 1,000 rows, one thread as the worker runs it."""
    import orjson

    from ja4_core.bundle import load_bundle
    from ja4_core.ensemble import impute
    from stream_scorer.parsing import parse_batch
    from stream_scorer.scoring import score_values

    bundle = load_bundle(bundle_path, nthreads=1)
    ens = bundle.ensemble
    # the library evaluators (isotree, torch), for comparison: the served load has neither
    lib = load_bundle(bundle_path, nthreads=1, eif_evaluator="isotree", ae_evaluator="torch").ensemble
    X = parse_batch([orjson.dumps(r) for r in records[:2000]], ens.features).X
    X, _ = impute(X, ens.medians)
    X = np.ascontiguousarray(X)
    mt = 0.5 if quick else 1.5
    out: dict[str, Any] = {"batch_rows": 1000, "threads": 1}
    out["eif_evaluator"] = ens.eif.evaluator
    out["eif_rows_per_s"] = _rate(ens.eif.score, X, 1000, mt)
    out["eif_isotree_rows_per_s"] = _rate(lib.eif.model_.predict, X, 1000, mt)
    if ens.ae is not None:
        out["ae_evaluator"] = ens.ae.evaluator
        out["ae_rows_per_s"] = _rate(ens.ae.score, X, 1000, mt)
        out["ae_torch_rows_per_s"] = _rate(lambda x: lib.ae._errors(lib.ae._scale(x)), X, 1000, mt)
    if ens.xgb is not None:
        out["xgb_rows_per_s"] = _rate(ens.xgb.score, X, 1000, mt)
    out["combined_rows_per_s"] = _rate(ens.score, X, 1000, mt)
    ens.set_threads(2)
    out["combined_rows_per_s_2threads"] = _rate(ens.score, X, 1000, mt)
    ens.set_threads(1)
    # The whole pure pipeline, as the agent calls it per batch.
    singles = [orjson.dumps(r) for r in records[:2000]]
    env1000 = [orjson.dumps(records[i:i + 1000]) for i in range(0, 2000, 1000)]
    out["parse_rows_per_s"] = _rate(lambda v: parse_batch(list(v), ens.features), np.array(singles, dtype=object), 1000, mt)

    def sv(vals):
        score_values(list(vals), bundle)

    out["score_values_1rec_msgs_rows_per_s"] = _rate(sv, np.array(singles, dtype=object), 1000, mt)
    t0, n = time.perf_counter(), 0
    while time.perf_counter() - t0 < mt:
        for v in env1000:
            score_values([v], bundle)
            n += 1000
    out["score_values_env1000_rows_per_s"] = n / (time.perf_counter() - t0)
    # The numpy evaluator of the same forest (kept for comparison).
    try:
        from ja4_core.detectors.isotree_file import FastEIF

        fast = FastEIF.from_model(lib.eif.model_, ens.n_features)
        out["eif_fast_rows_per_s"] = _rate(fast.predict, X, 1000, mt)
        out["eif_fast_max_abs_diff"] = float(np.abs(fast.predict(X) - ens.eif.score(X)).max())
    except Exception as exc:  # noqa: BLE001
        out["eif_fast_error"] = repr(exc)
    log(f"model ceiling: {({k: round(v) if isinstance(v, float) and v > 10 else v for k, v in out.items()})}")
    return out


def run_ceilings(bootstrap: str, messages: list[tuple[bytes, bytes]], workdir: Path, suffix: str) -> dict[str, Any]:
    topic = f"bench-ceiling-{suffix}"
    create_topics(bootstrap, [topic])
    produce_all(bootstrap, topic, messages)
    n = len(messages)
    log(f"transport ceiling: {n} messages")
    transport = transport_ceiling(bootstrap, topic, n)
    log(f"  aiokafka {transport}")
    log("framework ceiling (Faust counting agent, subprocess)")
    framework = framework_ceiling(bootstrap, topic, n, workdir, suffix)
    log(f"  faust {framework}")
    return {"transport": transport, "framework": framework}
