"""The review console in a real browser (issue 18): Debian's chromium, headless, driven by
selenium through Debian's chromedriver (no browser download). Scores in, the page lists them
with their reasons, one click labels a row, the label is in soc_labels (the page shows it back
from there), and the next ``stream-trainer run-once`` counts it. Writes the screenshot linked
from the README (``docs/console.png``; ``JA4_CONSOLE_SCREENSHOT`` to write it elsewhere).
On c1c1da8 there was no console to open."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import orjson
import pytest

from ja4_dev.processes import ProductProcess, python_module
from tests.helpers import FAST_GROUP_ENV, REPO, free_port, produce

CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
CHAMPION, CHALLENGER = "20261201T000000000Z-test", "20261201T010000000Z-next"
QUICK_TRAINER = {"EIF_NTREES": "20", "AE_EPOCHS": "1", "BASELINE_DAYS": "2", "TRAINER_CHECK_INTERVAL_S": "5"}

pytestmark = pytest.mark.skipif(not (CHROMIUM.exists() and CHROMEDRIVER.exists()),
                                reason="needs Debian's chromium and chromium-driver "
                                       "(apt-get install -y chromium chromium-driver; .ci/run installs them)")


def _run(args: list[str], env: dict, cwd: Path, timeout: float = 240) -> str:
    done = subprocess.run([sys.executable, "-m", *args], env={**os.environ, **env}, cwd=cwd, capture_output=True,
                          text=True, timeout=timeout)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    return done.stdout


def _chdb(dsn: str, code: str, *args: str, cwd: Path) -> object:
    prog = ("import json,sys; from ja4_core.clickhouse_io import connect; from ja4_dev.simulator import TrafficSimulator; "
            "ch = connect(sys.argv[1]); ch.init_db(); "
            f"out = {code}; print(json.dumps(out, default=str)); ch.close()")
    done = subprocess.run([sys.executable, "-c", prog, dsn, *args], capture_output=True, text=True, check=True, cwd=cwd)
    return json.loads(done.stdout.strip().splitlines()[-1])


def _start(args: list[str], env: dict, log: Path) -> ProductProcess:
    return ProductProcess(args[0], python_module("stream_scorer.cli", *args), env, log, cwd=log.parent).start()


def _browser():  # type: ignore[no-untyped-def]
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = str(CHROMIUM)
    for arg in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-dev-shm-usage", "--window-size=1500,900"):
        opts.add_argument(arg)
    return webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=opts)


def _wait(what: str, check, timeout: float = 60.0, every: float = 0.3):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            got = check()
        except Exception:  # the page is re-rendering (a stale element): look again
            got = None
        if got:
            return got
        time.sleep(every)
    raise AssertionError(f"timed out waiting for {what}")


def test_a_click_in_the_browser_labels_a_row_and_the_trainer_counts_it(kafka_bootstrap, unique, tmp_path) -> None:
    from selenium.webdriver.common.by import By

    from ja4_core.control import build_control, control_key
    from ja4_dev.simulator import TrafficSimulator

    dsn = f"chdb://{tmp_path / 'ch'}"
    console_port = str(free_port())
    env = {"KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap, "TOPIC_SCORES": f"scores-{unique}", "TOPIC_DLQ": f"dlq-{unique}",
           "TOPIC_LABELS": f"labels-{unique}", "TOPIC_SHADOW_SCORES": f"shadow-{unique}",
           "TOPIC_FEATURES": f"features-{unique}", "TOPIC_CONTROL": f"control-{unique}",
           "SCORER_APP_ID": f"scorer-{unique}", "SINK_APP_ID": f"sink-{unique}", "CLICKHOUSE_URL": dsn,
           "MODEL_STORE": str(tmp_path / "models"), "SINK_WEB_PORT": str(free_port()), "CONSOLE_PORT": console_port,
           "SINK_BATCH_WAIT_MS": "200", "TOPIC_PARTITIONS": "2", **FAST_GROUP_ENV, **QUICK_TRAINER}
    # A day of unlabelled simulated history (the trainer's baseline) and this hour's windows.
    now = datetime.now(timezone.utc)
    live = TrafficSimulator(seed=7, bot_share=0.3).records(12, start=now.replace(minute=0, second=0, microsecond=0))
    for rec in live:
        rec.pop("label", None), rec.pop("bot_kind", None)
    _chdb(dsn, "[ch.insert_features(TrafficSimulator(seed=1, bot_share=0.0).history(1, 60)),"
               " ch.insert_features(json.loads(sys.argv[2]))]", json.dumps(live, default=str), cwd=tmp_path)
    # Their score records (MEDIUM and LOW: neither a positive nor a negative label by level).
    scores = []
    for i, rec in enumerate(live):
        score = round(0.95 - 0.05 * i, 3)
        scores.append({**{k: rec[k] for k in ("window_start", "src_ip", "ja4", "host")}, "anomaly_score": score,
                       "eif_score": score, "threat_level": "MEDIUM" if i < 4 else "LOW", "model_name": "default",
                       "model_version": CHAMPION, "scored_at": (now - timedelta(minutes=1)).isoformat(),
                       "reasons": [{"feature": "hit_velocity", "value": 30.0 - i, "median": 0.9, "p99": 4.2, "weight": 0.55},
                                   {"feature": "fingerprint_coherence_score", "value": 0.21, "median": 0.93,
                                    "p99": 0.99, "weight": 0.3}]})
    produce(kafka_bootstrap, env["TOPIC_SCORES"], [(s["src_ip"].encode(), orjson.dumps(s, default=str)) for s in scores])
    # The model served and a challenger shadowing it, as the trainer announces them (signed).
    env["CONTROL_SIGNING_KEY"] = "browser-test-signing-key"
    announced = []
    for i, (kind, version) in enumerate((("activate", CHAMPION), ("shadow", CHALLENGER))):
        value = build_control(kind, model="default", version=version, uri=f"file://{tmp_path}/models/default/{version}",
                              manifest_sha256="0" * 64, issued_by="test", signing_key=env["CONTROL_SIGNING_KEY"],
                              issued_at=now - timedelta(minutes=10 - i))
        announced.append((control_key(kind, "default"), value))
    produce(kafka_bootstrap, env["TOPIC_CONTROL"], announced)

    sink = _start(["sink"], env, tmp_path / "sink.log")
    console = _start(["console"], env, tmp_path / "console.log")
    shot = Path(os.environ.get("JA4_CONSOLE_SCREENSHOT", REPO / "docs" / "console.png"))
    browser = _browser()
    try:
        url = f"http://127.0.0.1:{console_port}/"

        def rows_listed():  # type: ignore[no-untyped-def]
            browser.get(url) if browser.current_url != url else None
            rows = browser.find_elements(By.CSS_SELECTOR, "#rows tbody tr[data-key]")
            return rows if len(rows) == len(scores) else None

        _wait("the page to list every scored window", lambda: (console.running or pytest.fail("console died"))
              and rows_listed(), timeout=90, every=1.0)
        first = browser.find_element(By.CSS_SELECTOR, "#rows tbody tr[data-key]")
        assert first.get_attribute("data-src-ip") == scores[0]["src_ip"]
        reasons = first.find_element(By.CSS_SELECTOR, "td.reasons").text
        assert "hit_velocity = 30.0 (0.900 / 4.20)" in reasons and "fingerprint_coherence_score" in reasons
        assert "MEDIUM" in first.text and CHAMPION in first.text
        _wait("the model and lag figures", lambda: browser.find_element(By.ID, "lag").text not in ("…", "?")
              and browser.find_element(By.ID, "model").text == CHAMPION)
        assert browser.find_element(By.ID, "challenger").text == CHALLENGER

        browser.find_element(By.ID, "analyst").send_keys("ann")
        first.find_element(By.CSS_SELECTOR, "button.label-bot").click()
        _wait("the label to be sent", lambda: "label sent: bot" in browser.find_element(By.ID, "message").text)

        def stored():  # type: ignore[no-untyped-def]
            browser.find_element(By.CSS_SELECTOR, "#filters button[type=submit]").click()  # refresh the rows now
            time.sleep(0.5)
            row = browser.find_element(By.CSS_SELECTOR, f"#rows tbody tr[data-src-ip='{scores[0]['src_ip']}']")
            return row.find_element(By.CSS_SELECTOR, "td.label").text == "bot by ann"

        _wait("the label to come back from soc_labels", stored, timeout=60, every=1.0)
        shot.parent.mkdir(parents=True, exist_ok=True)
        assert browser.save_screenshot(str(shot)), shot
    finally:
        browser.quit()
        console.stop(grace=30)
        sink.stop(grace=30)

    labels = _chdb(dsn, "ch.client.query('SELECT src_ip, label, source, analyst FROM ja4.soc_labels').result_rows",
                   cwd=tmp_path)
    assert labels == [[scores[0]["src_ip"], "bot", "console", "ann"]]
    # The next training run reads it: the only label there is (no level here is a label). Its own
    # control topic: the challenger announced above for the page would make it wait ("shadowing").
    _run(["trainer.cli", "run-once"], {**env, "TOPIC_CONTROL": f"control-trainer-{unique}"}, tmp_path)
    history = _chdb(dsn, "ch.client.query('SELECT decision, n_labels FROM ja4.model_training_history').result_rows",
                    cwd=tmp_path)
    assert history == [["trained", 1]], history
