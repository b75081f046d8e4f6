"""Cost of the reasons in score records (issue 18): scoring throughput with and without.

    python -m bench.reasons_cost [--quick]

Trains a bundle as the trainer does (EIF, autoencoder, a small XGBoost on simulator labels;
the manifest's quantile digest), then runs the worker's pure pipeline
(:func:`stream_scorer.scoring.score_values`: parse + score + serialise, one thread, no Kafka)
on batches of 1,000 records, timed by this process's CPU time (one thread: what a batch costs,
whatever else runs on the box), with reasons (``SCORE_REASONS=on``, from LOW) and without
(``off``), back to back in pairs so that the machine's drift hits both alike; the ratio
reported is the median of the pairs' ratios. Two traffic mixes: humans only (about 10 % of records reach LOW
and get reasons) and a campaign (30 % bots: about half of the records get reasons), each as
one record per message and as envelopes of 1,000. Also times XGBoost's per-feature
contributions (``pred_contribs``, TreeSHAP) against its plain prediction, the reason they are
not used. Prints the figures and writes ``bench/results/reasons.json``. Never asserts on time.
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


def _compare(batches: list[list[bytes]], bundle: Any, reps: int, min_time: float) -> dict[str, Any]:
    from stream_scorer.scoring import score_values

    def run(reasons_from: str | None) -> Callable[[], int]:
        def once() -> int:
            n = 0
            for values in batches:
                out = score_values(values, bundle, reasons_from=reasons_from)
                n += len(out.scores)
            return n
        return once

    run("LOW")(), run(None)()  # warm-up (numba, caches)
    on, off = [], []
    for _ in range(reps):
        off.append(rows_per_cpu_s(run(None), min_time, time.process_time))
        on.append(rows_per_cpu_s(run("LOW"), min_time, time.process_time))
    out = score_values(batches[0], bundle, reasons_from="LOW")
    with_reasons = sum(1 for _, v in out.scores if orjson.loads(v)["reasons"])
    med_on, med_off = statistics.median(on), statistics.median(off)
    # the median of the back-to-back pairs' ratios: robust to the box's load changing between pairs
    ratio = statistics.median(a / b for a, b in zip(on, off))
    return {"clock": "process CPU time", "with_reasons_rows_per_s": med_on, "without_rows_per_s": med_off,
            "ratio": ratio,
            "ratio_of_medians": med_on / med_off,
            "share_of_records_with_reasons": with_reasons / max(len(out.scores), 1),
            "repetitions": reps, "runs_with": on, "runs_without": off}


def _xgb_contribs(bundle: Any, records: list[dict[str, Any]], min_time: float) -> dict[str, Any] | None:
    """rows per CPU second of XGBoost's predict, of its pred_contribs (TreeSHAP) and of the whole
    ensemble, batches of 1,000."""
    ens = bundle.ensemble
    if ens.xgb is None:
        return None
    import xgboost as xgb

    from ja4_core.ensemble import impute
    from stream_scorer.parsing import parse_batch

    X = impute(parse_batch([orjson.dumps(r) for r in records[:1000]], ens.features).X, ens.medians)[0]
    booster = ens.xgb.booster_
    assert booster is not None
    cpu = time.process_time
    predict = rows_per_cpu_s(lambda: len(ens.xgb.score(X)), min_time, cpu)  # as the worker predicts
    # a new DMatrix per batch, as a worker would need: predict caches results per DMatrix
    contribs = rows_per_cpu_s(lambda: len(booster.predict(xgb.DMatrix(X, nthread=1), pred_contribs=True)), min_time, cpu)
    full = rows_per_cpu_s(lambda: len(ens.score(X).anomaly), min_time, cpu)
    return {"predict_rows_per_s": predict, "pred_contribs_rows_per_s": contribs,
            "ensemble_score_rows_per_s": full,
            "pipeline_ratio_if_contribs_added": 1.0 / (1.0 + full / contribs)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small model, short runs (figures less stable)")
    ap.add_argument("--out", type=Path, default=RESULTS / "reasons.json")
    args = ap.parse_args(argv)
    from ja4_dev.simulator import TrafficSimulator

    reps, min_time = (3, 0.5) if args.quick else (7, 1.5)
    with tempfile.TemporaryDirectory() as tmp:
        log("training the bundle")
        bundle = load_bundle(simulated_bundle(Path(tmp), args.quick, labelled=True).path, nthreads=1)
        results: dict[str, Any] = {"quick": args.quick, "batch_records": 1000, "threads": 1,
                                   "ae_evaluator": bundle.ensemble.ae.evaluator if bundle.ensemble.ae else None}
        for mix, bot_share in (("humans", 0.0), ("campaign", 0.3)):
            records = TrafficSimulator(seed=21, bot_share=bot_share).records(2000)
            singles = [[orjson.dumps(r) for r in records[i:i + 1000]] for i in range(0, 2000, 1000)]
            envelopes = [[orjson.dumps(records[i:i + 1000])] for i in range(0, 2000, 1000)]
            for shape, batches in (("1rec_msgs", singles), ("env1000", envelopes)):
                key = f"{mix}_{shape}"
                results[key] = _compare(batches, bundle, reps, min_time)
                r = results[key]
                log(f"{key:20s} with reasons {r['with_reasons_rows_per_s']:>9,.0f} rows/s  without "
                    f"{r['without_rows_per_s']:>9,.0f} rows/s  ratio {r['ratio']:.3f}  "
                    f"({r['share_of_records_with_reasons']:.0%} of records with reasons)")
            if mix == "campaign":
                results["xgb_contribs"] = _xgb_contribs(bundle, records, min_time)
                log(f"xgb contributions: {results['xgb_contribs']}")
        results["min_ratio"] = min(v["ratio"] for k, v in results.items() if isinstance(v, dict) and "ratio" in v)
        log(f"lowest ratio with/without reasons: {results['min_ratio']:.3f} (bound: 0.85)")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1))
    log(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
