"""``stream-scorer demo``: the whole loop on the embedded default, in one command.

1. start the broker (``--broker``, default ``auto``: Apache Kafka 4 from :mod:`ja4_dev.apache_kafka`
   where java and mvn are installed, else the embedded Tansu, also when Kafka fails to
   start) and use the embedded ClickHouse (chdb) under ``./var/``
   (models and tables are reused between runs);
2. load a week of simulated, partly labelled history and train the first version;
3. start the scorer replicas and the sink as separate processes; stream live traffic, then
   a bot campaign that impersonates a browser fingerprint;
4. label part of the campaign (as analysts would) into ``soc_labels``, run the trainer (as
   soon as a replica asks for a retrain because its live drift rose, see
   :mod:`ja4_dev.demo_drift`, or at the scheduled point); the new version is hot-reloaded by
   every replica while traffic flows;
5. show a live view; 6. end with a summary against the simulator's ground truth.

The embedded ClickHouse is in-process and allows one process per directory, so the demo
hands it over: the sink stops (after committing) while a trainer step runs, and the
scores wait in Kafka meanwhile. With a ClickHouse server all run at once.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import threading
import time
import urllib.request
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import orjson

from ja4_core.features import LEVEL_QUANTILES, SCORE_LEVELS
from ja4_core.settings import Settings
from ja4_dev.demo_drift import MIN_DURATION_S as DRIFT_MIN_DURATION_S
from ja4_dev.demo_drift import REPLICA_DRIFT_ENV, DriftPhase, drift_line
from ja4_dev.processes import ProbeTimeout, ProcessExited, ProductProcess, python_module
from ja4_dev.simulator import analyst_label
from ja4_dev.tansu import TansuBroker, free_port

#: ``--broker`` choices; ``auto`` is Apache Kafka where java and mvn are installed, else Tansu.
BROKER_NAMES = {"tansu": "the embedded broker (Tansu)", "kafka": "Apache Kafka (one KRaft node)"}


def broker_choice(choice: str) -> str:
    """``tansu`` or ``kafka`` for a ``--broker`` value (``auto`` decided here)."""
    if choice == "auto":
        from ja4_dev.apache_kafka import available

        return "kafka" if available() else "tansu"
    if choice not in BROKER_NAMES:
        raise ValueError(f"--broker: must be one of tansu, kafka, auto, got {choice!r}")
    return choice


#: Share of the live run before the campaign starts, and before the analysts label it.
CAMPAIGN_AT = 0.25
RETRAIN_AT = 0.5
#: False-alert rate on humans at which each version's recall is compared before and after
#: the retrain ("recall at the same alert rate"): the threshold is that quantile of the
#: version's own scores of human records.
ALERT_RATE = 0.05
ALERT_LEVELS = {"MEDIUM", "HIGH", "CRITICAL"}
#: Share of unlabelled live rows written to the feature table before the retrain.
LIVE_SAMPLE = 0.2


# --- child processes -------------------------------------------------------------------

#: A product process started by the demo (a replica, the sink, a trainer step).
Child = ProductProcess


def _get_json(url: str) -> dict[str, Any] | None:
    try:
        with urllib.request.urlopen(url, timeout=1.5) as resp:
            return json.loads(resp.read())
    except Exception:
        return None


def _metric_sum(url: str, name: str) -> float:
    try:
        with urllib.request.urlopen(url + "/metrics", timeout=1.5) as resp:
            text = resp.read().decode()
    except Exception:
        return 0.0
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith(name + "{") or line.startswith(name + " "))


# --- chdb tasks (run in a child process: chdb is one process per directory) -------------

def _chdb_task(dsn: str, task: str, payload: str) -> None:
    from ja4_core.clickhouse_io import connect

    ch = connect(dsn)
    ch.init_db()
    out: Any = None
    if task == "load":
        files = json.loads(payload)
        rows = [orjson.loads(line) for line in open(files["features"], "rb") if line.strip()]
        for i in range(0, len(rows), 20000):
            ch.insert_features(rows[i:i + 20000])
        labels = [orjson.loads(line) for line in open(files["labels"], "rb") if line.strip()]
        ch.insert_labels(labels, source="demo-analyst")
        out = {"features": len(rows), "labels": len(labels)}
    elif task == "count_history":
        out = ch.client.query(
            "SELECT count() FROM ja4.view_ai_features_1h WHERE window_start >= now() - toIntervalDay(7)").result_rows[0][0]
    elif task == "count_scores":
        out = ch.client.query(
            "SELECT count(), uniqExact(window_start, src_ip, ja4, host) FROM ja4.ml_all_scores FINAL "
            "WHERE scored_at >= fromUnixTimestamp64Milli({t:Int64}, 'UTC')",
            parameters={"t": int(float(payload) * 1000)}).result_rows[0]
    print("CHDB_RESULT " + json.dumps(out, default=str), flush=True)


def run_chdb_task(dsn: str, task: str, payload: str, log_path: Path) -> Any:
    code = "import sys; from ja4_dev.demo import _chdb_task; _chdb_task(*sys.argv[1:4])"
    out = subprocess.run([sys.executable, "-c", code, dsn, task, payload], capture_output=True, text=True)
    with open(log_path, "a") as fh:
        fh.write(out.stdout + out.stderr)
    if out.returncode != 0:
        raise RuntimeError(f"chdb task {task} failed: {out.stderr[-2000:]}")
    line = [ln for ln in out.stdout.splitlines() if ln.startswith("CHDB_RESULT ")][-1]
    return json.loads(line.split(" ", 1)[1])


# --- traffic and scores ----------------------------------------------------------------

@dataclass
class Truth:
    label: str
    kind: str
    campaign: bool
    shifted: bool = False  #: sent after the traffic moved (ja4_dev.demo_drift): not in the quality figures


class Traffic(threading.Thread):
    """Produces live simulated records at a fixed rate; remembers the ground truth."""

    #: The live run replays the last day: each simulated hourly window lasts duration/24 s,
    #: so records keep distinct (window, src_ip, ja4, host) keys as real hourly rows would.
    SIM_HOURS = 24

    def __init__(self, bootstrap: str, topic: str, rate: float, seed: int, duration: float) -> None:
        super().__init__(daemon=True, name="traffic")
        now = time.time()
        self.base_window = (int(now) // 3600 - self.SIM_HOURS) * 3600
        self.seconds_per_window = max(duration, 1.0) / self.SIM_HOURS
        from confluent_kafka import Producer

        from ja4_dev.simulator import TrafficSimulator

        self.producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
        self.topic = topic
        self.rate = rate
        self.sim = TrafficSimulator(seed=seed, bot_share=0.10)
        self.campaign_share = 0.0
        #: Set by the demo's last act: every record from then on as the moved traffic looks.
        self.shift: Callable[[dict[str, Any]], dict[str, Any]] | None = None
        self.truth: dict[tuple, Truth] = {}
        self.sent_records: list[dict[str, Any]] = []
        self.stop_event = threading.Event()
        self.sent = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            start = time.monotonic()
            chunk = max(1, int(self.rate / 20))
            while not self.stop_event.is_set():
                n_campaign = int(round(chunk * self.campaign_share))
                # Not capped: a run that outlasts its duration (a slow retrain) moves on to
                # the next hours rather than exhausting the keys of the last window.
                hour = int((time.monotonic() - start) / self.seconds_per_window)
                window = float(self.base_window + hour * 3600)
                recs = self.sim.records(chunk - n_campaign, start=window)
                if n_campaign:
                    recs += self.sim.campaign(n_campaign, start=window)
                first_campaign = len(recs) - n_campaign
                shift = self.shift
                if shift is not None:
                    recs = [shift(r) for r in recs]
                for i, rec in enumerate(recs):
                    key = (str(rec["window_start"]), rec["src_ip"], rec["ja4"], rec["host"])
                    if key in self.truth:  # one record per (window, src_ip, ja4, host)
                        continue
                    label, kind = rec.pop("label"), rec.pop("bot_kind")
                    self.truth[key] = Truth(label, kind, i >= first_campaign, shift is not None)
                    self.sent_records.append(rec)
                    self.producer.produce(self.topic, orjson.dumps(rec), rec["src_ip"].encode())
                    self.sent += 1
                self.producer.poll(0)
                ahead = self.sent / self.rate - (time.monotonic() - start)
                if ahead > 0:
                    time.sleep(ahead)
        except BaseException as exc:  # surfaced by the main thread
            self.error = exc
        finally:
            self.producer.flush(30)


@dataclass
class Scored:
    version: str
    score: float
    level: str


class ScoreReader(threading.Thread):
    """Reads the scores topic; keeps the latest score per record and live counters."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        super().__init__(daemon=True, name="scores")
        from confluent_kafka import Consumer, TopicPartition

        self.consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"demo-reader-{os.getpid()}",
                                  "auto.offset.reset": "earliest", "enable.auto.commit": False})
        # Assigned, not subscribed: no group join to wait for, every partition from the start.
        meta = self.consumer.list_topics(topic, timeout=30).topics[topic]
        self.consumer.assign([TopicPartition(topic, p, -2) for p in meta.partitions])
        self.scores: dict[tuple, list[Scored]] = defaultdict(list)
        self.levels: Counter[str] = Counter()
        self.flagged_ip: Counter[str] = Counter()
        self.flagged_ja4: Counter[str] = Counter()
        self.received = 0
        self.stop_event = threading.Event()
        self.first_at: float | None = None
        self.last_at: float | None = None

    def run(self) -> None:
        while not self.stop_event.is_set():
            for msg in self.consumer.consume(2000, 0.2):
                if msg.error() is not None:
                    continue
                doc = orjson.loads(msg.value() or b"null")
                key = (str(doc["window_start"]), doc["src_ip"], doc["ja4"], doc["host"])
                self.scores[key].append(Scored(doc["model_version"], doc["anomaly_score"], doc["threat_level"]))
                self.levels[doc["threat_level"]] += 1
                if doc["threat_level"] in ALERT_LEVELS:
                    self.flagged_ip[doc["src_ip"]] += 1
                    self.flagged_ja4[doc["ja4"]] += 1
                self.received += 1
                now = time.monotonic()
                self.first_at = self.first_at or now
                self.last_at = now
        self.consumer.close()

    def end_offsets(self) -> int:
        """Messages in the topic now (the sum of its partitions' high watermarks)."""
        from confluent_kafka import TopicPartition

        return sum(self.consumer.get_watermark_offsets(TopicPartition(tp.topic, tp.partition), timeout=10)[1]
                   for tp in self.consumer.assignment())


