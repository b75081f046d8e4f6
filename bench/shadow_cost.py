"""Cost of a challenger in shadow (issue 17): the worker's pipeline with and without one.

    python -m bench.shadow_cost [--quick]

Trains two bundles as the trainer does (EIF and autoencoder on simulated humans, different
seeds), loads both as a worker does (compiled evaluators), then runs the worker's per-batch
work on one thread, no Kafka: parse (:func:`stream_scorer.parsing.parse_batch`), the champion
(:func:`~stream_scorer.scoring.score_matrix`, :func:`~stream_scorer.scoring.serialise`) and,
with a challenger, its one call (:func:`stream_scorer.shadow.score_challenger`) and its shadow
records (:func:`stream_scorer.shadow.shadow_outputs`), on batches of 1,000 records, back to
back in pairs; the ratio reported is the median of the pairs' ratios, in rows per second of
this thread's CPU time (the bound of issue 17: at least 0.5). Also the memory a loaded
challenger adds to a process (RSS after loading it, minus before). One record per message and
envelopes of 1,000. Prints the figures and writes ``bench/results/shadow.json``. Never asserts
on time.
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import orjson
import psutil

from bench.common import RESULTS, log
from bench.cost_common import rows_per_cpu_s, simulated_bundle


def _compare(batches: list[list[bytes]], champion: Any, challenger: Any, reps: int, min_time: float) -> dict[str, Any]:
    from stream_scorer.parsing import parse_batch
    from stream_scorer.scoring import score_matrix, serialise
    from stream_scorer.shadow import score_challenger, shadow_outputs

    feats = champion.bundle.ensemble.features
    now = datetime.now(timezone.utc)

    def run(with_challenger: bool) -> Callable[[], int]:
        def once() -> int:
            n = 0
            for values in batches:
                parsed = parse_batch(values, feats)
                scored = score_matrix(parsed, champion.bundle)
                shadow = score_challenger(parsed, values, champion.bundle, challenger, 10_000) if with_challenger else None
                out = serialise(parsed, scored, champion.bundle, now)
                if shadow is not None:
                    keys: list[bytes | None] = [None] * len(values)
                    shadow_outputs(parsed, scored, champion.version, shadow, keys, "bench.shadow", now)
                n += len(out.scores)
            return n
        return once

    run(True)(), run(False)()  # warm-up
    on, off = [], []
    for _ in range(reps):
        off.append(rows_per_cpu_s(run(False), min_time, time.process_time))
        on.append(rows_per_cpu_s(run(True), min_time, time.process_time))
    med_on, med_off = statistics.median(on), statistics.median(off)
    ratio = statistics.median(a / b for a, b in zip(on, off))
    return {"with_challenger_rows_per_s": med_on, "without_rows_per_s": med_off, "ratio": ratio,
            "repetitions": reps, "runs_with": on, "runs_without": off}


def _active(info: Any) -> Any:
    from stream_scorer.model_holder import ActiveModel, load_verified

    t0 = time.perf_counter()
    bundle = load_verified(info.path, info.manifest_sha256, 1)
    now = datetime.now(timezone.utc)
    return ActiveModel(bundle=bundle, issued_at=now, loaded_at=now, load_seconds=time.perf_counter() - t0,
                       source="bench")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small models, short runs (figures less stable)")
    ap.add_argument("--out", type=Path, default=RESULTS / "shadow.json")
    args = ap.parse_args(argv)
    from ja4_dev.simulator import TrafficSimulator
    from stream_scorer.model_holder import trim_heap

    reps, min_time = (3, 0.5) if args.quick else (7, 1.5)
    with tempfile.TemporaryDirectory() as tmp:
        log("training the champion and the challenger")
        infos = [simulated_bundle(Path(tmp), args.quick, seed=seed, digest=False) for seed in (1, 2)]
        proc = psutil.Process()
        champion = _active(infos[0])
        gc.collect()
        trim_heap()
        rss0 = proc.memory_info().rss
        challenger = _active(infos[1])
        gc.collect()
        trim_heap()
        rss1 = proc.memory_info().rss
        records = TrafficSimulator(seed=21, bot_share=0.1).records(2000)
        singles = [[orjson.dumps(r) for r in records[i:i + 1000]] for i in range(0, 2000, 1000)]
        envelopes = [[orjson.dumps(records[i:i + 1000])] for i in range(0, 2000, 1000)]
        results: dict[str, Any] = {"quick": args.quick, "batch_records": 1000, "threads": 1,
                                   "challenger_rss_mb": round((rss1 - rss0) / 2**20, 1),
                                   "challenger_bundle_mb": round(challenger.bundle.size_bytes / 2**20, 1),
                                   "challenger_load_s": round(challenger.load_seconds, 3)}
        for shape, batches in (("1rec_msgs", singles), ("env1000", envelopes)):
            results[shape] = r = _compare(batches, champion, challenger, reps, min_time)
            log(f"{shape:10s} with a challenger {r['with_challenger_rows_per_s']:>9,.0f} rows/s  without "
                f"{r['without_rows_per_s']:>9,.0f} rows/s  ratio {r['ratio']:.3f}")
        results["min_ratio"] = min(results[s]["ratio"] for s in ("1rec_msgs", "env1000"))
        log(f"lowest ratio with/without a challenger: {results['min_ratio']:.3f} (bound: 0.5); a loaded challenger "
            f"adds {results['challenger_rss_mb']} MB RSS (bundle {results['challenger_bundle_mb']} MB, loaded in "
            f"{results['challenger_load_s']} s)")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1))
    log(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
