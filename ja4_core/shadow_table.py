"""``ml_shadow_scores``: the challenger's score records, and the judge's read of them
(the table itself is created by :meth:`ja4_core.clickhouse_io.ClickHouseIO.init_db`).

The sink writes every record of ``TOPIC_SHADOW_SCORES`` here (:func:`shadow_row`,
:func:`insert_shadow_rows`); each row holds the challenger's score and level *and* the
champion's for the same record, so the trainer compares the two models on exactly the same
records (:func:`shadow_pairs`, the read step of the judge in :mod:`trainer.champion`).
A ReplacingMergeTree keyed by the record and the challenger's version, read with ``FINAL``:
a batch the sink wrote twice counts once. Every value is bound as a query parameter.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Mapping, Sequence

import numpy as np

from ja4_core.clickhouse_io import (
    DATETIME_MAX,
    LABELS_TABLE,
    POSITIVE_LEVELS,
    SHADOW_COLUMNS,
    SHADOW_TABLE,
    ClickHouseIO,
    to_datetime,
)
from ja4_core.errors import SchemaError
from ja4_core.features import KEY_FIELDS, window_start_seconds

log = logging.getLogger(__name__)


def _number(doc: Mapping[str, Any], key: str) -> float:
    value = doc.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
        raise SchemaError(f"field {key!r} must be a number, got {value!r}"[:200])
    return float(value)


def shadow_row(doc: Mapping[str, Any]) -> list[Any]:
    """One shadow score record -> one row, in :data:`SHADOW_COLUMNS` order; a record that
    cannot be a row raises :class:`SchemaError` naming the field."""
    if not isinstance(doc, Mapping):
        raise SchemaError(f"a shadow score record must be a JSON object, got {type(doc).__name__}")
    for key in (*KEY_FIELDS, "threat_level", "model_version", "champion_version", "champion_threat_level"):
        if doc.get(key) is None:
            raise SchemaError(f"field {key!r} is missing")
    window = int(window_start_seconds(doc["window_start"]))
    if window > DATETIME_MAX:
        raise SchemaError(f"window_start {doc['window_start']!r} is beyond ClickHouse's DateTime")
    scored_at = (to_datetime(doc["scored_at"], "scored_at") if doc.get("scored_at") is not None
                 else datetime.now(timezone.utc))
    return [window, str(doc["src_ip"]), str(doc["ja4"]), str(doc["host"]), _number(doc, "anomaly_score"),
            str(doc["threat_level"]), str(doc.get("model_name") or ""), str(doc["model_version"]),
            str(doc["champion_version"]), _number(doc, "champion_anomaly_score"),
            str(doc["champion_threat_level"]), scored_at]


def insert_shadow_rows(ch: ClickHouseIO, rows: Sequence[Sequence[Any]]) -> int:
    """Insert rows built by :func:`shadow_row` (the sink checks each first)."""
    if not rows:
        return 0
    ch.client.insert(SHADOW_TABLE, rows, column_names=[c for c, _ in SHADOW_COLUMNS], database=ch.database)
    return len(rows)


@dataclass(frozen=True)
class ShadowPairs:
    """Analyst-labelled records scored by both models: ``y`` 1 = bot, 0 = human."""

    y: np.ndarray
    challenger: np.ndarray
    champion: np.ndarray
    #: True where the champion's threat level raised an alert (a positive level).
    champion_alert: np.ndarray

    @property
    def n_bots(self) -> int:
        return int(self.y.sum())

    @property
    def n_humans(self) -> int:
        return int(len(self.y) - self.y.sum())


def _no_pairs() -> ShadowPairs:
    empty = np.zeros(0)
    return ShadowPairs(np.zeros(0, dtype=np.int32), empty, empty, np.zeros(0, dtype=bool))


def shadow_pairs(ch: ClickHouseIO, *, model: str, challenger_version: str, champion_version: str,
                 since: datetime) -> ShadowPairs:
    """Records the challenger scored since ``since`` beside ``champion_version``, each with
    its newest analyst label (records without one are left out: score-derived levels would
    favour the champion that made them). Without the shadow or the labels table (no sink
    and no ``init-db`` yet) there is no evidence yet: empty pairs, and a warning naming it."""
    missing = [t for t in (SHADOW_TABLE, LABELS_TABLE) if not ch.columns(t)]
    if missing:
        log.warning("challenger %s: no %s table in %s yet, so no evidence to judge it on (start the sink or run "
                    "`stream-trainer init-db`)", challenger_version, " or ".join(missing), ch.database)
        return _no_pairs()
    key = "window_start, src_ip, ja4, host"
    on = " AND ".join(f"l.{k} = s.{k}" for k in KEY_FIELDS)
    sql = ("SELECT if(l.label = 'bot', 1, 0) AS y, s.anomaly_score, s.champion_anomaly_score,"
           " has({pos:Array(String)}, s.champion_threat_level) AS alert"
           f" FROM (SELECT * FROM {ch.table(SHADOW_TABLE)} FINAL WHERE model_name = {{model:String}}"
           " AND model_version = {challenger:String} AND champion_version = {champion:String}"
           " AND scored_at >= {since:DateTime64(3, 'UTC')}) AS s"
           f" INNER JOIN (SELECT {key}, argMax(label, created_at) AS label FROM {ch.table(LABELS_TABLE)}"
           f" GROUP BY {key}) AS l ON {on}"
           " WHERE l.label IN ('bot', 'human') ORDER BY s.window_start, s.src_ip, s.ja4, s.host")
    since = since if since.tzinfo else since.replace(tzinfo=timezone.utc)
    result = ch.client.query(sql, parameters={"model": model, "challenger": challenger_version,
                                              "champion": champion_version, "pos": list(POSITIVE_LEVELS),
                                              "since": since.astimezone(timezone.utc).replace(tzinfo=None)})
    cols = result.result_columns
    if not cols or not len(cols[0]):
        return _no_pairs()
    return ShadowPairs(np.asarray(cols[0], dtype=np.int32), np.asarray(cols[1], dtype=np.float64),
                       np.asarray(cols[2], dtype=np.float64), np.asarray(cols[3], dtype=bool))