def read_again(bootstrap: str, topic: str, timeout_s: float = 60.0) -> ScoreReader:
    """The scores topic read once more from its start, up to the end offsets it had then (or
    ``timeout_s``). The summary counts what the topic holds, not what the live reader happened to
    see: on the embedded Tansu the live reader once missed one score record that the sink had
    stored (CI, 9,586 of 9,587; ClickHouse held all 9,587)."""
    again = ScoreReader(bootstrap, topic)
    ends = again.end_offsets()
    again.start()
    deadline = time.monotonic() + timeout_s
    while again.received < ends and time.monotonic() < deadline:
        time.sleep(0.2)
    again.stop_event.set()
    again.join(15)
    return again


# --- evaluation (pure) -----------------------------------------------------------------

def _roc_auc(pos: np.ndarray, neg: np.ndarray) -> float | None:
    if not len(pos) or not len(neg):
        return None
    from sklearn.metrics import roc_auc_score

    y = np.r_[np.ones(len(pos)), np.zeros(len(neg))]
    return float(roc_auc_score(y, np.r_[pos, neg]))


def human_level_rates(levels: list[str]) -> dict[str, dict[str, float]]:
    """Share of live human windows at or above each threat level, next to the level's design
    rate (``LEVEL_QUANTILES``: LOW/MEDIUM/HIGH/CRITICAL = 10/3/1/0.1 % of humans).

    >>> human_level_rates(["NORMAL"] * 7 + ["LOW", "MEDIUM", "CRITICAL"])["MEDIUM"]
    {'live': 0.2, 'design': 0.03}
    """
    rank = {name: i for i, name in enumerate(SCORE_LEVELS)}
    ranks = np.array([rank.get(level, 0) for level in levels])
    return {level: {"live": round(float((ranks >= rank[level]).mean()) if len(ranks) else 0.0, 6),
                    "design": round(1 - q, 6)} for level, q in LEVEL_QUANTILES.items()}


