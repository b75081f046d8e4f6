"""Settings: one frozen object per process, read from the environment and CLI flags.

Every setting is declared once below with its default, its environment variable, its CLI
flag and a constraint. :func:`load_settings` is the only place that reads ``os.environ``;
a bad value raises :class:`~ja4_core.errors.ConfigError` whose one-line message names
the setting and the problem, so a worker with a bad configuration stops at start.
"""

from __future__ import annotations

import argparse
import os
import re
from dataclasses import dataclass, field, fields
from typing import Any, Callable, Mapping
from urllib.parse import urlparse

from ja4_core.errors import ConfigError
from ja4_core.logs import MASK, mask_url, url_secrets

_TOPIC_RE = re.compile(r"^[A-Za-z0-9._-]{1,249}$")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_IDENT_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")


# --- constraints: each returns the parsed value or raises ValueError(reason) -----------

def _int_in(lo: int, hi: int) -> Callable[[str], int]:
    def parse(raw: str) -> int:
        try:
            value = int(raw)
        except ValueError:
            raise ValueError(f"must be an integer, got {raw!r}") from None
        if not lo <= value <= hi:
            raise ValueError(f"must be between {lo} and {hi}, got {value}")
        return value
    return parse


def _float_in(lo: float, hi: float) -> Callable[[str], float]:
    def parse(raw: str) -> float:
        try:
            value = float(raw)
        except ValueError:
            raise ValueError(f"must be a number, got {raw!r}") from None
        if not lo <= value <= hi:  # also refuses NaN
            raise ValueError(f"must be between {lo} and {hi}, got {raw}")
        return value
    return parse


def _matching(regex: re.Pattern[str], what: str) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        if not regex.fullmatch(raw):
            raise ValueError(f"must be {what}, got {raw!r}")
        return raw
    return parse


def _choice(*allowed: str) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        value = raw.strip().lower()
        if value not in allowed:
            raise ValueError(f"must be one of {', '.join(allowed)}, got {raw!r}")
        return value
    return parse


def _upper_choice(*allowed: str) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        value = raw.strip().upper()
        if value not in allowed:
            raise ValueError(f"must be one of {', '.join(allowed)}, got {raw!r}")
        return value
    return parse


def _bootstrap(raw: str) -> str:
    servers = [s.strip() for s in raw.split(",") if s.strip()]
    if not servers:
        raise ValueError("must name at least one host:port")
    for server in servers:
        host, _, port = server.rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"must be comma-separated host:port pairs, got {server!r}")
    return ",".join(servers)


def _clickhouse_dsn(raw: str) -> str:
    scheme = urlparse(raw).scheme
    if scheme not in {"chdb", "http", "https", "clickhouse", "clickhouses"}:
        raise ValueError(f"must be a chdb://PATH or http(s)://host:port/db DSN, got scheme {scheme!r}")
    return raw


def _model_store(raw: str) -> str:
    if not raw.strip():
        raise ValueError("must be a directory path or file:// URL")
    scheme = urlparse(raw).scheme
    if scheme not in {"", "file"}:
        raise ValueError(f"must be a local path or file:// URL, got scheme {scheme!r}")
    return raw


def _features(raw: str) -> tuple[str, ...]:
    names = tuple(n.strip() for n in raw.split(",") if n.strip())
    if not names:
        raise ValueError("must list at least one feature column")
    for name in names:
        if not _IDENT_RE.fullmatch(name):
            raise ValueError(f"feature names must be identifiers, got {name!r}")
    if len(set(names)) != len(names):
        raise ValueError("lists a feature twice")
    return names


def _sql_filter(raw: str) -> str:
    # The filter is operator configuration (trusted), but a statement separator or a
    # comment can only be a mistake or an attack: refuse them.
    if ";" in raw or "--" in raw or "/*" in raw:
        raise ValueError("must be a single SQL boolean expression without ';' or comments")
    return raw


