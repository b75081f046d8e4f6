"""ClickHouse access for the trainer (and the score sink): the only module that speaks SQL.

One connection object, :class:`ClickHouseIO`, from :func:`connect`, with the schema
(:meth:`~ClickHouseIO.init_db`), the inserts and the trainer's queries. Rules kept here:

* **Values are never formatted into SQL.** Every value travels as a clickhouse-connect
  server-side parameter (``{name:Type}``); inserts go through the client's typed insert.
* **Identifiers are validated** against :data:`IDENT_RE` and backquoted; a database, table
  or column name that is not a plain identifier raises :class:`SchemaError`.
* **The same SQL** runs on the embedded engine (``chdb://PATH``) and on a server
  (``http(s)://``): no engine-specific syntax, times compared as
  ``toDateTime({x:Int64}, 'UTC')`` so neither side's time zone matters.
* ``BASELINE_FILTER`` is the one piece of SQL text taken from configuration: it is trusted
  operator input (the settings refuse ``;`` and comments) and is only ever placed, in
  parentheses, in the ``WHERE`` of the baseline query.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import socket
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Iterable, Mapping, Sequence
from urllib.parse import parse_qs, urlparse, urlunparse

import numpy as np

from ja4_core.errors import ConfigError, SchemaError
from ja4_core.features import CONTEXT_FIELDS, DEFAULT_FEATURES, KEY_FIELDS, feature_value, window_start_seconds

log = logging.getLogger(__name__)

IDENT_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
DEFAULT_DATABASE = "ja4"

FEATURES_TABLE = "view_ai_features_1h"
SCORES_TABLE = "ml_all_scores"
LABELS_TABLE = "soc_labels"
HISTORY_TABLE = "model_training_history"

#: Threat levels that make a scored row a positive / negative label (the contract's rule).
POSITIVE_LEVELS: tuple[str, ...] = ("HIGH", "CRITICAL", "ANUBIS_DENY", "KNOWN_BOT")
NEGATIVE_LEVELS: tuple[str, ...] = ("NORMAL", "LEGITIMATE_BROWSER")
LABEL_VALUES: frozenset[str] = frozenset({"bot", "human"})
#: Supervised labels are read from this many days back (the original's rule).
LABEL_DAYS = 7.0

_NUMERIC_TYPE = re.compile(r"^(Nullable\()?(U?Int(8|16|32|64|128|256)|Float(32|64)|Decimal.*|Bool)\)?$")

#: Columns of the score record, in the contract's order, with their ClickHouse types.
SCORE_COLUMNS: tuple[tuple[str, str], ...] = (
    ("window_start", "DateTime('UTC')"),
    ("src_ip", "String"),
    ("ja4", "String"),
    ("host", "String"),
    ("anomaly_score", "Float64"),
    ("eif_score", "Float64"),
    ("ae_score", "Nullable(Float64)"),
    ("xgb_prob", "Nullable(Float64)"),
    ("threat_level", "LowCardinality(String)"),
    ("model_name", "String"),
    ("model_version", "String"),
    ("scored_at", "DateTime64(3, 'UTC')"),
    ("imputed", "Array(String)"),
    ("asn_number", "Nullable(Int64)"),
    ("country_code", "String"),
    ("browser_family", "String"),
    ("bot_name", "String"),
    # added with the reasons (issue 18, ja4_core.reasons): JSON text of the record's list;
    # ALTERed into older tables by init_db (their rows read '[]')
    ("reasons", "String"),
)

#: Most characters of a score record's ``reasons`` JSON that a row takes (3 reasons are ~300).
MAX_REASONS_JSON = 4096

#: The challenger's score records beside the champion's score and level for the same record
#: (written by the sink, read by the trainer's judge: :mod:`ja4_core.shadow_table`).
SHADOW_TABLE = "ml_shadow_scores"
SHADOW_COLUMNS: tuple[tuple[str, str], ...] = (
    ("window_start", "DateTime('UTC')"),
    ("src_ip", "String"),
    ("ja4", "String"),
    ("host", "String"),
    ("anomaly_score", "Float64"),
    ("threat_level", "LowCardinality(String)"),
    ("model_name", "String"),
    ("model_version", "String"),
    ("champion_version", "String"),
    ("champion_anomaly_score", "Float64"),
    ("champion_threat_level", "LowCardinality(String)"),
    ("scored_at", "DateTime64(3, 'UTC')"),
)

LABEL_COLUMNS: tuple[tuple[str, str], ...] = (
    ("window_start", "DateTime('UTC')"),
    ("src_ip", "String"),
    ("ja4", "String"),
    ("host", "String"),
    ("label", "LowCardinality(String)"),
    ("source", "String"),
    ("created_at", "DateTime64(3, 'UTC')"),
    ("analyst", "String"),  # added with the label feed (ja4_core.label_record): ALTERed into older tables
    ("note", "String"),
    ("kind", "String"),  # the bot family of a bot label (issue 16): ALTERed into older tables
)

#: One row per training decision: trained, reused, rejected, drift (= retrained because of
#: drift) or skipped (not enough data), with the drift figures and the metrics as JSON.
HISTORY_COLUMNS: tuple[tuple[str, str], ...] = (
    ("decided_at", "DateTime64(3, 'UTC')"),
    ("model_name", "String"),
    ("decision", "LowCardinality(String)"),
    ("reason", "String"),
    ("version", "String"),
    ("previous_version", "String"),
    ("current_version", "String"),
    ("drift_share", "Nullable(Float64)"),
    ("drift_forced", "UInt8"),
    ("drifted_features", "Array(String)"),
    ("drift_json", "String"),
    ("metrics_json", "String"),
    ("n_baseline", "UInt64"),
    ("n_train", "UInt64"),
    ("n_val", "UInt64"),
    ("n_labels", "UInt64"),
    ("xgb_trained", "UInt8"),
    ("val_anomaly_rate", "Nullable(Float64)"),
    ("duration_s", "Float64"),
    ("issued_by", "String"),
)


def ident(name: str, what: str = "identifier") -> str:
    """Validate a database/table/column name and return it backquoted.

    >>> ident("hits")
    '`hits`'
    """
    if not isinstance(name, str) or not IDENT_RE.fullmatch(name):
        raise SchemaError(f"{what} {name!r} is not an identifier (letters, digits, '_'; not starting with a digit)")
    return f"`{name}`"


# --- values ------------------------------------------------------------------------------

def to_epoch(value: Any, what: str = "window_start") -> int:
    """Epoch seconds from an ISO-8601 string, epoch seconds (number or digits) or a datetime
    (naive = UTC), as the contract allows for ``window_start``.

    >>> to_epoch("2026-11-24T10:00:00Z"), to_epoch(1795514400), to_epoch("1795514400.0")
    (1795514400, 1795514400, 1795514400)
    """
    if isinstance(value, bool) or value is None:
        raise SchemaError(f"{what} {value!r} is not a time")
    if isinstance(value, (int, float)):
        if not math.isfinite(value):
            raise SchemaError(f"{what} {value!r} is not a time")
        return int(value)
    if isinstance(value, datetime):
        dt = value if value.tzinfo else value.replace(tzinfo=timezone.utc)
        return int(dt.timestamp())
    if isinstance(value, str):
        text = value.strip()
        try:
            return int(float(text))
        except ValueError:
            pass
        try:
            dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            raise SchemaError(f"{what} {value!r} is neither ISO-8601 nor epoch seconds") from None
        return to_epoch(dt, what)
    raise SchemaError(f"{what} {value!r} is not a time")


def to_datetime(value: Any, what: str = "time") -> datetime:
    """A UTC-aware datetime from the same inputs as :func:`to_epoch`, keeping milliseconds."""
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=timezone.utc)
    if isinstance(value, str):
        try:
            return to_datetime(datetime.fromisoformat(value.strip().replace("Z", "+00:00")), what)
        except ValueError:
            pass
    if isinstance(value, (int, float, str)) and not isinstance(value, bool):
        try:
            return datetime.fromtimestamp(float(value), tz=timezone.utc)
        except (ValueError, OverflowError):
            pass
    raise SchemaError(f"{what} {value!r} is not a time")


def _feature_or_none(value: Any) -> float | None:
    """A feature cell under the product's one missing-value rule
    (:func:`ja4_core.features.feature_value`, the scorer's): a finite float, or NULL for
    anything the scorer would impute (missing, ``null``, any string, NaN, inf, ...)."""
    number = feature_value(value)
    return None if number != number else number


def _float_or_none(value: Any) -> float | None:
    """A score record's number (``ae_score``, ``xgb_prob``): a finite float or NULL."""
    if value is None or isinstance(value, str) and not value.strip():
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
#: The last second a ClickHouse ``DateTime`` holds (2106-02-07T06:28:15Z).
DATETIME_MAX = 2**32 - 1


def _int_or_none(value: Any) -> int | None:
    """An ``Int64`` cell: NULL when missing, non-numeric or beyond 64 bits (it cannot be stored)."""
    number = _float_or_none(value)
    if number is None:
        return None
    n = int(number)
    return n if _INT64_MIN <= n <= _INT64_MAX else None


def _text(value: Any) -> str:
    return "" if value is None else str(value)


def _is_numeric_value(value: Any) -> bool:
    if value is None or isinstance(value, (int, float)):  # bool is an int: a 0/1 flag
        return True
    return False


def score_row(r: Mapping[str, Any]) -> list[Any]:
    """One score record -> one ``ml_all_scores`` row, in :data:`SCORE_COLUMNS` order.

    Raises :class:`SchemaError` naming the field for any value the row cannot hold, so a bad
    record is refused alone, before it reaches ClickHouse: a missing field, a ``window_start``
    the contract refuses (:func:`~ja4_core.features.window_start_seconds`) or beyond
    ``DateTime`` (2106), a score that is not a number, a ``scored_at`` that is not a time.
    """
    if not isinstance(r, Mapping):
        raise SchemaError(f"a score record must be a JSON object, got {type(r).__name__}")
    for key in (*KEY_FIELDS, "anomaly_score", "threat_level", "model_version"):
        if r.get(key) is None:
            raise SchemaError(f"field {key!r} is missing")
    window = int(window_start_seconds(r["window_start"]))  # a RecordError is a SchemaError
    if window > DATETIME_MAX:
        raise SchemaError(f"window_start {r['window_start']!r} is after 2106-02-07T06:28:15Z, "
                          "the end of ClickHouse's DateTime")
    anomaly = _score_number(r, "anomaly_score")
    eif = _score_number(r, "eif_score") if r.get("eif_score") is not None else anomaly
    imputed = r.get("imputed") or []
    if not isinstance(imputed, list):
        raise SchemaError(f"field 'imputed' must be a list of feature names, got {type(imputed).__name__}")
    scored_at = to_datetime(r["scored_at"], "scored_at") if r.get("scored_at") is not None else datetime.now(timezone.utc)
    reasons = _reasons_json(r.get("reasons"))
    return [window, _text(r["src_ip"]), _text(r["ja4"]), _text(r["host"]), anomaly, eif,
            _float_or_none(r.get("ae_score")), _float_or_none(r.get("xgb_prob")),
            _text(r["threat_level"]), _text(r.get("model_name", "")), _text(r["model_version"]),
            scored_at, [str(x) for x in imputed], _int_or_none(r.get("asn_number")), _text(r.get("country_code")),
            _text(r.get("browser_family")), _text(r.get("bot_name")), reasons]


def _reasons_json(value: Any) -> str:
    """A score record's ``reasons`` as the column's JSON text: ``[]`` when absent (a scorer from
    before issue 18); anything but a list of objects, or an oversized one, is a SchemaError."""
    if value is None:
        return "[]"
    if not isinstance(value, list) or not all(isinstance(x, Mapping) for x in value):
        raise SchemaError(f"field 'reasons' must be a list of objects, got {value!r:.80}")
    try:
        text = json.dumps(value, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise SchemaError(f"field 'reasons' is not JSON: {exc}") from None
    if len(text) > MAX_REASONS_JSON:
        raise SchemaError(f"field 'reasons' is {len(text)} characters of JSON, more than {MAX_REASONS_JSON}")
    return text


def _score_number(r: Mapping[str, Any], key: str) -> float:
    value = r[key]
    try:
        return float(value)
    except (TypeError, ValueError, OverflowError):
        raise SchemaError(f"field {key!r} must be a number, got {value!r:.80}") from None


#: ClickHouse error codes that refuse the rows themselves (a value the column or a constraint
#: does not take), as opposed to the server, the table or the connection being unusable.
DATA_ERROR_CODES: frozenset[int] = frozenset({
    6,    # CANNOT_PARSE_TEXT
    27,   # CANNOT_PARSE_INPUT_ASSERTION_FAILED
    38,   # CANNOT_PARSE_DATE
    41,   # CANNOT_PARSE_DATETIME
    53,   # TYPE_MISMATCH
    69,   # ARGUMENT_OUT_OF_BOUND
    70,   # CANNOT_CONVERT_TYPE
    72,   # CANNOT_PARSE_NUMBER
    117,  # INCORRECT_DATA
    131,  # TOO_LARGE_STRING_SIZE
    321,  # VALUE_IS_OUT_OF_RANGE_OF_DATA_TYPE
    349,  # CANNOT_INSERT_NULL_IN_ORDINARY_COLUMN
    469,  # VIOLATED_CONSTRAINT
})


def is_data_error(exc: BaseException) -> bool:
    """True when an insert failed because of the rows (retrying them cannot help; split them
    to find the bad ones), False when ClickHouse is down, slow or the table unusable (retry).

    Told apart by class and by ClickHouse's numeric error code, never by message text: our
    own conversion errors and clickhouse-connect's ``DataError`` (a value it cannot
    serialise) are about the data; so is a server error with a code in
    :data:`DATA_ERROR_CODES`. Anything else (``OperationalError``: connection refused, reset,
    timeout; an unknown table; a read-only or failing server) is not.
    """
    from clickhouse_connect.driver.exceptions import DatabaseError, DataError, OperationalError

    if isinstance(exc, (SchemaError, ValueError, TypeError, OverflowError, DataError)):
        return True
    if isinstance(exc, OperationalError):
        return False
    return isinstance(exc, DatabaseError) and getattr(exc, "code", None) in DATA_ERROR_CODES


# --- connecting --------------------------------------------------------------------------

@dataclass(frozen=True)
class Target:
    """Where a DSN points: the engine and the database our tables live in."""

    kind: str  # "chdb" or "http"
    database: str
    chdb_path: str | None = None  # None = in-memory engine
    http_dsn: str | None = None


def parse_dsn(dsn: str) -> Target:
    """Split ``CLICKHOUSE_URL`` into an engine target and the database (``ja4`` by default).

    ``chdb://PATH`` names a directory, absolute (``chdb:///var/lib/ch``) or relative
    (``chdb://./var/clickhouse``); ``chdb://memory`` is an in-memory engine; ``?database=NAME``
    names the database. ``http(s)://user:pass@host:8123/db`` (or ``clickhouse(s)://``) names a
    server, the path its database.

    >>> parse_dsn("chdb://./var/clickhouse").database
    'ja4'
    >>> parse_dsn("https://u:p@ch.example:8443/bots").database
    'bots'
    """
    parsed = urlparse(dsn)
    query = parse_qs(parsed.query)
    if parsed.scheme == "chdb":
        database = query.get("database", [""])[0]
        if parsed.netloc in ("memory", ":memory:"):
            path = None
            database = database or parsed.path.strip("/")
        else:
            raw = parsed.netloc + parsed.path
            if not raw:
                raise ConfigError(f"CLICKHOUSE_URL: a chdb:// DSN needs a directory path, got {dsn!r}")
            path = os.path.abspath(os.path.expanduser(raw))
        database = database or DEFAULT_DATABASE
        _check_database(database)
        return Target("chdb", database, chdb_path=path)
    if parsed.scheme in ("http", "https", "clickhouse", "clickhouses"):
        scheme = {"clickhouse": "http", "clickhouses": "https"}.get(parsed.scheme, parsed.scheme)
        database = parsed.path.strip("/").split("/")[0] or DEFAULT_DATABASE
        _check_database(database)
        # The client itself is opened without a database (the server's default for the user):
        # ours may not exist before init-db, and every statement names it anyway.
        http_dsn = urlunparse((scheme, parsed.netloc, "", "", parsed.query, ""))
        return Target("http", database, http_dsn=http_dsn)
    raise ConfigError(f"CLICKHOUSE_URL: scheme must be chdb, http(s) or clickhouse(s), got {parsed.scheme!r}")


def _check_database(name: str) -> None:
    if not IDENT_RE.fullmatch(name):
        raise ConfigError(f"CLICKHOUSE_URL: database {name!r} is not an identifier (letters, digits, '_')")


E_CHDB_BUSY = ("cannot open the embedded ClickHouse at {path}: is another process (the sink, another trainer) "
               "using it? chdb allows one process per directory; stop it, or use a ClickHouse server")


def chdb_directory_in_use(path: str) -> bool:
    """Whether another process holds the embedded ClickHouse at ``path``: the engine keeps an
    exclusive ``flock`` on ``<path>/status`` while it runs (that, not the error's text, tells
    "busy" apart from any other failure to open it)."""
    import fcntl

    try:
        fd = os.open(os.path.join(path, "status"), os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return True
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)


def connect(dsn: str) -> "ClickHouseIO":
    """Open a clickhouse-connect client for ``dsn`` (see :func:`parse_dsn`). Close it (or use
    it as a context manager): chdb allows one engine path per process at a time."""
    import clickhouse_connect
    from clickhouse_connect.driver.exceptions import ClickHouseError, OperationalError

    target = parse_dsn(dsn)
    if target.kind == "chdb":
        try:
            if target.chdb_path is None:
                client = clickhouse_connect.get_client(dsn="chdb://memory")
            elif re.search(r"[?#%]", target.chdb_path):  # a DSN cannot carry these verbatim
                client = clickhouse_connect.get_client(interface="chdb", path=target.chdb_path)
            else:
                os.makedirs(target.chdb_path, exist_ok=True)
                client = clickhouse_connect.get_client(dsn=f"chdb://{target.chdb_path}")
        except ClickHouseError as exc:
            if target.chdb_path is None or not chdb_directory_in_use(target.chdb_path):
                raise
            # Still a ClickHouseError, so the loop retries: the other process may finish.
            raise OperationalError(E_CHDB_BUSY.format(path=target.chdb_path)) from exc
    else:
        client = clickhouse_connect.get_client(dsn=target.http_dsn)
    return ClickHouseIO(client, target.database)


# --- query results -----------------------------------------------------------------------

@dataclass
class Baseline:
    """Human baseline rows in time order: the feature matrix and each row's window start."""

    X: np.ndarray
    features: tuple[str, ...]
    times: np.ndarray  # epoch seconds
    start: int
    end: int

    def __len__(self) -> int:
        return len(self.X)


@dataclass
class Labelled:
    """Labelled rows for the supervised model: y = 1 bot, 0 human; source per row."""

    X: np.ndarray
    y: np.ndarray
    source: np.ndarray  # "analyst" or "score"
    times: np.ndarray
    features: tuple[str, ...]
    #: The bot kind of each row's newest analyst label ("" when it names none, and on humans).
    kind: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.y)

    @property
    def n_pos(self) -> int:
        return int(self.y.sum())


@dataclass
class Decision:
    """One row of ``model_training_history``."""

    model_name: str
    decision: str
    reason: str = ""
    version: str = ""
    previous_version: str = ""
    current_version: str = ""
    drift_share: float | None = None
    drift_forced: bool = False
    drifted_features: list[str] = field(default_factory=list)
    drift: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    n_baseline: int = 0
    n_train: int = 0
    n_val: int = 0
    n_labels: int = 0
    xgb_trained: bool = False
    val_anomaly_rate: float | None = None
    duration_s: float = 0.0
    issued_by: str = field(default_factory=lambda: f"trainer@{socket.gethostname()}")
    decided_at: datetime = field(default_factory=lambda: datetime.now(timezone.utc))


def _json(obj: Any) -> str:
    def default(o: Any) -> Any:
        if isinstance(o, np.generic):
            return o.item()
        if isinstance(o, np.ndarray):
            return o.tolist()
        if isinstance(o, datetime):
            return o.isoformat()
        return str(o)
    return json.dumps(obj, default=default, allow_nan=True, sort_keys=True)


# --- the connection ----------------------------------------------------------------------

class ClickHouseIO:
    """Schema, inserts and queries on one database; every value bound as a parameter."""

    def __init__(self, client: Any, database: str) -> None:
        self.client = client
        self.database = database
        self._db = ident(database, "database")

    # -- plumbing ---------------------------------------------------------------------
    def close(self) -> None:
        self.client.close()

    def __enter__(self) -> "ClickHouseIO":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def table(self, name: str) -> str:
        return f"{self._db}.{ident(name, 'table')}"

    def columns(self, table: str) -> dict[str, str]:
        """Column name -> ClickHouse type, in table order (empty when the table is missing)."""
        result = self.client.query(
            "SELECT name, type FROM system.columns WHERE database = {db:String} AND table = {t:String} "
            "ORDER BY position", parameters={"db": self.database, "t": table})
        return {name: typ for name, typ in result.result_rows}

    def numeric_columns(self, table: str = FEATURES_TABLE) -> list[str]:
        reserved = set(KEY_FIELDS) | set(CONTEXT_FIELDS)
        return [n for n, t in self.columns(table).items() if n not in reserved and _NUMERIC_TYPE.fullmatch(t)]

    def usable_features(self, wanted: Sequence[str] | None = None) -> tuple[str, ...]:
        """``FEATURES`` (or the default list) intersected with the numeric columns present,
        in the configured order; raises :class:`SchemaError` when none is left."""
        wanted = tuple(wanted) if wanted else DEFAULT_FEATURES
        present = set(self.numeric_columns(FEATURES_TABLE))
        usable = tuple(f for f in wanted if f in present)
        missing = [f for f in wanted if f not in present]
        if missing:
            log.info("features not in %s, not used: %s", FEATURES_TABLE, ", ".join(missing))
        if not usable:
            raise SchemaError(f"none of the configured features is a numeric column of {self.database}.{FEATURES_TABLE}")
        return usable

    # -- schema -----------------------------------------------------------------------
    def init_db(self, features: Sequence[str] = DEFAULT_FEATURES) -> None:
        """Create the database and the four tables if missing (idempotent)."""
        self.client.command(f"CREATE DATABASE IF NOT EXISTS {self._db}")
        feature_cols = ",\n  ".join(f"{ident(f, 'feature')} Nullable(Float64)" for f in features)
        self.client.command(
            f"CREATE TABLE IF NOT EXISTS {self.table(FEATURES_TABLE)} (\n"
            "  window_start DateTime('UTC'), src_ip String, ja4 String, host String,\n"
            "  asn_number Nullable(Int64), country_code String, browser_family String, bot_name String,\n"
            f"  {feature_cols}\n"
            ") ENGINE = MergeTree ORDER BY (window_start, src_ip, ja4, host)")
        self.client.command(
            f"CREATE TABLE IF NOT EXISTS {self.table(SCORES_TABLE)} ({self._cols(SCORE_COLUMNS)}) "
            "ENGINE = ReplacingMergeTree(scored_at) ORDER BY (window_start, src_ip, ja4, host, model_version)")
        if "reasons" not in self.columns(SCORES_TABLE):  # a table created before the reasons (issue 18);
            # only then: an operator's view or a user without ALTER rights stays usable as before
            self.client.command(
                f"ALTER TABLE {self.table(SCORES_TABLE)} ADD COLUMN IF NOT EXISTS reasons String DEFAULT '[]'")
        self.client.command(
            f"CREATE TABLE IF NOT EXISTS {self.table(LABELS_TABLE)} ({self._cols(LABEL_COLUMNS)}) "
            "ENGINE = MergeTree ORDER BY (window_start, src_ip, ja4, host, created_at)")
        have = self.columns(LABELS_TABLE)
        for name in ("analyst", "note", "kind"):  # tables created before the label feed / kinds (no DDL when present)
            if name not in have:
                self.client.command(f"ALTER TABLE {self.table(LABELS_TABLE)} ADD COLUMN IF NOT EXISTS {ident(name)} String")
        self.client.command(
            f"CREATE TABLE IF NOT EXISTS {self.table(HISTORY_TABLE)} ({self._cols(HISTORY_COLUMNS)}) "
            "ENGINE = MergeTree ORDER BY (model_name, decided_at)")
        self.client.command(  # the challenger's scores (issue 17, see ja4_core.shadow_table)
            f"CREATE TABLE IF NOT EXISTS {self.table(SHADOW_TABLE)} ({self._cols(SHADOW_COLUMNS)}) "
            "ENGINE = ReplacingMergeTree(scored_at) ORDER BY (model_name, model_version, window_start, src_ip, ja4, host)")

    @staticmethod
    def _cols(columns: Iterable[tuple[str, str]]) -> str:
        return ", ".join(f"{ident(n)} {t}" for n, t in columns)

    # -- inserts ----------------------------------------------------------------------
    def insert_features(self, rows: Sequence[Mapping[str, Any]]) -> int:
        """Insert feature records (key fields, numeric features, optional context fields).

        "Bring your own features": a numeric field the table does not have yet becomes a new
        ``Nullable(Float64)`` column. Non-numeric extra fields (e.g. the simulator's ground
        truth ``label``) are ignored. A feature value the scorer would impute (the rule of
        :func:`ja4_core.features.feature_value`: missing, ``null``, a string such as ``"1.5"``,
        NaN, inf) is stored as NULL, so training sees what scoring sees.
        """
        if not rows:
            return 0
        table_cols = self.columns(FEATURES_TABLE)
        if not table_cols:
            raise SchemaError(f"{self.database}.{FEATURES_TABLE} does not exist: run `stream-trainer init-db` first")
        reserved = set(KEY_FIELDS) | set(CONTEXT_FIELDS)
        numeric: dict[str, bool] = {}
        for row in rows:
            for name, value in row.items():
                if name in reserved:
                    continue
                numeric[name] = numeric.get(name, True) and _is_numeric_value(value)
        new = [n for n, ok in numeric.items() if ok and n not in table_cols]
        ignored = sorted(n for n, ok in numeric.items() if not ok and n not in table_cols)
        if ignored:
            log.info("non-numeric fields ignored: %s", ", ".join(ignored))
        for name in new:
            self.client.command(
                f"ALTER TABLE {self.table(FEATURES_TABLE)} ADD COLUMN IF NOT EXISTS {ident(name, 'feature')} Nullable(Float64)")
            log.info("added feature column %s", name)
        feature_cols = [n for n in numeric
                        if n in new or (n in table_cols and _NUMERIC_TYPE.fullmatch(table_cols[n]))]
        cols = [*KEY_FIELDS, *CONTEXT_FIELDS, *feature_cols]
        data = []
        for i, row in enumerate(rows):
            for key in KEY_FIELDS:
                if row.get(key) in (None, ""):
                    raise SchemaError(f"row {i}: key field {key!r} is missing")
            data.append([
                to_epoch(row["window_start"]), _text(row["src_ip"]), _text(row["ja4"]), _text(row["host"]),
                _int_or_none(row.get("asn_number")), _text(row.get("country_code")),
                _text(row.get("browser_family")), _text(row.get("bot_name")),
                *(_feature_or_none(row.get(n)) for n in feature_cols)])
        self.client.insert(FEATURES_TABLE, data, column_names=cols, database=self.database)
        return len(data)

    def insert_scores(self, rows: Sequence[Mapping[str, Any]]) -> int:
        """Insert score records as published on the scores topic (dicts; ``window_start`` ISO
        or epoch seconds, ``scored_at`` ISO or epoch; extra keys ignored)."""
        data = []
        for i, r in enumerate(rows):
            try:
                data.append(score_row(r))
            except SchemaError as exc:
                raise SchemaError(f"score row {i}: {exc}") from None
        return self.insert_score_rows(data)

    def insert_score_rows(self, data: Sequence[Sequence[Any]]) -> int:
        """Insert rows already built by :func:`score_row` (the sink validates each first)."""
        if not data:
            return 0
        self.client.insert(SCORES_TABLE, data, column_names=[c for c, _ in SCORE_COLUMNS], database=self.database)
        return len(data)

    def insert_labels(self, rows: Sequence[Mapping[str, Any]], source: str = "analyst") -> int:
        """Insert analyst labels (``label`` = 'bot' | 'human'); the newest label of a key wins."""
        if not rows:
            return 0
        now = datetime.now(timezone.utc)
        data = []
        for i, r in enumerate(rows):
            label = r.get("label")
            if label not in LABEL_VALUES:
                raise SchemaError(f"label row {i}: label {label!r} must be one of bot, human")
            for key in KEY_FIELDS:
                if r.get(key) in (None, ""):
                    raise SchemaError(f"label row {i}: key field {key!r} is missing")
            data.append([to_epoch(r["window_start"]), _text(r["src_ip"]), _text(r["ja4"]), _text(r["host"]),
                         label, _text(r.get("source", source)),
                         to_datetime(r["created_at"], "created_at") if r.get("created_at") is not None else now,
                         _text(r.get("analyst")), _text(r.get("note")), _text(r.get("kind"))])
        self.client.insert(LABELS_TABLE, data, column_names=[c for c, _ in LABEL_COLUMNS], database=self.database)
        return len(data)

    # -- the label feed and the review console -----------------------------------------
    @staticmethod
    def _keys_filter(keys: Sequence[tuple[int, str, str, str]]) -> tuple[str, dict[str, Any]]:
        """WHERE text matching rows whose (window_start, src_ip, ja4, host) is one of ``keys``
        (the window range first, so the primary key narrows the read)."""
        sql = ("window_start >= toDateTime({k_lo:Int64}, 'UTC') AND window_start <= toDateTime({k_hi:Int64}, 'UTC')"
               " AND (toInt64(toUnixTimestamp(window_start)), src_ip, ja4, host) IN (SELECT k.1, k.2, k.3, k.4 FROM"
               " (SELECT arrayJoin(arrayZip({k_w:Array(Int64)}, {k_i:Array(String)}, {k_j:Array(String)},"
               " {k_h:Array(String)})) AS k))")  # a set: one lookup per row
        return sql, {"k_lo": min(k[0] for k in keys), "k_hi": max(k[0] for k in keys),
                     "k_w": [int(k[0]) for k in keys], "k_i": [k[1] for k in keys],
                     "k_j": [k[2] for k in keys], "k_h": [k[3] for k in keys]}

    def scored_keys(self, keys: Sequence[tuple[int, str, str, str]]) -> set[tuple[int, str, str, str]]:
        """Those of ``keys`` (epoch window, src_ip, ja4, host) that have a row in ``ml_all_scores``."""
        if not keys:
            return set()
        where, params = self._keys_filter(keys)
        result = self.client.query(
            f"SELECT DISTINCT toInt64(toUnixTimestamp(window_start)), src_ip, ja4, host FROM {self.table(SCORES_TABLE)}"
            f" WHERE {where}", parameters=params)
        return {(int(w), i, j, h) for w, i, j, h in result.result_rows}

    def latest_labels(self, keys: Sequence[tuple[int, str, str, str]]) -> dict[tuple[int, str, str, str], dict[str, Any]]:
        """The newest label of each of ``keys`` that has one: ``{label, source, analyst, created_at}``."""
        if not keys:
            return {}
        where, params = self._keys_filter(keys)
        result = self.client.query(
            "SELECT toInt64(toUnixTimestamp(window_start)), src_ip, ja4, host, argMax(label, created_at),"
            " argMax(source, created_at), argMax(analyst, created_at), max(created_at)"
            f" FROM {self.table(LABELS_TABLE)} WHERE {where} GROUP BY window_start, src_ip, ja4, host",
            parameters=params)
        return {(int(w), i, j, h): {"label": lab, "source": src, "analyst": who, "created_at": at}
                for w, i, j, h, lab, src, who, at in result.result_rows}

    def review_rows(self, *, since: int, levels: Sequence[str] = (), host: str = "", ja4: str = "",
                    limit: int = 100) -> list[dict[str, Any]]:
        """The most anomalous windows scored since ``since`` (epoch seconds), one row per window
        (its newest score), with ``reasons`` (JSON text; ``"[]"`` on a table without that column)
        and the window's newest label, if any: the review console's table. ``levels``: only
        these threat levels (all when empty); ``host`` / ``ja4``: substrings, case-insensitive."""
        has_reasons = "reasons" in self.columns(SCORES_TABLE)
        reasons = ", argMax(reasons, scored_at)" if has_reasons else ", '[]'"
        having = " HAVING has({levels:Array(String)}, level)" if levels else ""
        result = self.client.query(
            "SELECT toInt64(toUnixTimestamp(window_start)) AS w, src_ip, ja4, host,"
            " argMax(anomaly_score, scored_at) AS score, argMax(threat_level, scored_at) AS level,"
            " argMax(model_version, scored_at), max(scored_at)" + reasons +
            f" FROM {self.table(SCORES_TABLE)}"
            " WHERE scored_at >= toDateTime({since:Int64}, 'UTC')"
            " AND positionCaseInsensitive(host, {host:String}) > 0 AND positionCaseInsensitive(ja4, {ja4:String}) > 0"
            " GROUP BY window_start, src_ip, ja4, host" + having +
            " ORDER BY score DESC, w DESC, src_ip LIMIT {limit:UInt64}",
            parameters={"since": int(since), "levels": list(levels), "host": host, "ja4": ja4, "limit": int(limit)})
        rows = [{"window_start": w, "src_ip": i, "ja4": j, "host": h, "anomaly_score": float(score),
                 "threat_level": level, "model_version": version, "scored_at": at, "reasons": text or "[]"}
                for w, i, j, h, score, level, version, at, text in result.result_rows]
        labels = self.latest_labels([(r["window_start"], r["src_ip"], r["ja4"], r["host"]) for r in rows])
        for r in rows:
            r["label"] = labels.get((r["window_start"], r["src_ip"], r["ja4"], r["host"]))
        return rows

    def record_decision(self, d: Decision) -> None:
        row = [d.decided_at, d.model_name, d.decision, d.reason, d.version, d.previous_version,
               d.current_version, d.drift_share, int(d.drift_forced), list(d.drifted_features),
               _json(d.drift), _json(d.metrics), d.n_baseline, d.n_train, d.n_val, d.n_labels,
               int(d.xgb_trained), d.val_anomaly_rate, float(d.duration_s), d.issued_by]
        self.client.insert(HISTORY_TABLE, [row], column_names=[c for c, _ in HISTORY_COLUMNS], database=self.database)

    # -- queries ----------------------------------------------------------------------
    def _label_joins(self) -> str:
        """LEFT JOINs giving each feature row its newest analyst label ``l.label`` and newest
        score-derived level ``s.level`` inside the window; ifNull guards ``join_use_nulls``."""
        key = "window_start, src_ip, ja4, host"
        on = lambda a: " AND ".join(f"{a}.{k} = f.{k}" for k in ("window_start", "src_ip", "ja4", "host"))  # noqa: E731
        window = "window_start >= toDateTime({start:Int64}, 'UTC') AND window_start < toDateTime({end:Int64}, 'UTC')"
        return (
            f" LEFT JOIN (SELECT {key}, argMax(label, created_at) AS label, argMax(kind, created_at) AS kind"
            f" FROM {self.table(LABELS_TABLE)}"
            f" WHERE {window} GROUP BY {key}) AS l ON {on('l')}"
            f" LEFT JOIN (SELECT {key}, argMax(threat_level, scored_at) AS level FROM {self.table(SCORES_TABLE)}"
            f" WHERE {window} GROUP BY {key}) AS s ON {on('s')}")

    @staticmethod
    def _window(now: datetime | None, days: float) -> tuple[int, int]:
        end = now or datetime.now(timezone.utc)
        end = end if end.tzinfo else end.replace(tzinfo=timezone.utc)
        return int((end - timedelta(days=days)).timestamp()), int(end.timestamp())

    def baseline(self, features: Sequence[str], *, days: float, row_filter: str = "", max_rows: int = 1_000_000,
                 now: datetime | None = None) -> Baseline:
        """The human baseline: rows of the last ``days`` matching ``row_filter``, minus rows an
        analyst labelled bot and rows scored positive without an analyst's 'human' (analyst
        labels win). The newest ``max_rows`` are kept; returned oldest first."""
        start, end = self._window(now, days)
        # Float64 on the server, NULL as NaN: the result arrives as typed arrays (no Python
        # float per cell), and no alias, so ``row_filter`` still sees the raw columns.
        cols = ", ".join(f"ifNull(toFloat64(f.{ident(c, 'feature')}), nan)" for c in features)
        where = "f.window_start >= toDateTime({start:Int64}, 'UTC') AND f.window_start < toDateTime({end:Int64}, 'UTC')"
        if row_filter.strip():
            where += f" AND ({row_filter})"
        where += (" AND NOT (ifNull(l.label, '') = 'bot'"
                  " OR (ifNull(l.label, '') = '' AND has({pos:Array(String)}, ifNull(s.level, ''))))")
        sql = (f"SELECT toUnixTimestamp(f.window_start) AS ts, {cols} FROM {self.table(FEATURES_TABLE)} AS f"
               f"{self._label_joins()} WHERE {where}"
               " ORDER BY f.window_start DESC, f.src_ip, f.ja4, f.host LIMIT {max_rows:UInt64}")
        times, X = self._float_matrix(sql, {"start": start, "end": end, "pos": list(POSITIVE_LEVELS),
                                            "max_rows": int(max_rows)}, len(features))
        order = np.argsort(times, kind="stable")  # oldest first; ties keep the key order
        return Baseline(X=X[order], features=tuple(features), times=times[order], start=start, end=end)

    def labelled(self, features: Sequence[str], *, days: float = LABEL_DAYS, max_rows: int = 1_000_000,
                 now: datetime | None = None) -> Labelled:
        """Rows of the last ``days`` with a label: analyst labels first, else the newest score's
        threat level (positive: HIGH, CRITICAL, ANUBIS_DENY, KNOWN_BOT; negative: NORMAL,
        LEGITIMATE_BROWSER); other rows carry no label. ``kind``: the newest analyst label's bot
        kind ("" without one). Oldest first."""
        start, end = self._window(now, days)
        cols = ", ".join(f"f.{ident(c, 'feature')}" for c in features)
        y = ("multiIf(ifNull(l.label, '') = 'bot', 1, ifNull(l.label, '') = 'human', 0,"
             " has({pos:Array(String)}, ifNull(s.level, '')), 1, has({neg:Array(String)}, ifNull(s.level, '')), 0, -1)")
        sql = (f"SELECT * FROM (SELECT toUnixTimestamp(f.window_start) AS ts, {cols}, {y} AS y,"
               " if(ifNull(l.label, '') != '', 'analyst', 'score') AS src, ifNull(l.kind, '') AS kind"
               f" FROM {self.table(FEATURES_TABLE)} AS f{self._label_joins()}"
               " WHERE f.window_start >= toDateTime({start:Int64}, 'UTC') AND f.window_start < toDateTime({end:Int64}, 'UTC')"
               " ORDER BY f.window_start DESC, f.src_ip, f.ja4, f.host) WHERE y >= 0 LIMIT {max_rows:UInt64}")
        result = self.client.query(sql, parameters={"start": start, "end": end, "pos": list(POSITIVE_LEVELS),
                                                    "neg": list(NEGATIVE_LEVELS), "max_rows": int(max_rows)})
        columns = result.result_columns
        n = len(features)
        times, X = self._matrix(columns[:n + 1], n)
        is_bot = np.asarray(columns[n + 1] if columns else [], dtype=np.int32)
        source = np.asarray(columns[n + 2] if columns else [], dtype=object)
        kind = np.asarray(columns[n + 3] if columns else [], dtype=object)
        order = np.argsort(times, kind="stable")
        return Labelled(X=X[order], y=is_bot[order], source=source[order], times=times[order], features=tuple(features),
                        kind=kind[order])

    def _float_matrix(self, sql: str, parameters: Mapping[str, Any], n_features: int) -> tuple[np.ndarray, np.ndarray]:
        """The epoch column and the ``n_features`` Float64 columns of ``sql``, block by block
        into one float64 matrix: a 1M-row baseline costs its matrix, not 40M Python floats."""
        times: list[np.ndarray] = []
        blocks: list[np.ndarray] = []
        with self.client.query_column_block_stream(sql, parameters=parameters) as stream:
            for block in stream:
                times.append(np.asarray(block[0], dtype=np.int64))
                blocks.append(np.column_stack([np.asarray(c, dtype=np.float64) for c in block[1:n_features + 1]]))
        if not blocks:
            return np.zeros(0, dtype=np.int64), np.zeros((0, n_features))
        X = blocks[0] if len(blocks) == 1 else np.concatenate(blocks)
        del blocks
        return np.concatenate(times), X

    @staticmethod
    def _matrix(columns: Sequence[Sequence[Any]], n_features: int) -> tuple[np.ndarray, np.ndarray]:
        if not columns or not len(columns[0]):
            return np.zeros(0, dtype=np.int64), np.zeros((0, n_features))
        times = np.asarray(columns[0], dtype=np.int64)
        # None -> NaN: the float conversion does it, column by column.
        X = np.column_stack([np.asarray(c, dtype=np.float64) for c in columns[1:n_features + 1]])
        return times, X

    def last_decisions(self, model: str, limit: int = 10) -> list[dict[str, Any]]:
        """The newest rows of ``model_training_history`` for ``model``, newest first."""
        names = [c for c, _ in HISTORY_COLUMNS]
        result = self.client.query(
            f"SELECT {', '.join(ident(c) for c in names)} FROM {self.table(HISTORY_TABLE)}"
            " WHERE model_name = {model:String} ORDER BY decided_at DESC LIMIT {limit:UInt64}",
            parameters={"model": model, "limit": int(limit)})
        out = []
        for row in result.result_rows:
            item = dict(zip(names, row))
            for key in ("drift_json", "metrics_json"):
                try:
                    item[key[:-5]] = json.loads(item.pop(key) or "{}")
                except ValueError:
                    item[key[:-5]] = {}
            out.append(item)
        return out

    def count(self, table: str) -> int:
        return int(self.client.query(f"SELECT count() FROM {self.table(table)}").result_rows[0][0])