def human_score_rates(scores: np.ndarray, thresholds: dict[str, float]) -> dict[str, dict[str, float]]:
    """Share of live human windows whose combined score is at or above each level's threshold
    (the scorer's rule), next to the design rate. From the score, not the level: a browser
    whose score reaches LOW is shown as ``LEGITIMATE_BROWSER`` (the contract), so counting
    levels under-counts LOW (the first 60 s demo showed 4.7 % for about 10 %).

    >>> human_score_rates(np.arange(1000) / 1000, {"LOW": 0.9, "MEDIUM": 0.97, "HIGH": 0.99, "CRITICAL": 0.999})["HIGH"]
    {'live': 0.01, 'design': 0.01}
    """
    s = np.asarray(scores, dtype=np.float64)
    return {level: {"live": round(float((s >= thresholds[level]).mean()) if len(s) else 0.0, 6),
                    "design": round(1 - q, 6)} for level, q in LEVEL_QUANTILES.items() if level in thresholds}


def evaluate(truth: dict[tuple, Truth], scores: dict[tuple, list[Scored]], version: str,
             thresholds: dict[str, float] | None = None) -> dict[str, Any]:
    """Detection quality of one model version on the records it scored; ``thresholds``: the
    version's (its manifest), for the live human rate per level from the scores."""
    rows = [(truth[k], s) for k, ss in scores.items() if k in truth and not truth[k].shifted
            for s in ss[-1:] if s.version == version]
    if not rows:
        return {"records": 0}
    score = np.array([s.score for _, s in rows])
    is_bot = np.array([t.label == "bot" for t, _ in rows])
    alert = np.array([s.level in ALERT_LEVELS or s.level == "KNOWN_BOT" for _, s in rows])
    kinds = np.array([("campaign" if t.campaign else t.kind) for t, _ in rows])
    humans_all = score[kinds == "human"]
    cut = float(np.quantile(humans_all, 1 - ALERT_RATE)) if len(humans_all) else float(np.quantile(score, 1 - ALERT_RATE))
    out: dict[str, Any] = {
        "records": len(rows), "bots": int(is_bot.sum()),
        "precision": float((alert & is_bot).sum() / max(alert.sum(), 1)),
        "recall": float((alert & is_bot).sum() / max(is_bot.sum(), 1)),
        "roc_auc": _roc_auc(score[is_bot], score[~is_bot]), "by_kind": {}}
    humans = score[kinds == "human"]
    out["human_level_rates"] = human_level_rates([s.level for t, s in rows if not t.campaign and t.kind == "human"])
    if thresholds:
        out["human_score_rates"] = human_score_rates(humans_all, thresholds)
    # the campaign's share at HIGH or above (with the analysts' labels learned it should be most)
    camp = np.array([s.level in ("HIGH", "CRITICAL") for t, s in rows if t.campaign])
    if len(camp):
        out["campaign_high_or_above"] = float(camp.mean())
    for kind in sorted(set(kinds.tolist()) - {"human"}):
        sel = kinds == kind
        out["by_kind"][kind] = {"records": int(sel.sum()), "recall": float(alert[sel].mean()),
                                f"recall_at_{int(ALERT_RATE * 100)}pct_human_alerts": float((score[sel] > cut).mean()),
                                "roc_auc": _roc_auc(score[sel], humans)}
    return out