def _sample_size(raw: str) -> str:
    if raw == "auto":
        return raw
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"must be 'auto' or an integer >= 16, got {raw!r}") from None
    if value < 16:
        raise ValueError(f"must be 'auto' or an integer >= 16, got {raw!r}")
    return raw


def _text(raw: str) -> str:
    return raw


def _console_host(raw: str) -> str:
    host = raw.strip()
    if not host or any(c.isspace() for c in host):
        raise ValueError(f"must be a host name or IP address, got {raw!r}")
    return host


def _console_token(raw: str) -> str:
    if len(raw) < 16 or any(c.isspace() for c in raw):
        raise ValueError("must be at least 16 characters without spaces")  # never echo the value
    return raw


#: The processes a setting can belong to: its CLI flag is offered (``--help``) only by the
#: commands of those processes (:func:`add_setting_flags`). Every setting is still read from
#: the environment by every process (:func:`load_settings`).
WORKER, SINK, TRAINER = "worker", "sink", "trainer"
ALL_PROCESSES: frozenset[str] = frozenset({WORKER, SINK, TRAINER})


def _setting(env: str, default: Any, parse: Callable[[str], Any], doc: str,
             secret: bool = False, *, processes: set[str] | frozenset[str]) -> Any:
    unknown = set(processes) - ALL_PROCESSES
    if unknown:  # a typo would hide the flag from every --help
        raise ValueError(f"{env}: unknown processes {sorted(unknown)}; allowed: {sorted(ALL_PROCESSES)}")
    return field(default=default, metadata={"env": env, "parse": parse, "doc": doc,
                                            "secret": secret, "processes": frozenset(processes)})


