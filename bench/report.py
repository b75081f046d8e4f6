"""Table, target ratios (issue 6) and chart of one benchmark run."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def _g(d: Any, *path: Any, default: Any = None) -> Any:
    for p in path:
        try:
            d = d[p]
        except (KeyError, IndexError, TypeError):
            return default
    return d


def _tp(res: dict, workers: int, per: int) -> dict | None:
    for r in res.get("throughput") or []:
        if r["workers"] == workers and r["records_per_message"] == per:
            return r
    return None


def _rate(row: dict) -> float:
    """Steady-state records/s (10 % -> 90 % of arrivals) when measured, else the overall rate.
    The Faust ceiling is likewise counted from its first to its last message."""
    return row.get("records_per_s_steady") or row["records_per_s"]


def ratios(res: dict) -> dict[str, Any]:
    out: dict[str, Any] = {}
    faust = _g(res, "ceilings", "framework", "msgs_per_s")
    model = _g(res, "ceilings", "model", "combined_rows_per_s")
    one = _tp(res, 1, 1)
    env = _tp(res, 1, 1000)
    if faust and one:
        r = _rate(one) / faust
        # Issue 20's target: the bulk hand-off (stream_scorer/bulk_consumer.py) skips Faust's per-message path.
        out["1rec_per_msg_vs_faust"] = {"value": r, "target": ">= 2.0", "met": r >= 2.0}
    if model and env:
        r = _rate(env) / model
        out["env1000_vs_model"] = {"value": r, "target": ">= 0.8", "met": r >= 0.8}
    for row in res.get("latency") or []:
        if row["fraction_of_max"] == 0.5 and row.get("p99_ms") is not None:
            r = row["p99_ms"] / res["batch_wait_ms"]
            out["p99_at_50pct_vs_batch_wait"] = {"value": r, "p99_ms": row["p99_ms"], "target": "<= 2",
                                                 "met": r <= 2}
    out.update(_issue20_targets(res))
    v = _g(res, "eif", "verdict")
    if v:
        out["eif_variants_within_0.005"] = {k: x["within_0.005_everywhere"] for k, x in v.items()}
    return out


def _target(value: float | None, target: float, at_most: bool = True) -> dict[str, Any] | None:
    if value is None:
        return None
    return {"value": value, "target": f"{'<=' if at_most else '>='} {target}",
            "met": value <= target if at_most else value >= target}


def _issue20_targets(res: dict) -> dict[str, Any]:
    """The performance targets of issue 20, each with ``met`` (recorded, never asserted)."""
    rl = res.get("reload") or {}
    gap_ratio = None
    if rl.get("max_gap_during_reloads_s") and rl.get("max_gap_without_reloads_s"):
        gap_ratio = rl["max_gap_during_reloads_s"] / rl["max_gap_without_reloads_s"]
    rss = [mb for row in res.get("throughput") or [] for mb in row.get("rss_mb") or []]
    ready = res.get("start_to_ready_s") or {}
    trainer = {row.get("rows"): row for row in res.get("trainer") or []}
    big = trainer.get(1_000_000) or {}
    candidates = {
        "reload_to_all_replicas_median_s": _target(rl.get("to_all_replicas_median_s"), 1.0),
        "reload_to_all_replicas_max_s": _target(rl.get("to_all_replicas_max_s"), 2.0),
        "reload_gap_vs_without": _target(gap_ratio, 1.5),
        "bundle_load_verify_smoke_s": _target(_g(res, "bundle", "load_plus_smoke_s_median"), 0.10),
        "worker_rss_steady_max_mb": _target(max(rss) if rss else None, 400.0),
        "worker_start_to_ready_max_s": _target(max((v for v in ready.values() if v is not None), default=None), 10.0),
        "trainer_1m_rows_s": _target(big.get("total_seconds"), 120.0),
        "trainer_1m_rows_peak_mb": _target(big.get("ru_maxrss_mb"), 3072.0),
    }
    return {k: v for k, v in candidates.items() if v is not None}


def _f(x: Any, nd: int = 0) -> str:
    if x is None:
        return "-"
    if isinstance(x, float):
        return f"{x:,.{nd}f}"
    return str(x)


def _cores(c: dict | None) -> str:
    """Where the box's cores went during a measurement (see ``common.CpuWindow``)."""
    if not c:
        return ""
    return (f"; cores busy {c['box']}/{c['of']}: broker {_f(c.get('broker'), 2)}, measured {c['measured']}, "
            f"bench {c['bench']}")


