"""The judge's read of shadow scores before the sink or ``init-db`` made the tables: no
evidence yet (the challenger keeps shadowing), not a failed trainer run."""

from __future__ import annotations

from datetime import datetime, timezone

from ja4_core.clickhouse_io import LABELS_TABLE, SHADOW_TABLE, connect
from ja4_core.shadow_table import shadow_pairs


def test_missing_shadow_table_is_no_evidence_yet(chdb_url: str) -> None:
    with connect(chdb_url) as ch:
        ch.client.command(f"CREATE DATABASE IF NOT EXISTS {ch.database}")
        assert not ch.columns(SHADOW_TABLE) and not ch.columns(LABELS_TABLE)
        pairs = shadow_pairs(ch, model="m", challenger_version="v2", champion_version="v1",
                             since=datetime(2026, 1, 1, tzinfo=timezone.utc))
        assert pairs.n_bots == 0 and pairs.n_humans == 0 and len(pairs.challenger) == 0
        ch.init_db()  # with the tables and nothing in them: the same answer, from the query
        assert ch.columns(SHADOW_TABLE)
        pairs = shadow_pairs(ch, model="m", challenger_version="v2", champion_version="v1",
                             since=datetime(2026, 1, 1, tzinfo=timezone.utc))
        assert len(pairs.y) == 0
