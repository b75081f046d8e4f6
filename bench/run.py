"""Benchmarks of ja4-stream, all in one run against one broker and one bundle.

    python -m bench.run [--broker auto|kafka|tansu] [--quick] [--skip SECTION ...]

Starts its own broker on free ports (or uses ``KAFKA_BOOTSTRAP_SERVERS``): ``--broker kafka``
is one Apache Kafka 4 KRaft node from :mod:`ja4_dev.apache_kafka` (jars from Maven Central,
data on disk), ``tansu`` the embedded Tansu (memory storage), ``auto`` (the default) Kafka
where java and mvn are installed. The broker's CPU (Tansu's process, or the JVM) is counted
next to the worker's in every measurement, and ``broker`` in the results names it. Trains a
bundle with the default settings (EIF ntrees=300, ndim=3, sample_size auto; AE; a small
XGBoost on simulator labels) and measures: ceilings (transport, framework, model), scorer
throughput (1 and 2 workers; 1 record/message, envelopes of 100 and 1,000), latency (open
loop at 25/50/80 % of the measured 1-worker max), hot reloads (2 replicas), the trainer
(10k/100k/1M rows, per phase) and EIF speed vs quality. Prints a table, writes
``bench/results/latest.json`` and ``bench/results/latest.png``. Never asserts on time.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import psutil

from bench.common import REPO, RESULTS, free_port, log

BATCH_WAIT_MS = 20
SECTIONS = ("ceilings", "throughput", "latency", "reload", "trainer", "eif")


def machine() -> dict[str, Any]:
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import isotree  # noqa: F401
    from importlib.metadata import version

    return {"cpu": cpu, "logical_cpus": psutil.cpu_count(), "ram_gb": round(psutil.virtual_memory().total / 2**30, 1),
            "python": platform.python_version(), "os": platform.platform(),
            "versions": {p: version(p) for p in ("faust-streaming", "aiokafka", "confluent-kafka", "isotree",
                                                  "xgboost", "torch", "numpy", "orjson")}}


def train_bundle(store_root: Path, n: int) -> tuple[Any, list, list[dict]]:
    """Default-settings bundle (+ small XGB on simulator labels) and 2 more versions of it."""
    from ja4_core.bundle import ModelStore, write_bundle
    from ja4_core.features import DEFAULT_FEATURES
    from ja4_dev.simulator import TrafficSimulator
    from trainer.fit import FitConfig, fit_ensemble

    store = ModelStore(store_root)
    humans = TrafficSimulator(seed=1, bot_share=0.0).records(n)
    X = np.array([[r[f] for f in DEFAULT_FEATURES] for r in humans], dtype=np.float64)
    lab = TrafficSimulator(seed=2, bot_share=0.3).records(5000)
    Xl = np.array([[r[f] for f in DEFAULT_FEATURES] for r in lab], dtype=np.float64)
    yl = np.array([r["label"] == "bot" for r in lab], dtype=np.int32)
    t0 = time.perf_counter()
    fit = fit_ensemble(X, DEFAULT_FEATURES, FitConfig(), xgb_data=(Xl, yl))  # defaults: 300 trees, ndim 3, auto
    log(f"trained the default-settings bundle on {n} human rows in {time.perf_counter() - t0:.1f}s")
    infos = []
    for i in range(3):
        infos.append(write_bundle(store, fit.ensemble, model="default", version=f"bench-v{i + 1}-{uuid.uuid4().hex[:6]}",
                                  smoke_rows=X[:5]))
    store.set_current("default", infos[0].version)
    traffic = TrafficSimulator(seed=9, bot_share=0.1).records(50000)
    for r in traffic:  # keep the payload as producers send it (no label columns)
        r.pop("label", None)
        r.pop("bot_kind", None)
    return store, infos, traffic


def bundle_load_figures(info) -> dict[str, Any]:
    from ja4_core.bundle import load_bundle, smoke_check

    times = []
    for _ in range(5):
        t0 = time.perf_counter()
        b = load_bundle(info.path, expected_manifest_sha256=info.manifest_sha256)
        smoke_check(b)
        times.append(time.perf_counter() - t0)
    files = {p.name: p.stat().st_size for p in info.path.iterdir()}
    return {"bundle_bytes": info.size_bytes, "files": files, "load_plus_smoke_s_median": float(np.median(times)),
            "load_plus_smoke_s_all": times}


def run_trainer(sizes: list[int], work: Path, bootstrap: str) -> list[dict]:
    out = []
    for n in sizes:
        log(f"trainer benchmark: {n} rows (subprocess)")
        d = work / f"trainer-{n}"
        t0 = time.perf_counter()
        try:
            proc = subprocess.run([sys.executable, "-m", "bench.trainer_child", str(n), str(d), bootstrap],
                                  cwd=REPO, capture_output=True, text=True, timeout=1500)
            line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
            if line:
                res = json.loads(line[-1][7:])
            else:
                res = {"rows": n, "error": (proc.stderr or proc.stdout)[-2000:]}
        except subprocess.TimeoutExpired:
            res = {"rows": n, "error": "timed out after 1500 s"}
        res["wall_s_including_startup"] = time.perf_counter() - t0
        log(f"  {json.dumps({k: res.get(k) for k in ('rows', 'mode', 'total_seconds', 'ru_maxrss_mb', 'error')})}")
        for p in res.get("phases", []):
            log(f"    {p['phase']:45s} {p['seconds']:8.2f} s  peak RSS {p['peak_rss_mb']:.0f} MB")
        out.append(res)
        shutil.rmtree(d, ignore_errors=True)
    return out


def start_broker(choice: str, work: Path) -> tuple[Any, str]:
    """Start the bench's broker; return it (``.bootstrap``, ``.stop()``) and its description.
    Its pids go to :data:`bench.common.BROKER_PIDS`, so its CPU is counted."""
    from bench import common
    from ja4_dev import apache_kafka

    kind = choice if choice != "auto" else ("kafka" if apache_kafka.available() else "tansu")
    if kind == "kafka":
        cluster = apache_kafka.KafkaCluster(1, workdir=work / "kafka").start()
        common.BROKER_PIDS[:] = [n.pid for n in cluster.nodes if n.pid is not None]
        return cluster, (f"Apache Kafka {apache_kafka.KAFKA_VERSION} (one KRaft node, JVM heap "
                         f"{cluster.heap}, data on disk)")
    from ja4_dev.tansu import TansuBroker

    broker = TansuBroker(free_port(), log_path=work / "tansu.log").start()
    common.BROKER_PIDS[:] = [broker.proc.pid]
    return broker, "embedded Tansu (memory storage)"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="smaller sizes (~5 min); skips the 1M-row trainer run")
    ap.add_argument("--skip", nargs="*", default=[], choices=SECTIONS, help="sections to skip")
    ap.add_argument("--broker", choices=("auto", "kafka", "tansu"), default="auto",
                    help="the broker to start: Apache Kafka 4 (one KRaft node), the embedded Tansu, or "
                         "auto (Kafka where java and mvn are installed); KAFKA_BOOTSTRAP_SERVERS wins")
    ap.add_argument("--out", default=str(RESULTS / "latest.json"))
    args = ap.parse_args(argv)
    quick = args.quick
    started = time.time()
    RESULTS.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="ja4-bench-"))
    suffix = uuid.uuid4().hex[:6]
    results: dict[str, Any] = {"started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "quick": quick,
                               "machine": machine(), "batch_wait_ms": BATCH_WAIT_MS, "errors": {}}
    broker = None
    os.chdir(REPO)
    try:
        bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
        if not bootstrap:
            broker, results["broker"] = start_broker(args.broker, work)
            bootstrap = broker.bootstrap
        else:
            results["broker"] = "external " + bootstrap
        log(f"broker {bootstrap}; work dir {work}")
        store, infos, traffic = train_bundle(work / "models", 8000 if quick else 20000)
        results["bundle"] = bundle_load_figures(infos[0])
        log(f"bundle {results['bundle']['bundle_bytes'] / 2**20:.1f} MB, load+smoke "
            f"{results['bundle']['load_plus_smoke_s_median']:.3f} s")
        n_tp = 20000 if quick else 40000
        tp_records = traffic[:n_tp]
        from bench.common import records_messages

        # 1. ceilings
        if "ceilings" not in args.skip:
            try:
                from bench.ceilings import model_ceiling, run_ceilings

                results["ceilings"] = {"model": model_ceiling(infos[0].path, traffic, quick)}
                results["ceilings"].update(run_ceilings(bootstrap, records_messages(tp_records, 1), work, suffix))
            except Exception:  # noqa: BLE001
                results["errors"]["ceilings"] = traceback.format_exc()
                log(results["errors"]["ceilings"])
        # 2-4. scorer sessions
        from bench import scorer_bench as sb

        shapes = (1, 100, 1000)
        if not {"throughput", "latency", "reload"} <= set(args.skip):
            try:
                log(f"scorer: 1 worker (SCORER_BATCH_WAIT_MS={BATCH_WAIT_MS})")
                with sb.Session(bootstrap, store.root, work, f"{suffix}-w1", 1, BATCH_WAIT_MS) as s:
                    results["start_to_ready_s"] = {"1_worker": s.start_to_ready_s}
                    results["throughput"] = sb.throughput(s, tp_records, shapes)
                    max_rate = (results["throughput"][0].get("records_per_s_steady")
                                or results["throughput"][0]["records_per_s"])
                    if "latency" not in args.skip:
                        results["latency"] = sb.latency(s, traffic, max_rate, (0.25, 0.5, 0.8), 6 if quick else 12)
                    if "reload" not in args.skip:
                        results["reload_memory"] = sb.reload_memory(s, infos, 10 if quick else 50)
                log("scorer: 2 workers")
                with sb.Session(bootstrap, store.root, work, f"{suffix}-w2", 2, BATCH_WAIT_MS) as s:
                    results["start_to_ready_s"]["2_workers"] = s.start_to_ready_s
                    results["throughput"] += sb.throughput(s, tp_records, shapes)
                    if "reload" not in args.skip:
                        from bench import reload_bench  # equal windows, same polling (its docstring)

                        results["reload"] = reload_bench.reloads(s, traffic, infos, 5 if quick else 20,
                                                                 stream_rate=max(100.0, 0.5 * max_rate), baseline_s=5 if quick else 10)
            except Exception:  # noqa: BLE001
                results["errors"]["scorer"] = traceback.format_exc()
                log(results["errors"]["scorer"])
        # 5. trainer
        if "trainer" not in args.skip:
            try:
                results["trainer"] = run_trainer([10_000, 100_000] if quick else [10_000, 100_000, 1_000_000],
                                                 work, bootstrap)
            except Exception:  # noqa: BLE001
                results["errors"]["trainer"] = traceback.format_exc()
                log(results["errors"]["trainer"])
        # 6. EIF
        if "eif" not in args.skip:
            try:
                from bench.eif_bench import run as eif_run

                log("EIF speed vs quality")
                results["eif"] = eif_run(quick)
            except Exception:  # noqa: BLE001
                results["errors"]["eif"] = traceback.format_exc()
                log(results["errors"]["eif"])
    finally:
        if broker is not None:
            broker.stop()
        shutil.rmtree(work, ignore_errors=True)
        results["duration_s"] = time.time() - started
        from bench.report import ratios, render_table, write_chart

        results["ratios"] = ratios(results)
        Path(args.out).write_text(json.dumps(results, indent=1, default=str))
        table = render_table(results)
        Path(args.out).with_suffix(".txt").write_text(table)
        print(table)
        try:
            write_chart(results, Path(args.out).with_suffix(".png"))
        except Exception:  # noqa: BLE001
            traceback.print_exc()
        log(f"wrote {args.out} and {Path(args.out).with_suffix('.png')} in {results['duration_s'] / 60:.1f} min")
    return 0


if __name__ == "__main__":
    sys.exit(main())