def _stages(r: dict) -> list[str]:
    """A worker's mean ms per batch in each stage (``ja4_stage_seconds``) during a measurement."""
    st = r.get("worker_stages_ms_mean") or {}
    if not st:
        return []
    parts = [f"{k} {v:,.1f}" for k, v in st.items() if k != "records"]
    return [f"{'':>15}worker 1, mean per batch of {st.get('records', 0):,.0f} records (ms): " + ", ".join(parts)]


def _split(r: dict) -> str:
    w, t = r.get("to_worker_produce_ms") or {}, r.get("produce_to_readable_ms") or {}
    if not w:
        return ""
    g = lambda d, q: d.get(q, d.get(str(q)))  # noqa: E731 - JSON keys are strings
    return (f"; p50/p99 stamp->worker produced {_f(g(w, 50), 1)}/{_f(g(w, 99), 1)} ms, "
            f"->readable {_f(g(t, 50), 1)}/{_f(g(t, 99), 1)} ms")


def render_table(res: dict) -> str:
    L: list[str] = []
    m = res.get("machine", {})
    L.append(f"\n== ja4-stream benchmarks ({'quick' if res.get('quick') else 'full'}) on {m.get('cpu')} "
             f"x{m.get('logical_cpus')} CPUs, {m.get('ram_gb')} GB; SCORER_BATCH_WAIT_MS={res.get('batch_wait_ms')}; "
             f"{res.get('broker')}")
    c = res.get("ceilings") or {}
    if c:
        L.append("\n-- ceilings --")
        L.append(f"transport  raw aiokafka         {_f(_g(c, 'transport', 'msgs_per_s'))} msgs/s")
        L.append(f"framework  Faust counting agent {_f(_g(c, 'framework', 'msgs_per_s'))} msgs/s{_cores(_g(c, 'framework', 'cores'))}")
        mm = c.get("model") or {}
        for k in ("eif_rows_per_s", "ae_rows_per_s", "ae_torch_rows_per_s", "xgb_rows_per_s", "combined_rows_per_s",
                  "combined_rows_per_s_2threads", "parse_rows_per_s", "score_values_1rec_msgs_rows_per_s",
                  "score_values_env1000_rows_per_s", "eif_isotree_rows_per_s", "eif_fast_rows_per_s"):
            if k in mm:
                L.append(f"model      {k:36s} {_f(mm[k])} rows/s")
        if "eif_fast_max_abs_diff" in mm:
            L.append(f"model      eif_fast max |diff| vs isotree   {mm['eif_fast_max_abs_diff']:.1e}")
        if "eif_evaluator" in mm:
            L.append(f"model      EIF evaluator in the bundle:      {mm['eif_evaluator']}")
    if res.get("throughput"):
        L.append("\n-- scorer throughput (workers drain a pre-produced backlog; rec/s = restart -> last score, steady = 10 % -> 90 % of the scores) --")
        L.append(f"{'workers':>7} {'rec/msg':>7} {'records':>8} {'rec/s':>9} {'steady':>9} {'CPU us/rec':>10} {'CPU util':>8}  RSS MB; cores busy (10 % -> 90 %)")
        for r in res["throughput"]:
            L.append(f"{r['workers']:>7} {r['records_per_message']:>7} {r['scored']:>8} {r['records_per_s']:>9,.0f} "
                     f"{_f(r.get('records_per_s_steady')):>9} "
                     f"{r['cpu_s_per_record'] * 1e6:>10,.0f} {r['cpu_utilisation']:>8.2f}  {r['rss_mb']}"
                     + _cores(r.get("cores")) + ("" if r["complete"] else "  INCOMPLETE"))
            L.extend(_stages(r))
    if res.get("latency"):
        L.append(f"\n-- latency, 1 worker, 1 record/message, open loop (batch wait {res['batch_wait_ms']} ms) --")
        L.append(f"{'load':>5} {'rate/s':>8} {'achieved':>8} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'max ms':>8} recv")
        for r in res["latency"]:
            L.append(f"{int(r['fraction_of_max'] * 100):>4}% {r['target_rate']:>8,.0f} {r['achieved_rate']:>8,.0f} "
                     f"{_f(r['p50_ms'], 1):>8} {_f(r['p95_ms'], 1):>8} {_f(r['p99_ms'], 1):>8} {_f(r['max_ms'], 1):>8} "
                     f"{r['received']}/{r['records']}" + _split(r) + _cores(r.get("cores")))
            L.extend(_stages(r))
    rl, rm, b = res.get("reload"), res.get("reload_memory"), res.get("bundle")
    if rl or rm or b:
        L.append("\n-- hot reload --")
        if b:
            L.append(f"bundle size {b['bundle_bytes'] / 2**20:.2f} MB ({', '.join(f'{k} {v / 2**20:.2f}' for k, v in b['files'].items())}); "
                     f"load_bundle+smoke_check median {b['load_plus_smoke_s_median']:.3f} s")
        if rl:
            L.append(f"{rl['reloads']} reloads, {rl['replicas']} replicas, stream {rl['stream_rate']:.0f} rec/s: control produced -> "
                     f"active on all: median {_f(rl['to_all_replicas_median_s'], 3)} s, max {_f(rl['to_all_replicas_max_s'], 3)} s "
                     f"({rl['succeeded']} ok)")
            L.append(f"longest gap between score arrivals: {_f(rl['max_gap_without_reloads_s'], 3)} s without reloads, "
                     f"{_f(rl['max_gap_during_reloads_s'], 3)} s during reloads; scored {rl['records_scored_unique']}/{rl['records_sent']}"
                     + (f" (the backlog drained {rl['backlog_drained_after_stream_s']:.0f} s after the stream ended)"
                        if rl.get("backlog_drained_after_stream_s") else "")
                     + (f"; the scores topic, read again, holds {rl['records_scored_unique_reread']}"
                        if rl.get("records_scored_unique_reread") is not None else ""))
        if rm:
            L.append(f"{rm['reloads']} reloads in one worker: RSS {rm['rss_before_mb']:.0f} -> {rm['rss_after_mb']:.0f} MB "
                     f"({rm['growth_mb']:+.0f} MB)")
    if res.get("trainer"):
        L.append("\n-- trainer (subprocess per size; peak RSS sampled every 20 ms) --")
        for t in res["trainer"]:
            if "error" in t:
                L.append(f"{t['rows']:>9} rows: ERROR {t['error'][-300:]}")
                continue
            L.append(f"{t['rows']:>9} rows: total {t['total_seconds']:.1f} s, ru_maxrss {t['ru_maxrss_mb']:.0f} MB "
                     f"[{t['mode']}]" + (f", data load (not a phase) {t.get('load_seconds_not_a_phase')} s"
                                          if "load_seconds_not_a_phase" in t else ""))
            for p in t["phases"]:
                L.append(f"           {p['phase']:45s} {p['seconds']:8.2f} s  peak {p['peak_rss_mb']:6.0f} MB")
    e = res.get("eif")
    if e:
        L.append(f"\n-- EIF speed vs quality (ROC AUC fit all/score all, mean of seeds {e.get('seeds', [1])}; speed on "
                 f"{e['speed_rows']} rows, batches of 1,000; rows/s) --")
        L.append(f"{'dataset':12s} {'variant':18s} {'AUC':>7} {'isotree 1t':>10} {'isotree 2t':>10} {'compiled 1t':>11} "
                 f"{'compiled 2t':>11} {'max diff':>9}")
        for r in e["rows"]:
            L.append(f"{r['dataset']:12s} {r['variant']:18s} {r['roc_auc']:7.4f} {r['rows_per_s_1thread']:>10,.0f} "
                     f"{r['rows_per_s_2threads']:>10,.0f} {_f(r.get('compiled_rows_per_s_1thread')):>11} "
                     f"{_f(r.get('compiled_rows_per_s_2threads')):>11} "
                     f"{(format(r['compiled_max_abs_diff'], '.1e') if 'compiled_max_abs_diff' in r else '-'):>9}")
        for k, v in e["verdict"].items():
            L.append(f"  {k:10s} within 0.005 of original everywhere: {v['within_0.005_everywhere']} "
                     f"({', '.join(f'{d} {x:+.4f}' for d, x in v['auc_minus_original'].items())})")
    rt = res.get("ratios") or {}
    if rt:
        L.append("\n-- targets (issue 6) --")
        for k, v in rt.items():
            L.append(f"{k}: {v}")
    if res.get("errors"):
        L.append("\n-- errors --")
        for k, v in res["errors"].items():
            L.append(f"{k}: {v.strip().splitlines()[-1]}")
    return "\n".join(L)