@dataclass(frozen=True)
class Settings:
    """Every setting of the scorer, the sink and the trainer (see the contract's table)."""

    kafka_bootstrap_servers: str = _setting(
        "KAFKA_BOOTSTRAP_SERVERS", "localhost:9092", _bootstrap, "Kafka bootstrap servers (comma separated)",
        processes=ALL_PROCESSES)
    scorer_app_id: str = _setting(
        "SCORER_APP_ID", "ja4-scorer", _matching(_NAME_RE, "a name of letters, digits, '.', '_', '-'"),
        "Faust app id = consumer group of the scorer replicas", processes={WORKER})
    topic_features: str = _setting("TOPIC_FEATURES", "ja4.features", _matching(_TOPIC_RE, "a Kafka topic name"), "input topic",
        processes={WORKER})
    topic_scores: str = _setting("TOPIC_SCORES", "ja4.scores", _matching(_TOPIC_RE, "a Kafka topic name"), "output topic",
        processes={WORKER, SINK})
    topic_dlq: str = _setting("TOPIC_DLQ", "ja4.features.dlq", _matching(_TOPIC_RE, "a Kafka topic name"), "dead-letter topic",
        processes={WORKER, SINK})
    topic_shadow_scores: str = _setting(
        "TOPIC_SHADOW_SCORES", "ja4.scores.shadow", _matching(_TOPIC_RE, "a Kafka topic name"),
        "the challenger's score records (same key as TOPIC_SCORES, header model-version)", processes={WORKER, SINK})
    topic_control: str = _setting("TOPIC_CONTROL", "ja4.models.control", _matching(_TOPIC_RE, "a Kafka topic name"), "model control topic",
        processes={WORKER, TRAINER})
    topic_partitions: int = _setting("TOPIC_PARTITIONS", 8, _int_in(1, 10_000), "partitions of topics the product creates",
        processes=ALL_PROCESSES)
    topic_replication_factor: int = _setting(
        "TOPIC_REPLICATION_FACTOR", 0, _int_in(0, 32_767),
        "replication factor of every topic the product creates (0 = the broker's default.replication.factor)",
        processes=ALL_PROCESSES)
    model_store: str = _setting("MODEL_STORE", "./var/models", _model_store, "directory of versioned model bundles",
        processes={WORKER, TRAINER})
    clickhouse_url: str = _setting("CLICKHOUSE_URL", "chdb://./var/clickhouse", _clickhouse_dsn, "clickhouse-connect DSN",
        processes={SINK, TRAINER})
    control_signing_key: str | None = _setting(
        "CONTROL_SIGNING_KEY", None, _text, "HMAC-SHA256 key for control messages", secret=True, processes={WORKER, TRAINER})
    control_signing_key_previous: str | None = _setting(
        "CONTROL_SIGNING_KEY_PREVIOUS", None, _text, "previous signing key, still accepted during rotation", secret=True,
        processes={WORKER, TRAINER})
    control_max_future_skew_s: float = _setting(
        "CONTROL_MAX_FUTURE_SKEW_S", 300.0, _float_in(0.0, 86_400.0),
        "control messages whose issued_at is further than this in the future are refused (s)", processes={WORKER, TRAINER})
    scorer_web_port: int = _setting("SCORER_WEB_PORT", 6066, _int_in(1, 65535), "worker web server port", processes={WORKER})
    scorer_web_host: str = _setting("SCORER_WEB_HOST", "127.0.0.1", _text, "worker web server bind address",
        processes={WORKER, SINK})
    scorer_batch_max: int = _setting("SCORER_BATCH_MAX", 1000, _int_in(1, 100_000), "messages per scoring batch",
        processes={WORKER})
    scorer_batch_max_bytes: int = _setting(
        "SCORER_BATCH_MAX_BYTES", 4 * 1024 * 1024, _int_in(1024, 1024**3),
        "max bytes of message values per scoring batch (bounds batches of large envelopes)", processes={WORKER})
    scorer_batch_wait_ms: int = _setting("SCORER_BATCH_WAIT_MS", 50, _int_in(1, 60_000), "max wait of a batch (ms)",
        processes={WORKER})
    scorer_max_envelope_records: int = _setting(
        "SCORER_MAX_ENVELOPE_RECORDS", 10_000, _int_in(1, 1_000_000),
        "most records in one envelope; a larger message goes to the DLQ once, whole", processes={WORKER})
    output_delivery_attempts: int = _setting(
        "OUTPUT_DELIVERY_ATTEMPTS", 5, _int_in(1, 1000),
        "attempts to deliver a batch's outputs (scores, DLQ, sink inserts) before the process exits non-zero",
        processes={WORKER, SINK})
    output_retry_backoff_s: float = _setting(
        "OUTPUT_RETRY_BACKOFF_S", 1.0, _float_in(0.01, 600.0),
        "first backoff between delivery attempts (doubles each attempt, at most 30 s)", processes={WORKER, SINK})
    scorer_threads: int = _setting("SCORER_THREADS", 1, _int_in(1, 256), "threads the models may use per worker",
        processes={WORKER})
    eif_evaluator: str = _setting(
        "EIF_EVALUATOR", "compiled", _choice("compiled", "isotree"),
        "how workers evaluate the EIF: 'compiled' (same forest and scores as isotree, ~4x faster; checked at load) or 'isotree'",
        processes={WORKER})
    ae_evaluator: str = _setting(
        "AE_EVALUATOR", "compiled", _choice("compiled", "torch"),
        "how workers evaluate the autoencoder: 'compiled' (same weights, one GIL-free call; within 1e-6 of torch, checked at load) or 'torch'",
        processes={WORKER})
    # Reasons in every score record (issue 18; see ja4_core/reasons.py).
    score_reasons: str = _setting(
        "SCORE_REASONS", "on", _choice("on", "off"),
        "on: each anomalous score record lists (at most 3) features that made it anomalous; off: reasons is []",
        processes={WORKER})
    score_reasons_min_level: str = _setting(
        "SCORE_REASONS_MIN_LEVEL", "LOW", _upper_choice("LOW", "MEDIUM", "HIGH", "CRITICAL"),
        "a record gets reasons when its combined score reaches this level's threshold (not LEGITIMATE_BROWSER)",
        processes={WORKER})
    model_history_count: int = _setting("MODEL_HISTORY_COUNT", 5, _int_in(1, 1000), "versions kept per model",
        processes={TRAINER})
    model_name: str = _setting("MODEL_NAME", "default", _matching(_NAME_RE, "a name of letters, digits, '.', '_', '-'"), "model name",
        processes={WORKER, TRAINER})
    features: tuple[str, ...] | None = _setting("FEATURES", None, _features, "feature columns the trainer may use",
        processes={TRAINER})
    # Unset (the default): the trainer decides the combination from evidence at every run
    # (trainer.combine); set: the original's fixed weight, used as is (0.30 / 0.20 in the original).
    ae_weight: float | None = _setting("AE_WEIGHT", None, _float_in(0.0, 1.0),
                                       "autoencoder weight in the anomaly score (unset: decided by the trainer from evidence)",
        processes={TRAINER})
    xgb_weight: float | None = _setting("XGB_WEIGHT", None, _float_in(0.0, 1.0),
                                        "supervised weight in the final score (unset: decided by the trainer from evidence)",
        processes={TRAINER})
    # Kafka group timing: short values make tests and demos rebalance in seconds.
    kafka_session_timeout_s: float = _setting("KAFKA_SESSION_TIMEOUT_S", 30.0, _float_in(1.0, 3600.0), "consumer group session timeout",
        processes={WORKER, SINK})
    kafka_heartbeat_s: float = _setting("KAFKA_HEARTBEAT_S", 3.0, _float_in(0.1, 600.0), "consumer group heartbeat interval",
        processes={WORKER, SINK})
    kafka_rebalance_timeout_s: float = _setting("KAFKA_REBALANCE_TIMEOUT_S", 60.0, _float_in(1.0, 3600.0), "consumer group rebalance timeout",
        processes={WORKER, SINK})
    kafka_fetch_max_wait_ms: int = _setting(
        "KAFKA_FETCH_MAX_WAIT_MS", 0, _int_in(0, 60_000),
        "longest the broker may hold a fetch waiting for data (ms); 0 = half the batch wait", processes={WORKER, SINK})
    # Kafka security, passed to both the Faust transport and confluent-kafka.
    kafka_security_protocol: str = _setting(
        "KAFKA_SECURITY_PROTOCOL", "plaintext", _choice("plaintext", "ssl", "sasl_plaintext", "sasl_ssl"), "Kafka security protocol",
        processes=ALL_PROCESSES)
    kafka_sasl_mechanism: str = _setting(
        "KAFKA_SASL_MECHANISM", "plain", _choice("plain", "scram-sha-256", "scram-sha-512"), "SASL mechanism",
        processes=ALL_PROCESSES)
    kafka_sasl_username: str | None = _setting("KAFKA_SASL_USERNAME", None, _text, "SASL user name", processes=ALL_PROCESSES)
    kafka_sasl_password: str | None = _setting("KAFKA_SASL_PASSWORD", None, _text, "SASL password", secret=True,
        processes=ALL_PROCESSES)
    kafka_ssl_cafile: str | None = _setting("KAFKA_SSL_CAFILE", None, _text, "CA bundle for SSL", processes=ALL_PROCESSES)
    kafka_ssl_certfile: str | None = _setting("KAFKA_SSL_CERTFILE", None, _text, "client certificate for SSL",
        processes=ALL_PROCESSES)
    kafka_ssl_keyfile: str | None = _setting("KAFKA_SSL_KEYFILE", None, _text, "client key for SSL", processes=ALL_PROCESSES)
    # Sink.
    sink_app_id: str = _setting("SINK_APP_ID", "ja4-sink", _matching(_NAME_RE, "a name of letters, digits, '.', '_', '-'"), "sink consumer group",
        processes={SINK})
    sink_batch_max: int = _setting("SINK_BATCH_MAX", 5000, _int_in(1, 1_000_000), "rows per ClickHouse insert", processes={SINK})
    sink_batch_wait_ms: int = _setting("SINK_BATCH_WAIT_MS", 1000, _int_in(1, 600_000), "max wait of a sink batch (ms)",
        processes={SINK})
    sink_web_port: int = _setting("SINK_WEB_PORT", 6067, _int_in(1, 65535), "sink web server port", processes={SINK})
    # The label feed and the review console (issue 18; stream_scorer/label_sink.py, stream_scorer/console.py).
    topic_labels: str = _setting("TOPIC_LABELS", "ja4.labels", _matching(_TOPIC_RE, "a Kafka topic name"),
        "analyst labels (JSON: the key fields, label bot|human, source, optional analyst, note); the sink stores them in soc_labels",
        processes={SINK})
    console_host: str = _setting("CONSOLE_HOST", "127.0.0.1", _console_host, "review console bind address (not loopback: CONSOLE_TOKEN required)",
        processes={SINK})
    console_port: int = _setting("CONSOLE_PORT", 6068, _int_in(1, 65535), "review console port", processes={SINK})
    console_token: str | None = _setting(
        "CONSOLE_TOKEN", None, _console_token, "token the review console (and the sink's /console/rows) require; "
        "required when CONSOLE_HOST is not loopback", secret=True, processes={SINK})
    # Trainer.
    baseline_days: float = _setting("BASELINE_DAYS", 7.0, _float_in(0.01, 3650.0), "days of history in the human baseline",
        processes={TRAINER})
    baseline_filter: str = _setting(
        "BASELINE_FILTER", "empty(bot_name)", _sql_filter, "SQL boolean expression selecting baseline rows (trusted operator input)",
        processes={TRAINER})
    baseline_max_rows: int = _setting("BASELINE_MAX_ROWS", 1_000_000, _int_in(100, 100_000_000), "most rows read for a baseline",
        processes={TRAINER})
    prune_variance_threshold: float = _setting("PRUNE_VARIANCE_THRESHOLD", 1e-6, _float_in(0.0, 1e12), "variance below which a feature is pruned",
        processes={TRAINER})
    val_anomaly_gate: float = _setting("VAL_ANOMALY_GATE", 0.20, _float_in(0.0, 1.0), "refuse a model above this validation anomaly rate",
        processes={TRAINER})
    eif_contamination: float = _setting("EIF_CONTAMINATION", 0.05, _float_in(0.0001, 0.5), "share of the training split above the EIF anomaly threshold",
        processes={TRAINER})
    eif_ntrees: int = _setting("EIF_NTREES", 300, _int_in(1, 10_000), "EIF trees", processes={TRAINER})
    eif_ndim: int = _setting("EIF_NDIM", 3, _int_in(1, 64), "EIF hyperplane dimensions", processes={TRAINER})
    eif_sample_size: str = _setting("EIF_SAMPLE_SIZE", "auto", _sample_size, "EIF rows per tree ('auto' = min(rows, 10000))",
        processes={TRAINER})
    ae_epochs: int = _setting("AE_EPOCHS", 30, _int_in(1, 10_000), "autoencoder epochs", processes={TRAINER})
    xgb_min_labels: int = _setting("XGB_MIN_LABELS", 100, _int_in(1, 100_000_000), "labels needed to train XGBoost",
        processes={TRAINER})
    xgb_retrain_interval_h: float = _setting("XGB_RETRAIN_INTERVAL_H", 168.0, _float_in(0.0, 100_000.0), "hours between XGBoost retrains",
        processes={TRAINER})
    retrain_interval_h: float = _setting("RETRAIN_INTERVAL_H", 24.0, _float_in(0.0, 100_000.0), "hours between scheduled retrains",
        processes={TRAINER})
    drift_threshold: float = _setting("DRIFT_THRESHOLD", 0.30, _float_in(0.0, 1.0), "share of drifted features that forces a retrain",
        processes={WORKER, TRAINER})
    trainer_check_interval_s: float = _setting("TRAINER_CHECK_INTERVAL_S", 900.0, _float_in(1.0, 86_400.0), "how often `loop` checks for drift",
        processes={TRAINER})
    # Champion and challenger (issue 17; see trainer/champion.py).
    promotion_policy: str = _setting(
        "PROMOTION_POLICY", "shadow", _choice("shadow", "direct"),
        "shadow: once a champion serves, a retrain is announced as a challenger and judged on labels; "
        "direct: a retrain is activated at once", processes={TRAINER})
    shadow_min_bots: int = _setting("SHADOW_MIN_BOTS", 30, _int_in(1, 100_000_000),
        "labelled bots scored by both models before a challenger is judged", processes={TRAINER})
    shadow_min_humans: int = _setting("SHADOW_MIN_HUMANS", 30, _int_in(1, 100_000_000),
        "labelled humans scored by both models before a challenger is judged", processes={TRAINER})
    shadow_margin: float = _setting("SHADOW_MARGIN", 0.01, _float_in(0.0, 1.0),
        "ROC AUC (or recall) gain a challenger needs over the champion to be promoted", processes={TRAINER})
    shadow_max_hours: float = _setting("SHADOW_MAX_HOURS", 72.0, _float_in(0.001, 100_000.0),
        "a challenger not promoted within this many hours of shadowing is retired", processes={TRAINER})
    shadow_score_timeout_s: float = _setting("SHADOW_SCORE_TIMEOUT_S", 5.0, _float_in(0.01, 3600.0),
        "longest a challenger may take to score one batch before the replica drops it (the batch waits at most "
        "this long)", processes={WORKER})
    # Live drift (issue 19): every replica watches its own input, see stream_scorer.live_drift.
    live_drift_window_s: float = _setting(
        "LIVE_DRIFT_WINDOW_S", 300.0, _float_in(0.0, 86_400.0),
        "sliding window of the live drift per feature (s); 0 turns live drift off", processes={WORKER})
    live_drift_min_records: int = _setting(
        "LIVE_DRIFT_MIN_RECORDS", 500, _int_in(1, 100_000_000),
        "records a window needs before its drift or an input fault counts", processes={WORKER})
    drift_request_after_s: float = _setting(
        "DRIFT_REQUEST_AFTER_S", 60.0, _float_in(0.0, 86_400.0),
        "how long the live drifted share must stay at or above DRIFT_THRESHOLD before a replica asks for a retrain (s)",
        processes={WORKER})
    drift_request_cooldown_s: float = _setting(
        "DRIFT_REQUEST_COOLDOWN_S", 3600.0, _float_in(1.0, 30 * 86_400.0),
        "at most one retrain request per model in this time, across all replicas; the trainer acts on at most one (s)",
        processes={WORKER, TRAINER})
    input_fault_imputed_share: float = _setting(
        "INPUT_FAULT_IMPUTED_SHARE", 0.5, _float_in(0.0, 1.0),
        "a feature imputed in more than this share of a window is an input fault, not drift", processes={WORKER})
    # Logging.
    log_level: str = _setting("LOG_LEVEL", "info", _choice("debug", "info", "warning", "error"), "log level",
        processes=ALL_PROCESSES)
    log_format: str = _setting("LOG_FORMAT", "text", _choice("text", "json"), "log format", processes=ALL_PROCESSES)

    def describe(self) -> dict[str, Any]:
        """The settings as a dict for logs, with secrets masked (a password inside a URL too)."""
        out: dict[str, Any] = {}
        for f in fields(self):
            out[f.metadata["env"]] = self._shown(f)
        return out

    def _shown(self, f: Any) -> Any:
        value = getattr(self, f.name)
        if f.metadata["secret"] and value:
            return MASK
        return mask_url(value) if isinstance(value, str) else value

    def __repr__(self) -> str:
        """Like the dataclass repr, but secrets masked: a repr ends up in logs and tracebacks."""
        return f"Settings({', '.join(f'{f.name}={self._shown(f)!r}' for f in fields(self))})"

    def secret_values(self) -> tuple[str, ...]:
        """Every secret value of these settings, for masking output: the secret settings and
        the password inside ``CLICKHOUSE_URL`` (as written and percent-decoded)."""
        values = [getattr(self, f.name) for f in fields(self) if f.metadata["secret"]]
        return tuple(v for v in [*values, *url_secrets(self.clickhouse_url)] if v)

    @property
    def signing_keys(self) -> tuple[str, ...]:
        """Keys accepted on control messages (current first, then the previous one)."""
        return tuple(k for k in (self.control_signing_key, self.control_signing_key_previous) if k)


