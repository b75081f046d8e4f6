"""Cost of the live drift window (issue 19): the worker's pipeline with and without it.

    python -m bench.drift_cost [--quick]

Trains a bundle as the trainer does (EIF, autoencoder; the manifest's quantile digest), then
runs the worker's per-batch work on one thread, no Kafka: parse
(:func:`stream_scorer.parsing.parse_batch`), the live window's update
(:meth:`stream_scorer.drift_watch.DriftWatch.observe`, the hook the parse step calls), score
(:func:`~stream_scorer.scoring.score_matrix`) and serialise, on batches of 1,000 records, with
the window (``LIVE_DRIFT_WINDOW_S=300``) and without (``0``), back to back in pairs; the ratio
reported is the median of the pairs' ratios, in rows per second of the thread's CPU time. Also the window's own figures: microseconds per
batch update, per one-second summary (the timer's work, off the batch path), and its memory.
One record per message and envelopes of 1,000. Prints the figures and writes
``bench/results/drift.json``. Never asserts on time.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import orjson

from bench.common import RESULTS, log
from bench.cost_common import rows_per_cpu_s, simulated_bundle
from ja4_core.bundle import load_bundle


def _watch(window_s: float) -> Any:
    from ja4_core.settings import load_settings
    from stream_scorer.drift_watch import DriftWatch

    return DriftWatch(load_settings({"LIVE_DRIFT_WINDOW_S": str(window_s)}), replica="bench")


def _compare(batches: list[list[bytes]], bundle: Any, reps: int, min_time: float) -> dict[str, Any]:
    from stream_scorer.parsing import parse_batch
    from stream_scorer.scoring import score_matrix, serialise

    feats, manifest, version = bundle.ensemble.features, bundle.manifest, bundle.version

    def run(window_s: float) -> Callable[[], int]:
        watch = _watch(window_s)

        def once() -> int:
            n = 0
            for values in batches:
                parsed = parse_batch(values, feats)
                watch.observe(version, feats, manifest, parsed.X)
                out = serialise(parsed, score_matrix(parsed, bundle, None), bundle)
                n += len(out.scores)
            return n
        return once

    run(300.0)(), run(0.0)()  # warm-up
    on, off = [], []
    for _ in range(reps):
        off.append(rows_per_cpu_s(run(0.0), min_time))
        on.append(rows_per_cpu_s(run(300.0), min_time))
    med_on, med_off = statistics.median(on), statistics.median(off)
    ratio = statistics.median(a / b for a, b in zip(on, off))
    return {"with_drift_rows_per_s": med_on, "without_rows_per_s": med_off, "ratio": ratio,
            "ratio_of_medians": med_on / med_off, "repetitions": reps, "runs_with": on, "runs_without": off}


def _window_figures(bundle: Any, batch: list[bytes]) -> dict[str, Any]:
    from stream_scorer.parsing import parse_batch

    feats = bundle.ensemble.features
    X = parse_batch(batch, feats).X
    watch = _watch(300.0)
    watch.observe(bundle.version, feats, bundle.manifest, X)
    t0 = time.thread_time()  # CPU time, as above
    n = 200
    for _ in range(n):
        watch.observe(bundle.version, feats, bundle.manifest, X)
    update_us = (time.thread_time() - t0) / n * 1e6
    t0 = time.thread_time()
    for _ in range(20):
        snap = watch.live.snapshot()
    summary_ms = (time.thread_time() - t0) / 20 * 1e3
    live = watch.live
    nbytes = sum(a.nbytes for a in (live._counts, live._missing, live._sums, live._mins, live._maxs))  # noqa: SLF001
    return {"update_us_per_1000_rows": update_us, "summary_ms": summary_ms, "window_bytes": nbytes,
            "features": len(feats), "records_in_window": snap.records}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small model, short runs (figures less stable)")
    ap.add_argument("--out", type=Path, default=RESULTS / "drift.json")
    args = ap.parse_args(argv)
    from ja4_dev.simulator import TrafficSimulator

    reps, min_time = (3, 0.5) if args.quick else (7, 1.5)
    with tempfile.TemporaryDirectory() as tmp:
        log("training the bundle")
        bundle = load_bundle(simulated_bundle(Path(tmp), args.quick).path, nthreads=1)
        records = TrafficSimulator(seed=21, bot_share=0.0).records(2000)
        singles = [[orjson.dumps(r) for r in records[i:i + 1000]] for i in range(0, 2000, 1000)]
        envelopes = [[orjson.dumps(records[i:i + 1000])] for i in range(0, 2000, 1000)]
        results: dict[str, Any] = {"quick": args.quick, "batch_records": 1000, "threads": 1}
        for shape, batches in (("1rec_msgs", singles), ("env1000", envelopes)):
            results[shape] = r = _compare(batches, bundle, reps, min_time)
            log(f"{shape:10s} with live drift {r['with_drift_rows_per_s']:>9,.0f} rows/s  without "
                f"{r['without_rows_per_s']:>9,.0f} rows/s  ratio {r['ratio']:.3f}")
        results["window"] = w = _window_figures(bundle, singles[0])
        log(f"window: {w['update_us_per_1000_rows']:.0f} us per 1,000-row update, {w['summary_ms']:.1f} ms per "
            f"summary (once a second, off the batch path), {w['window_bytes'] / 1024:.0f} KB for {w['features']} features")
        results["min_ratio"] = min(results[s]["ratio"] for s in ("1rec_msgs", "env1000"))
        log(f"lowest ratio with/without live drift: {results['min_ratio']:.3f} (bound: 0.95)")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1))
    log(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
