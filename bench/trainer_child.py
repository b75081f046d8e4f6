"""One trainer benchmark run in its own process (so peak memory is this run's own):
``python -m bench.trainer_child ROWS WORKDIR [BOOTSTRAP]`` prints one JSON line.

With the full trainer (``trainer.run.Trainer``) present: simulated history is loaded into an
embedded ClickHouse (not timed as a trainer phase), then ``run_once(force=True)`` is timed per
phase: query (baseline read), labels (XGB out-of-fold + cleanlab), EIF, AE, XGB, write, report.
Without it: the phases of ``trainer.fit.fit_ensemble``. Memory: RSS sampled every 20 ms in a
thread (native numpy/torch memory included), peak per phase, and ``ru_maxrss`` overall.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil


class Sampler:
    def __init__(self) -> None:
        self.samples: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._proc = psutil.Process()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.samples.append((time.monotonic(), self._proc.memory_info().rss))
            time.sleep(0.02)

    def peak(self, t0: float, t1: float) -> int:
        vals = [r for t, r in self.samples if t0 <= t <= t1]
        return max(vals) if vals else self._proc.memory_info().rss

    def stop(self) -> None:
        self._stop.set()
        self._t.join(2)


class Phases:
    def __init__(self) -> None:
        self.marks: list[tuple[str, float]] = []

    def mark(self, name: str) -> None:
        self.marks.append((name, time.monotonic()))

    def spans(self, end: float) -> list[tuple[str, float, float]]:
        out = []
        for i, (name, t) in enumerate(self.marks):
            t1 = self.marks[i + 1][1] if i + 1 < len(self.marks) else end
            out.append((name, t, t1))
        return out


def main() -> None:
    if sys.argv[1] == "--load":
        _load(int(sys.argv[2]), sys.argv[3])
        return
    rows = int(sys.argv[1])
    work = Path(sys.argv[2])
    bootstrap = sys.argv[3] if len(sys.argv) > 3 else None
    work.mkdir(parents=True, exist_ok=True)
    sampler = Sampler()
    phases = Phases()
    result: dict = {"rows": rows}
    try:
        import trainer.run as trun  # noqa: F401
        have_trainer = hasattr(trun, "Trainer")
    except Exception as exc:  # noqa: BLE001
        have_trainer = False
        result["trainer_import_error"] = repr(exc)
    t_start = time.monotonic()
    rss_start = psutil.Process().memory_info().rss
    if have_trainer:
        result["mode"] = "trainer.run.Trainer.run_once(force=True)"
        _full(rows, work, bootstrap, phases, result)
    else:
        result["mode"] = "trainer.fit.fit_ensemble (trainer.run not available)"
        _fit_only(rows, phases, result)
    end = time.monotonic()
    sampler.stop()
    result["phases"] = [{"phase": n, "seconds": round(t1 - t0, 3), "peak_rss_mb": round(sampler.peak(t0, t1) / 2**20, 1)}
                        for n, t0, t1 in phases.spans(end)]
    # The trainer's own time: from its first phase (after the load, which is no phase) to the end.
    result["total_seconds"] = round(end - (phases.marks[0][1] if phases.marks else t_start), 3)
    result["rss_start_mb"] = round(rss_start / 2**20, 1)
    result["ru_maxrss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    print("RESULT " + json.dumps(result), flush=True)


def _sim_rows(rows: int):
    from ja4_dev.simulator import TrafficSimulator

    days = 7.0
    per_hour = max(1, rows // int(days * 24))
    sim = TrafficSimulator(seed=5, bot_share=0.05)
    return sim.history(days, per_hour)


def _load(rows: int, clickhouse_url: str) -> None:
    """Load ``rows`` simulated rows (and 2 % of them as labels) into ``clickhouse_url``."""
    import numpy as np

    from ja4_core.clickhouse_io import connect
    from ja4_core.features import DEFAULT_FEATURES, KEY_FIELDS

    data = _sim_rows(rows)
    with connect(clickhouse_url) as ch:
        ch.init_db(DEFAULT_FEATURES)
        for i in range(0, len(data), 20000):
            ch.insert_features(data[i:i + 20000])
        rng = np.random.default_rng(1)
        chosen = [r for r in data if rng.random() < 0.02]
        ch.insert_labels([{**{k: r[k] for k in KEY_FIELDS}, "label": r["label"], "source": "simulator"} for r in chosen])
    print(json.dumps({"rows_loaded": len(data), "labels": len(chosen)}), flush=True)


def _full(rows: int, work: Path, bootstrap: str | None, phases: Phases, result: dict) -> None:

    import trainer.run as trun
    from ja4_core.settings import load_settings

    env = {"CLICKHOUSE_URL": f"chdb://{work / 'clickhouse'}", "MODEL_STORE": str(work / "models"),
           "TOPIC_CONTROL": f"bench-trainer-control-{os.getpid()}", "LOG_LEVEL": "WARNING"}
    if bootstrap:
        env["KAFKA_BOOTSTRAP_SERVERS"] = bootstrap
    os.environ.update(env)
    settings = load_settings()
    t = time.monotonic()
    # The simulated history is loaded by a process of its own: its million Python dicts
    # would otherwise count in this process's peak RSS, which must be the trainer's.
    out = subprocess.run([sys.executable, "-m", "bench.trainer_child", "--load", str(rows), settings.clickhouse_url],
                         check=True, capture_output=True, text=True).stdout
    loaded = json.loads(out.strip().splitlines()[-1])
    result["load_seconds_not_a_phase"] = round(time.monotonic() - t, 2)
    result["rows_loaded"] = loaded["rows_loaded"]
    result["labels"] = loaded["labels"]

    # The trainer's steps are module-level functions that ``trainer.run`` calls in order
    # (read -> plan -> fit/evaluate -> write -> announce -> report): wrapping the names it
    # calls marks each phase without changing what runs.
    orig_fit, orig_write, orig_report = trun.fit_and_evaluate, trun.write_version, trun.report_run

    def fit_wrapper(*a, progress=None, **kw):
        phases.mark("labels (cleanlab) + fit")

        def say(step, info):
            if step in ("eif", "ae", "xgb"):
                phases.mark(step)
            if progress is not None:
                progress(step, info)
        out = orig_fit(*a, progress=say, **kw)
        phases.mark("evaluate")
        return out

    def write_wrapper(*a, **kw):
        phases.mark("write+announce")
        return orig_write(*a, **kw)

    def report_wrapper(*a, **kw):
        phases.mark("report")
        return orig_report(*a, **kw)

    trun.fit_and_evaluate = fit_wrapper
    trun.write_version = write_wrapper
    trun.report_run = report_wrapper
    phases.mark("query (baseline, labels) + plan (prepare, drift)")
    res = trun.Trainer(settings, publish_timeout_s=10).run_once(force=True)
    result["decision"] = getattr(res, "decision", None)
    result["timings_reported_by_trainer"] = getattr(res, "timings", None)
    result["n_baseline"] = (getattr(res, "metrics", {}) or {}).get("n_baseline")


def _fit_only(rows: int, phases: Phases, result: dict) -> None:
    import numpy as np

    from ja4_core.features import DEFAULT_FEATURES
    from trainer.fit import FitConfig, fit_ensemble

    phases.mark("query (simulated rows -> matrix)")
    data = _sim_rows(rows)
    X = np.array([[r[f] for f in DEFAULT_FEATURES] for r in data], dtype=np.float64)
    y = np.array([r["label"] == "bot" for r in data], dtype=np.int32)
    human = X[y == 0]
    lab = slice(0, min(len(X), 20000))

    def say(step, info):
        if step in ("eif", "ae", "xgb"):
            phases.mark(step)

    fit_ensemble(human, DEFAULT_FEATURES, FitConfig(), xgb_data=(X[lab], y[lab]), progress=say)
    phases.mark("end")


if __name__ == "__main__":
    main()