def _flag(f: Any) -> str:
    return "--" + f.name.replace("_", "-")


def settings_of(process: str | None) -> list[str]:
    """Names of the settings ``process`` uses (every setting for ``None``)."""
    if process is not None and process not in ALL_PROCESSES:
        raise ValueError(f"unknown process {process!r}; allowed: {sorted(ALL_PROCESSES)}")
    return [f.name for f in fields(Settings) if process is None or process in f.metadata["processes"]]


def add_setting_flags(parser: argparse.ArgumentParser, names: set[str] | None = None, *,
                      process: str | None = None) -> None:
    """Add one ``--flag`` per setting of ``process`` (all of them for ``None``; only the
    ``names`` given, if any). Call it after the command's own options: ``--help`` then lists
    those first, and its usage line names them, not the settings."""
    if parser.usage is None:  # the usage line of the command's own options, not of 60 settings
        own = parser.format_usage().removeprefix("usage: ").strip()
        parser.usage = own.replace("%", "%%") + " [SETTING FLAGS]"
    group = parser.add_argument_group(
        f"settings{'' if process is None else ' of the ' + process} (each also read from its environment variable)")
    chosen = set(settings_of(process))
    for f in fields(Settings):
        if f.name not in chosen or (names is not None and f.name not in names):
            continue
        group.add_argument(_flag(f), dest=f"setting_{f.name}", default=None, metavar=f.metadata["env"],
                           help=f"{f.metadata['doc']} (env {f.metadata['env']}, default {f.default!r})")