# --- the demo --------------------------------------------------------------------------

@dataclass
class DemoState:
    step: str = "starting"
    versions: dict[str, str] = field(default_factory=dict)
    lag: int = 0
    notes: list[str] = field(default_factory=list)


class Demo:
    def __init__(self, settings: Settings, args: Any) -> None:
        self.settings = settings
        self.args = args
        self.var = Path(args.var).resolve()
        self.logs = self.var / "demo" / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.models = self.var / "models"
        self.dsn = settings.clickhouse_url if settings.clickhouse_url != "chdb://./var/clickhouse" \
            else f"chdb://{self.var / 'clickhouse'}"
        self.state = DemoState()
        # Every demo run is signed: a fresh key (unless the user set one) given to every process.
        self.signing_key = settings.control_signing_key or secrets.token_hex(32)
        self.children: list[Child] = []
        self.broker: Any = None  # a TansuBroker or a ja4_dev KafkaCluster: both have .bootstrap, .stop()
        self.say: Callable[[str], None] = print

    # -- environment of the product processes --
    def env(self, bootstrap: str) -> dict[str, str]:
        s = self.settings
        env = {"KAFKA_BOOTSTRAP_SERVERS": bootstrap, "MODEL_STORE": str(self.models), "CLICKHOUSE_URL": self.dsn,
               "TOPIC_PARTITIONS": str(max(4, self.args.replicas * 2)),
               "KAFKA_SESSION_TIMEOUT_S": "6", "KAFKA_HEARTBEAT_S": "1", "KAFKA_REBALANCE_TIMEOUT_S": "6",
               "SCORER_BATCH_WAIT_MS": str(s.scorer_batch_wait_ms), "SCORER_BATCH_MAX": str(s.scorer_batch_max),
               "SINK_BATCH_WAIT_MS": "500", "MODEL_NAME": s.model_name, "LOG_LEVEL": "info",
               "PYTHONUNBUFFERED": "1"}
        # Pass the user's own settings (e.g. EIF_NTREES=50 for a quick run) through.
        for key, value in os.environ.items():
            if key in ("EIF_NTREES", "EIF_SAMPLE_SIZE", "AE_EPOCHS", "XGB_MIN_LABELS", "VAL_ANOMALY_GATE",
                       "SCORER_THREADS", "CONTROL_SIGNING_KEY", "EIF_NDIM"):
                env[key] = value
        env["CONTROL_SIGNING_KEY"] = self.signing_key
        return env

    def _start_broker(self, kind: str) -> Any:
        if kind == "tansu":
            return TansuBroker(free_port(), self.logs / "broker.log").start()
        import shutil

        from ja4_dev.apache_kafka import KafkaCluster

        # A fresh node each run: its topics, like Tansu's in-memory ones, are not reused.
        workdir = self.var / "demo" / "kafka"
        shutil.rmtree(workdir, ignore_errors=True)
        cluster = KafkaCluster(1, workdir=workdir)
        self.broker = cluster  # stopped by run_demo even if the start fails half way
        cluster.start()
        self.say(f"      Apache Kafka {cluster.version} ready in {cluster.ready_seconds[-1]:.1f}s on "
                 f"{cluster.bootstrap} (logs under {workdir})")
        return cluster

    def trainer(self, env: dict[str, str], *argv: str, name: str) -> int:
        child = Child(name, python_module("trainer.cli", *argv), env, self.logs / f"{name}.log")
        rc = child.run()
        if rc != 0:
            raise RuntimeError(f"`stream-trainer {' '.join(argv)}` failed with {rc}: see {child.log_path}")
        return rc

    def run(self) -> dict[str, Any]:
        args = self.args
        started_at = time.time()
        choice = getattr(args, "broker", "auto")
        kind = broker_choice(choice)
        self.say(f"[1/6] starting {BROKER_NAMES[kind]}; ClickHouse and models under {self.var}")
        from ja4_dev.apache_kafka import KafkaHarnessError

        try:
            self.broker = self._start_broker(kind)
        except KafkaHarnessError as exc:
            if choice != "auto":
                raise
            self.say(f"      Apache Kafka did not start ({type(exc).__name__}); using {BROKER_NAMES['tansu']}")
            self.broker = self._start_broker("tansu")
        bootstrap = self.broker.bootstrap
        env = self.env(bootstrap)
        self.say("[2/6] loading a week of simulated, labelled history and training the first version")
        self.trainer(env, "init-db", name="init-db")
        have = int(run_chdb_task(self.dsn, "count_history", "", self.logs / "chdb.log"))
        if have >= 7 * 24 * args.history_rate // 2:
            self.say(f"      {have} rows of the last 7 days already in ClickHouse: reusing them")
        else:
            self.trainer(env, "load", "--simulate", "--days", "7", "--rate", str(args.history_rate), "--bot-share",
                         "0.1", "--label-share", "0.05", name="load-history")
        # Trains unless ./var already holds a recent version (then the trainer reuses it).
        self.trainer(env, "run-once", name="train-first")
        first = self._current()
        self.say(f"      first version {first}")

        self.say(f"[3/6] starting {args.replicas} scorer replicas and the sink; streaming live traffic")
        replicas = []
        for i in range(args.replicas):
            port = free_port()
            child = Child(f"scorer-{i + 1}", python_module("stream_scorer.cli", "worker"),
                          {**env, "SCORER_WEB_PORT": str(port), **REPLICA_DRIFT_ENV},
                          self.logs / f"scorer-{i + 1}.log").start()
            child.url = f"http://127.0.0.1:{port}"  # type: ignore[attr-defined]
            replicas.append(child)
            self.children.append(child)
        sink_port = free_port()
        sink_env = {**env, "SINK_WEB_PORT": str(sink_port)}
        sink = self._start_sink(sink_env)
        console_url = self._start_console(sink_env)
        self._wait_ready(replicas)
        reader = ScoreReader(bootstrap, self.settings.topic_scores)
        reader.start()
        traffic = Traffic(bootstrap, self.settings.topic_features, args.rate, seed=int(time.time()) % 100000,
                          duration=args.duration)
        traffic.start()
        live_start = time.monotonic()
        retrained: str | None = None
        retrain: _Background | None = None
        drift_act: DriftPhase | None = None  # the traffic moves at the end (ja4_dev.demo_drift)
        reload_at: float | None = None
        view = self._view(replicas, reader, traffic)
        try:
            with view:
                while True:
                    elapsed = time.monotonic() - live_start
                    if traffic.error:
                        raise traffic.error
                    if elapsed >= CAMPAIGN_AT * args.duration and traffic.campaign_share == 0.0:
                        traffic.campaign_share = 0.3
                        self.state.step = "bot campaign impersonating a browser JA4 under way"
                        self.say("[3/6] a bot campaign impersonating a browser fingerprint starts")
                    if elapsed >= RETRAIN_AT * args.duration and retrain is None:
                        self.state.step = "analysts label part of the campaign; retraining"
                        self.say("[4/6] analysts label part of the campaign; the trainer runs while traffic flows")
                        sink.stop()
                        retrain = _Background(lambda: self._retrain(traffic, env, sink_env, replicas))
                    if retrain is not None and retrained is None and retrain.done():
                        retrained = retrain.result()
                        sink = self._start_sink(sink_env)
                        self.say(f"      new version {retrained}; waiting for every replica to hot-reload it")
                    if retrained and reload_at is None and all(v == retrained for v in self._versions(replicas).values()):
                        reload_at = time.monotonic()
                        self.state.step = f"all replicas serve {retrained}"
                        self.say(f"[4/6] every replica switched to {retrained} without a restart")
                    view.refresh()
                    done = elapsed >= args.duration and retrained is not None and reload_at is not None \
                        and time.monotonic() - reload_at >= min(10.0, args.duration / 4)
                    if done and args.duration >= DRIFT_MIN_DURATION_S:  # then the traffic moves
                        if drift_act is None:
                            sink.stop()  # the trainer loop takes the embedded ClickHouse meanwhile
                            drift_act = self._drift_act(replicas, traffic, retrained, env)  # type: ignore[arg-type]
                        done = drift_act.step()
                        if done:
                            drift_act.loop.stop()
                            sink = self._start_sink(sink_env)
                    if done:
                        break
                    time.sleep(0.5)
            self.say("[5/6] stopping traffic and waiting until every record is scored")
            traffic.stop_event.set()
            traffic.join(60)
            deadline = time.monotonic() + 120
            seen, progress_at = -1, time.monotonic()
            while time.monotonic() < deadline and not set(traffic.truth) <= set(reader.scores):
                if reader.received != seen:
                    seen, progress_at = reader.received, time.monotonic()
                elif time.monotonic() - progress_at > 20:  # nothing new for 20 s: read the topic again
                    break
                time.sleep(0.5)
            missing = set(traffic.truth) - set(reader.scores)
            read_again_n = 0  # scores only the second reading saw (the summary says how many)
            if missing:
                self.say(f"      the live reader lacks {len(missing)} score(s); reading the scores topic again")
                reader.stop_event.set()
                reader.join(10)
                again = read_again(bootstrap, self.settings.topic_scores).scores
                found = missing & again.keys()
                for key in found:
                    reader.scores[key] = again[key]
                    reader.received += len(again[key])
                read_again_n = len(found)
            served = {r.name: _metric_sum(r.url, "ja4_records_scored_total") for r in replicas}  # type: ignore[attr-defined]
            versions = self._versions(replicas)
            self._wait_sink_idle(sink_port)
        finally:
            reader.stop_event.set()
            traffic.stop_event.set()
            for child in self.children:  # SIGTERM all first: they shut down in parallel
                child.signal()
            for child in self.children:
                child.stop()
        counted = run_chdb_task(self.dsn, "count_scores", str(started_at), self.logs / "chdb.log")
        scored_keys = set(reader.scores) & set(traffic.truth)
        live_s = (reader.last_at or time.monotonic()) - (reader.first_at or live_start)
        summary = {
            "records_sent": traffic.sent, "records_scored": len(scored_keys),
            "score_messages": reader.received, "duplicates": reader.received - len(set(reader.scores)),
            "scores_read_again": read_again_n,
            "throughput_records_per_s": round(reader.received / max(live_s, 1e-9), 1),
            "replicas_served": served, "replica_versions": versions,
            "first_version": first, "retrained_version": retrained,
            "ml_all_scores_rows": counted[0], "ml_all_scores_distinct_records": counted[1],
            "levels": dict(reader.levels),
            "before": evaluate(traffic.truth, reader.scores, first, self._thresholds(first)),
            "after": evaluate(traffic.truth, reader.scores, retrained, self._thresholds(retrained)) if retrained else None,
            "level_tail": {v: self._level_tail(v) for v in (first, retrained) if v},
            "reports": [str(p) for p in sorted((self.models / self.settings.model_name / "reports").glob("*/report.html"))][-2:],
            "logs": str(self.logs), "console": console_url,
            "drift_act": drift_act.summary if drift_act is not None else None,
            "challenger_act": getattr(self, "challenger_act", None),
        }
        (self.var / "demo" / "summary.json").write_text(json.dumps(summary, indent=1, default=str))
        self._print_summary(summary)
        return summary

    # -- helpers --
    def _start_sink(self, env: dict[str, str]) -> Child:
        sink = Child("sink", python_module("stream_scorer.cli", "sink"), env, self.logs / "sink.log").start()
        self.children.append(sink)
        return sink

    def _start_console(self, env: dict[str, str]) -> str:
        """``stream-scorer console`` on loopback (the configured port when free); it reads the
        scores through the sink (the embedded ClickHouse) and its labels go to ``TOPIC_LABELS``."""
        import socket

        port = self.settings.console_port
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:  # taken: any free one
                port = free_port()
        url = f"http://127.0.0.1:{port}/"
        console_env = {**env, "CONSOLE_HOST": "127.0.0.1", "CONSOLE_PORT": str(port)}
        self.children.append(Child("console", python_module("stream_scorer.cli", "console"), console_env,
                                   self.logs / "console.log").start())
        self.say(f"      review console: {url} (labels clicked there reach soc_labels and the retrain)")
        return url

    def _current(self) -> str:
        from ja4_core.bundle import ModelStore

        version = ModelStore(self.models).current(self.settings.model_name)
        if version is None:
            raise RuntimeError(f"the trainer produced no current version: see {self.logs}")
        return version

    def _thresholds(self, version: str) -> dict[str, float] | None:
        """A version's threat thresholds from its manifest (None when it cannot be read)."""
        from ja4_core.bundle import ModelStore, read_manifest
        from ja4_core.errors import BundleError

        try:
            manifest, _ = read_manifest(ModelStore(self.models).bundle_dir(self.settings.model_name, version))
        except (BundleError, OSError, ValueError):
            return None
        return {k: float(v) for k, v in (manifest.get("thresholds") or {}).items()}

    def _level_tail(self, version: str) -> dict[str, Any]:
        """What each of a version's levels rests on (the manifest's ``combination.level_tail``)."""
        from ja4_core.bundle import ModelStore, read_manifest
        from ja4_core.errors import BundleError

        try:
            manifest, _ = read_manifest(ModelStore(self.models).bundle_dir(self.settings.model_name, version))
        except (BundleError, OSError, ValueError):
            return {}
        return dict((manifest.get("combination") or {}).get("level_tail") or {})

    def _versions(self, replicas: list[Child]) -> dict[str, str]:
        out = {}
        for r in replicas:
            info = _get_json(r.url + "/model")  # type: ignore[attr-defined]
            out[r.name] = ((info or {}).get("active") or {}).get("model_version") or "-"
        self.state.versions = out
        return out

    def _wait_ready(self, replicas: list[Child], timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        for r in replicas:
            try:
                r.wait_http(r.url + "/health", lambda status, body: bool(body.get("ready")),  # type: ignore[attr-defined]
                            max(0.0, deadline - time.monotonic()), interval=0.5)
            except ProcessExited:
                raise RuntimeError(f"{r.name} exited: see {r.log_path}") from None
            except ProbeTimeout:
                raise RuntimeError(f"replicas not ready within {timeout}s: see {self.logs}") from None

    def _wait_sink_idle(self, port: int, quiet_s: float = 3.0, timeout: float = 60.0) -> None:
        last, since = -1, time.monotonic()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            info = _get_json(f"http://127.0.0.1:{port}/health") or {}
            n = info.get("inserted", -1)
            if n != last:
                last, since = n, time.monotonic()
            elif n >= 0 and time.monotonic() - since >= quiet_s:
                return
            time.sleep(0.5)

    def _retrain(self, traffic: Traffic, env: dict[str, str], sink_env: dict[str, str] | None = None,
                 replicas: list[Child] | None = None) -> str:
        """Labels in, trainer run; in a thread so the live view keeps updating. The retrain is
        a challenger (``PROMOTION_POLICY=shadow``): it shadows, then the judge promotes or
        retires it on the analysts' labels (:mod:`ja4_dev.demo_shadow`); returns the version
        the replicas serve afterwards."""
        from ja4_dev.demo_shadow import run_shadow_act

        self._feed_labels(traffic, env)
        champion = self._current()
        self.trainer({**env, "RETRAIN_INTERVAL_H": "0", "XGB_RETRAIN_INTERVAL_H": "0", "PROMOTION_POLICY": "shadow"},
                     "run-once", "--force", name="retrain")
        if self._current() != champion or sink_env is None or replicas is None:
            return self._current()  # activated directly (no champion before it)
        urls = [r.url for r in replicas]  # type: ignore[attr-defined]
        self.challenger_act = act = run_shadow_act(self, traffic, env, sink_env, urls, _get_json, run_chdb_task)
        self.say(f"      verdict: {act.get('decision', '?')} - challenger ROC AUC {act.get('challenger_roc_auc', 0):.3f}"
                 f" vs champion {act.get('champion_roc_auc', 0):.3f}, recall {act.get('challenger_recall', 0):.3f} vs "
                 f"{act.get('champion_recall', 0):.3f} at the champion's human false-alert rate, on "
                 f"{act.get('bot_labels', 0):.0f} bots and {act.get('human_labels', 0):.0f} humans")
        return self._current()

    def _drift_act(self, replicas: list[Child], traffic: Traffic, served: str, env: dict[str, str]) -> DriftPhase:
        """The traffic moves and the trainer loop retrains on a replica's request (issue 19)."""
        log = self.logs / "trainer-loop.log"

        def start_loop() -> Child:
            loop_env = {**env, "TRAINER_CHECK_INTERVAL_S": "3600", "DRIFT_REQUEST_COOLDOWN_S": "600",
                        "PROMOTION_POLICY": "direct"}
            child = Child("trainer-loop", python_module("trainer.cli", "loop"), loop_env, log).start()
            self.children.append(child)
            return child

        def loop_runs() -> int:
            return log.read_text(errors="replace").count("run: decision=") if log.exists() else 0

        return DriftPhase(replicas=replicas, traffic=traffic, served=served, say=self.say, start_loop=start_loop,
                          loop_runs=loop_runs, current=self._current, versions=lambda: self._versions(replicas))

    def _feed_labels(self, traffic: Traffic, env: dict[str, str]) -> None:
        """What the web platform and the analysts would have written by now: the live
        feature rows, and analyst labels for part of the campaign (and some humans)."""
        rng = np.random.default_rng(1)
        records = list(traffic.sent_records)
        feats_path = self.var / "demo" / "live_features.ndjson"
        labels_path = self.var / "demo" / "live_labels.ndjson"
        labels = []
        # The live run compresses a day into minutes, far denser than the history: the
        # feature table gets every labelled row and a sample of the rest (LIVE_SAMPLE).
        with open(feats_path, "wb") as fh:
            for rec in records:
                key = (str(rec["window_start"]), rec["src_ip"], rec["ja4"], rec["host"])
                t = traffic.truth[key]
                labelled = (t.campaign and rng.random() < 0.3) or (t.label == "human" and rng.random() < 0.02)
                if labelled:
                    labels.append(analyst_label({**rec, "label": t.label, "bot_kind": t.kind}, "demo-analyst"))
                if labelled or rng.random() < LIVE_SAMPLE:
                    fh.write(orjson.dumps(rec) + b"\n")
        with open(labels_path, "wb") as fh:
            for lab in labels:
                fh.write(orjson.dumps(lab) + b"\n")
        loaded = run_chdb_task(self.dsn, "load", json.dumps({"features": str(feats_path), "labels": str(labels_path)}),
                               self.logs / "chdb.log")
        self.say(f"      loaded {loaded['features']} live feature rows and {loaded['labels']} analyst labels")

    def _lag(self) -> int:
        return 0

    def _view(self, replicas: list[Child], reader: ScoreReader, traffic: Traffic) -> Any:
        live = not self.args.no_live and sys.stdout.isatty()
        return LiveView(self, replicas, reader, traffic, enabled=live)

    def _print_summary(self, s: dict[str, Any]) -> None:
        p = self.say
        p("[6/6] summary")
        p(f"  records sent {s['records_sent']}, scored {s['records_scored']} "
          f"(score messages {s['score_messages']}, duplicates {s['duplicates']}), "
          f"{s['throughput_records_per_s']} records/s")
        p("  replicas: " + ", ".join(f"{k} scored {int(v)} on {s['replica_versions'].get(k)}" for k, v in s["replicas_served"].items()))
        p(f"  ml_all_scores: {s['ml_all_scores_rows']} rows, {s['ml_all_scores_distinct_records']} distinct records")
        for label, version in (("before", s["first_version"]), ("after", s["retrained_version"])):
            ev = s.get(label) or {}
            if not ev.get("records"):
                continue
            auc = ev.get("roc_auc")
            p(f"  {label} retrain ({version}): {ev['records']} records, precision {ev['precision']:.3f}, "
              f"recall {ev['recall']:.3f}, ROC AUC {auc:.3f}" if auc is not None else f"  {label}: {ev['records']} records")
            rates = ev.get("human_score_rates") or ev.get("human_level_rates") or {}
            if rates:
                p("      live humans scored at or above each level (design rate): "
                  + ", ".join(f"{lv} {r['live'] * 100:.2f} % ({r['design'] * 100:g} %)" for lv, r in rates.items()))
            weak = [f"{lv} ({t['calibration_humans']})" for lv, t in (s.get("level_tail") or {}).get(version, {}).items()
                    if "calibration_humans" in t and not t.get("enough_humans", True)]
            if weak:  # the live rate of such a level is uncertain (trainer.fit.tail_evidence)
                p("      labelled humans calibrating the tail (fewer than 10: that level's live rate is uncertain): "
                  + ", ".join(weak))
            if ev.get("campaign_high_or_above") is not None:
                p(f"      campaign at HIGH or above: {ev['campaign_high_or_above'] * 100:.1f} %")
            for kind, k in ev["by_kind"].items():
                kauc = k.get("roc_auc")
                p(f"      {kind:<22} n={k['records']:<6} recall {k['recall']:.3f}  "
                  f"recall@{int(ALERT_RATE * 100)}% human alerts {k[f'recall_at_{int(ALERT_RATE * 100)}pct_human_alerts']:.3f}  "
                  f"ROC AUC {kauc:.3f}" if kauc is not None else f"      {kind}: n={k['records']}")
        for report in s["reports"]:
            p(f"  training report: {report}")
        act = s.get("challenger_act")
        if act and act.get("decision"):  # champion and challenger on the same shadow-scored, labelled records
            p(f"  challenger {act['challenger']} vs champion {act['champion']} on the same {act.get('bot_labels', 0):.0f}"
              f" labelled bots and {act.get('human_labels', 0):.0f} humans: ROC AUC {act.get('challenger_roc_auc', 0):.3f}"
              f" vs {act.get('champion_roc_auc', 0):.3f}, recall at the champion's human false-alert rate "
              f"{act.get('challenger_recall', 0):.3f} vs {act.get('champion_recall', 0):.3f}: {act['decision']}")
        p(f"  logs: {s['logs']}; summary: {self.var / 'demo' / 'summary.json'}")


class _Background:
    """Runs one step in a thread; ``result()`` re-raises its error in the caller."""

    def __init__(self, fn: Callable[[], Any]) -> None:
        self._result: Any = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(fn,), daemon=True)
        self._thread.start()

    def _run(self, fn: Callable[[], Any]) -> None:
        try:
            self._result = fn()
        except BaseException as exc:  # surfaced by result()
            self._error = exc

    def done(self) -> bool:
        return not self._thread.is_alive()

    def result(self) -> Any:
        self._thread.join()
        if self._error is not None:
            raise self._error
        return self._result


