"""Cost of the review console's read and of a label import (issue 18), on the embedded ClickHouse.

    python -m bench.console_query [--rows 200000]

Fills a fresh chdb directory with ``--rows`` score rows scored in the last hour (a tenth of
them scored twice, by two model versions, as around a reload), then times
:meth:`ja4_core.clickhouse_io.ClickHouseIO.review_rows` (what one page refresh costs the
sink's ClickHouse thread: top 100, with and without filters, median of 5) and
``stream-trainer label --file``'s import of 10,000 NDJSON labels (check + scored lookup +
insert). Prints the figures and writes ``bench/results/console.json``. Never asserts on time.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import orjson

from bench.common import RESULTS, log


def _timed(fn, repeat: int = 5) -> float:  # type: ignore[no-untyped-def]
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200_000)
    args = parser.parse_args()
    from ja4_core.clickhouse_io import connect
    from trainer.label_import import import_labels

    now = datetime.now(timezone.utc)
    window = int(now.replace(minute=0, second=0, microsecond=0).timestamp())
    levels = ("NORMAL", "LOW", "MEDIUM", "HIGH", "CRITICAL")
    reasons = json.dumps([{"feature": "hit_velocity", "value": 12.0, "median": 0.9, "p99": 4.2, "weight": 0.6}])
    with tempfile.TemporaryDirectory() as tmp:
        ch = connect(f"chdb://{tmp}/ch")
        ch.init_db()
        has_reasons = "reasons" in ch.columns("ml_all_scores")
        rows = []
        for i in range(args.rows):
            score = (i * 7919 % 10_000) / 10_000
            rows.append({"window_start": window, "src_ip": f"10.{i // 65536}.{i // 256 % 256}.{i % 256}",
                         "ja4": f"t13d{i % 50:02d}_x", "host": f"h{i % 20}.example", "anomaly_score": score,
                         "threat_level": levels[min(4, int(score * 5))], "model_version": "v1",
                         "scored_at": (now - timedelta(seconds=i % 3000)).isoformat(),
                         **({"reasons": json.loads(reasons)} if has_reasons and score > 0.9 else {})})
        t = time.perf_counter()
        for start in range(0, len(rows), 50_000):
            ch.insert_scores(rows[start:start + 50_000])
        ch.insert_scores([{**r, "model_version": "v2"} for r in rows[:args.rows // 10]])
        log(f"inserted {args.rows + args.rows // 10} score rows in {time.perf_counter() - t:.1f}s")
        since = int(now.timestamp()) - 3600
        out = {
            "score_rows": args.rows + args.rows // 10, "reasons_column": has_reasons,
            "top100_s": _timed(lambda: ch.review_rows(since=since, limit=100)),
            "top100_high_critical_s": _timed(lambda: ch.review_rows(since=since, levels=("HIGH", "CRITICAL"),
                                                                    limit=100)),
            "top100_host_ja4_filter_s": _timed(lambda: ch.review_rows(since=since, host="h3.", ja4="t13d0",
                                                                      limit=100)),
        }
        path = Path(tmp) / "labels.ndjson"
        with open(path, "wb") as fh:
            for r in rows[:10_000]:
                fh.write(orjson.dumps({k: r[k] for k in ("window_start", "src_ip", "ja4", "host")}
                                      | {"label": "bot", "source": "bench"}) + b"\n")
        t = time.perf_counter()
        result = import_labels(ch, path)
        out["import_10k_labels_s"] = time.perf_counter() - t
        out["import_unscored"] = result.unscored
        ch.close()
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "console.json").write_text(json.dumps(out, indent=1))
    for key, value in out.items():
        log(f"{key}: {value:.3f}" if isinstance(value, float) else f"{key}: {value}")


if __name__ == "__main__":
    main()
