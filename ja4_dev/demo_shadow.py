"""The demo's champion-and-challenger act (issue 17): the retrain after the campaign's labels
is announced as a challenger, shadows the live traffic, and is judged on the analysts' labels.

Runs in the demo's retrain thread, after ``stream-trainer run-once --force`` announced the
challenger (``PROMOTION_POLICY=shadow``): the sink runs while every replica loads the
challenger and both models score the traffic for :data:`SHADOW_S` seconds; then the sink
stops (the embedded ClickHouse takes one process at a time), analysts' labels arrive for part
of what was sent meanwhile (campaign bots and some humans), and ``stream-trainer run-once``
judges the challenger: promoted (every replica switches) or retired. The verdict's figures,
champion and challenger side by side, come from the run's ``trainer.prom``.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import orjson

#: Seconds both models score the live traffic before the analysts' labels and the verdict.
SHADOW_S = 20.0
#: The judge's thresholds in the demo: a few minutes of traffic give fewer labels than a day.
JUDGE_ENV = {"SHADOW_MIN_BOTS": "20", "SHADOW_MIN_HUMANS": "20", "SHADOW_MARGIN": "0.005"}
#: Shares of the records sent while shadowing that analysts label.
LABEL_CAMPAIGN, LABEL_HUMANS = 0.3, 0.05

_GAUGE = re.compile(r'^(ja4_trainer_challenger_\w+)\{(\w+)="([^"]*)"\} (\S+)$')


def newest_version(models: Path, model: str) -> str:
    from ja4_core.bundle import ModelStore

    versions = ModelStore(models).versions(model)
    if not versions:
        raise RuntimeError(f"no version of {model} in {models}")
    return versions[-1]


def verdict_figures(prom: Path) -> dict[str, Any]:
    """The last verdict from ``trainer.prom``: decision, AUC and recall of both models, labels."""
    out: dict[str, Any] = {}
    try:
        text = prom.read_text()
    except OSError:
        return out
    for line in text.splitlines():
        m = _GAUGE.match(line)
        if not m:
            continue
        name, _, label, value = m.groups()
        short = name.removeprefix("ja4_trainer_challenger_")
        if short == "decision":
            if float(value) == 1.0:
                out["decision"] = label
        else:
            out[f"{label}_{short}"] = float(value)
    return out


def challenger_loaded(urls: list[str], version: str, get_json: Callable[[str], Any]) -> bool:
    infos = [get_json(u + "/model") or {} for u in urls]
    return all(((i.get("challenger") or {}).get("active") or {}).get("model_version") == version for i in infos)


def shadow_labels(records: list[dict[str, Any]], truth: dict[tuple, Any], path: Path, seed: int = 7) -> int:
    """Analysts' labels for part of ``records`` (campaign bots and some humans) into ``path``."""
    rng = np.random.default_rng(seed)
    n = 0
    with open(path, "wb") as fh:
        for rec in records:
            t = truth.get((str(rec["window_start"]), rec["src_ip"], rec["ja4"], rec["host"]))
            if t is None:
                continue
            if (t.campaign and rng.random() < LABEL_CAMPAIGN) or (t.label == "human" and rng.random() < LABEL_HUMANS):
                fh.write(orjson.dumps({k: rec[k] for k in ("window_start", "src_ip", "ja4", "host")}
                                      | {"label": t.label}) + b"\n")
                n += 1
    return n


def run_shadow_act(demo: Any, traffic: Any, env: dict[str, str], sink_env: dict[str, str], urls: list[str],
                   get_json: Callable[[str], Any], run_chdb_task: Callable[..., Any]) -> dict[str, Any]:
    """The act itself (see the module docstring); returns the verdict's figures with the
    challenger's version."""
    model = demo.settings.model_name
    challenger = newest_version(demo.models, model)
    out: dict[str, Any] = {"challenger": challenger, "champion": demo._current()}  # noqa: SLF001
    sink = demo._start_sink(sink_env)  # noqa: SLF001
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not challenger_loaded(urls, challenger, get_json):
            time.sleep(0.5)
        start = len(traffic.sent_records)
        demo.say(f"      challenger {challenger} shadows on every replica; both models score the traffic "
                 f"for {SHADOW_S:.0f} s")
        time.sleep(SHADOW_S)
        sent = list(traffic.sent_records[start:])
        time.sleep(3.0)  # the last of them through the workers and the sink
    finally:
        sink.stop()
    labels_path = demo.var / "demo" / "shadow_labels.ndjson"
    empty = demo.var / "demo" / "shadow_features.ndjson"
    empty.write_bytes(b"")
    n = shadow_labels(sent, traffic.truth, labels_path)
    run_chdb_task(demo.dsn, "load", json.dumps({"features": str(empty), "labels": str(labels_path)}),
                  demo.logs / "chdb.log")
    demo.say(f"      analysts labelled {n} of the {len(sent)} records both models scored; the trainer judges")
    demo.trainer({**env, **JUDGE_ENV, "PROMOTION_POLICY": "shadow"}, "run-once", name="judge")
    out.update(verdict_figures(demo.models / model / "trainer.prom"))
    return out