class LiveView:
    """A rich live table, or a progress line every few seconds when not on a terminal."""

    def __init__(self, demo: Demo, replicas: list[Child], reader: ScoreReader, traffic: Traffic, enabled: bool) -> None:
        self.demo, self.replicas, self.reader, self.traffic, self.enabled = demo, replicas, reader, traffic, enabled
        self.live: Any = None
        self.last_line = 0.0
        self.last_count = (time.monotonic(), 0)
        self.rate = 0.0

    def __enter__(self) -> "LiveView":
        if self.enabled:
            from rich.live import Live

            self.live = Live(self._render(), refresh_per_second=2, transient=False)
            self.live.__enter__()
            self.demo.say = lambda msg: self.live.console.print(msg)
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.live is not None:
            self.live.__exit__(*exc)
            self.demo.say = print

    def _update_rate(self) -> None:
        now, n = time.monotonic(), self.reader.received
        t0, n0 = self.last_count
        if now - t0 >= 1.0:
            self.rate = (n - n0) / (now - t0)
            self.last_count = (now, n)

    def _render(self) -> Any:
        from rich.table import Table

        r = self.reader
        versions = self.demo._versions(self.replicas)
        table = Table(title=f"ja4-stream demo: {self.demo.state.step}", show_header=False)
        table.add_row("records sent / scored", f"{self.traffic.sent} / {r.received}")
        table.add_row("scores/s", f"{self.rate:.0f}")
        table.add_row("lag (sent - scored)", str(max(0, self.traffic.sent - len(r.scores))))
        table.add_row("threat levels", ", ".join(f"{k} {v}" for k, v in r.levels.most_common()))
        table.add_row("top flagged src_ip", ", ".join(f"{k} ({v})" for k, v in r.flagged_ip.most_common(3)))
        table.add_row("top flagged JA4", ", ".join(f"{k} ({v})" for k, v in r.flagged_ja4.most_common(2)))
        for name, version in versions.items():
            table.add_row(name, version)
        table.add_row("live drift (share of features)", drift_line(self.replicas))
        return table

    def refresh(self) -> None:
        self._update_rate()
        if self.live is not None:
            self.live.update(self._render())
            return
        if time.monotonic() - self.last_line >= 5.0:
            self.last_line = time.monotonic()
            r = self.reader
            versions = self.demo._versions(self.replicas)
            print(f"  sent {self.traffic.sent} scored {r.received} ({self.rate:.0f}/s) lag "
                  f"{max(0, self.traffic.sent - len(r.scores))} | "
                  + " ".join(f"{k}={v}" for k, v in r.levels.most_common(4))
                  + " | " + " ".join(f"{k}:{v[-4:]}" for k, v in versions.items())
                  + " | drift " + drift_line(self.replicas), flush=True)


def run_demo(settings: Settings, args: Any) -> int:
    """Entry point of ``stream-scorer demo``; Ctrl-C stops every process it started."""
    from ja4_dev.apache_kafka import KafkaHarnessError

    demo = Demo(settings, args)
    try:
        demo.run()
        return 0
    except KafkaHarnessError as exc:
        print(f"stream-scorer demo: Apache Kafka: {exc}", file=sys.stderr, flush=True)
        return 1
    except KeyboardInterrupt:
        print("interrupted: stopping every process the demo started", flush=True)
        return 130
    finally:
        for child in demo.children:
            child.stop()
        if demo.broker is not None:
            demo.broker.stop()