def write_chart(res: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(14, 9))
    ax = axes[0][0]
    labels, vals = [], []
    c = res.get("ceilings") or {}
    for name, v in (("aiokafka", _g(c, "transport", "msgs_per_s")), ("Faust count", _g(c, "framework", "msgs_per_s")),
                    ("model (comb.)", _g(c, "model", "combined_rows_per_s")), ("EIF", _g(c, "model", "eif_rows_per_s"))):
        if v:
            labels.append(name)
            vals.append(v)
    for r in res.get("throughput") or []:
        labels.append(f"scorer {r['workers']}w x{r['records_per_message']}")
        vals.append(_rate(r))  # steady state, like the ceilings
    ax.barh(labels, vals, color=["#888"] * min(4, len(vals)) + ["#1f77b4"] * (len(vals) - min(4, len(vals))))
    ax.set_xscale("log")
    ax.set_xlabel("records (messages) per second, log scale")
    ax.set_title("ceilings vs scorer throughput")
    ax = axes[0][1]
    lat = res.get("latency") or []
    if lat:
        x = [r["target_rate"] for r in lat]
        for q in ("p50_ms", "p95_ms", "p99_ms"):
            ax.plot(x, [r[q] for r in lat], marker="o", label=q)
        ax.axhline(2 * res["batch_wait_ms"], color="red", ls="--", label="2 x batch wait")
        ax.set_xlabel("offered records/s (1 worker)")
        ax.set_ylabel("ms")
        ax.legend()
    ax.set_title("latency produce -> score readable")
    ax = axes[1][0]
    tr = [t for t in res.get("trainer") or [] if "phases" in t]
    if tr:
        names = []
        for t in tr:
            for p in t["phases"]:
                if p["phase"] not in names:
                    names.append(p["phase"])
        bottom = [0.0] * len(tr)
        for n in names:
            h = [next((p["seconds"] for p in t["phases"] if p["phase"] == n), 0.0) for t in tr]
            ax.bar([str(t["rows"]) for t in tr], h, bottom=bottom, label=n[:30])
            bottom = [a + b for a, b in zip(bottom, h)]
        ax.set_ylabel("seconds")
        ax.set_xlabel("baseline rows")
        ax.legend(fontsize=7)
    ax.set_title("trainer wall time per phase")
    ax = axes[1][1]
    e = res.get("eif")
    if e:
        for ds in sorted({r["dataset"] for r in e["rows"]}):
            rs = [r for r in e["rows"] if r["dataset"] == ds]
            ax.scatter([r["rows_per_s_1thread"] for r in rs], [r["roc_auc"] for r in rs], label=ds)
            for r in rs:
                ax.annotate(r["variant"].split()[-1], (r["rows_per_s_1thread"], r["roc_auc"]), fontsize=6)
        ax.set_xscale("log")
        ax.set_xlabel("predict rows/s, 1 thread")
        ax.set_ylabel("ROC AUC")
        ax.legend(fontsize=7)
    ax.set_title("EIF speed vs quality")
    fig.suptitle(f"ja4-stream benchmarks {res.get('started_at')} - {_g(res, 'machine', 'cpu')}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