def load_settings(environ: Mapping[str, str] | None = None,
                  args: argparse.Namespace | Mapping[str, Any] | None = None) -> Settings:
    """Build the settings from the environment, then CLI flags (flags win); validate all.

    :raises ConfigError: naming the first bad setting, e.g.
        ``SCORER_BATCH_MAX: must be between 1 and 100000, got 0``.
    """
    environ = os.environ if environ is None else environ
    flags: Mapping[str, Any] = vars(args) if isinstance(args, argparse.Namespace) else (args or {})
    values: dict[str, Any] = {}
    for f in fields(Settings):
        env = f.metadata["env"]
        raw = flags.get(f"setting_{f.name}")
        if raw is None:
            raw = flags.get(f.name)
        if raw is None:
            raw = environ.get(env)
        if raw is None or (isinstance(raw, str) and raw == "" and f.default is None):
            continue
        if not isinstance(raw, str):
            raw = str(raw)
        try:
            values[f.name] = f.metadata["parse"](raw)
        except ValueError as exc:
            raise ConfigError(f"{env}: {exc}") from None
    settings = Settings(**values)
    if settings.ae_weight is not None and settings.xgb_weight is not None and \
            settings.ae_weight >= 1.0 and settings.xgb_weight >= 1.0:
        raise ConfigError("AE_WEIGHT/XGB_WEIGHT: both weights 1.0 leave no room for the EIF")
    return settings


_active: Settings | None = None


def use_settings(settings: Settings) -> None:
    """Install the process's settings (the CLI does this before importing the Faust app)."""
    global _active
    _active = settings


def get_settings() -> Settings:
    """The process's settings: those installed by the CLI, else read from the environment."""
    global _active
    if _active is None:
        _active = load_settings()
    return _active
