"""The sink's writer on the embedded ClickHouse (chdb): refused rows are found by splitting
the batch (O(bad · log n) inserts, not one per row), an unusable table is retried a bounded
number of times with backoff and then reported, never skipped (issue 13, items 2 and 6)."""

from __future__ import annotations

import asyncio
import math
import time

import pytest

from ja4_core.errors import SchemaError
from stream_scorer.sink import read_score
from stream_scorer.sink_writer import ScoreWriter, WriteFailed
from ja4_core.clickhouse_io import connect, is_data_error, score_row


def score(i: int, **over) -> dict:
    return {"window_start": "2026-11-24T10:00:00Z", "src_ip": f"10.0.{i // 250}.{i % 250}", "ja4": "t13d_a_b",
            "host": "shop.example", "anomaly_score": 0.4, "eif_score": 0.5, "threat_level": "NORMAL",
            "model_name": "default", "model_version": "v1", "scored_at": "2026-11-24T10:00:01.000+00:00", **over}


@pytest.fixture
def ch(chdb_url):
    with connect(chdb_url) as conn:
        conn.init_db()
        yield conn


def count(ch) -> int:
    return ch.client.query("SELECT count() FROM ja4.ml_all_scores").result_rows[0][0]


def test_rows_clickhouse_refuses_are_found_by_halving_not_row_by_row(ch) -> None:
    """A constraint makes ClickHouse itself refuse 3 rows of 2000: those 3 come back, the rest
    is written, in at most 1 + 2·3·log2(2000) inserts (row by row took 2000)."""
    ch.client.command("ALTER TABLE ja4.ml_all_scores ADD CONSTRAINT refuse CHECK NOT startsWith(host, 'refused')")
    n, bad_at = 2000, (5, 1000, 1999)
    rows = [score_row(score(i, host="refused.example" if i in bad_at else "shop.example")) for i in range(n)]
    writer = ScoreWriter(ch.insert_score_rows, attempts=3, backoff_s=0.01, is_data_error=is_data_error)
    refused = asyncio.run(writer.write(rows, list(range(n))))
    assert [item for item, _ in refused] == list(bad_at)
    assert all("refused by ClickHouse" in reason and "\n" not in reason[:200] for _, reason in refused)
    assert count(ch) == n - len(bad_at)
    assert writer.inserts <= 1 + 2 * len(bad_at) * math.ceil(math.log2(n)), writer.inserts
    assert writer.failed_attempts == 0 and writer.refused_rows == 3 and not writer.blocked


def test_an_unwritable_table_is_retried_with_backoff_then_reported(ch) -> None:
    """Not about the data (the table became a view): the same batch is tried `attempts` times,
    waiting backoff, 2·backoff, ...; then WriteFailed, and nothing is dead-lettered."""
    ch.client.command("RENAME TABLE ja4.ml_all_scores TO ja4.kept")
    ch.client.command("CREATE VIEW ja4.ml_all_scores AS SELECT * FROM ja4.kept")
    rows = [score_row(score(i)) for i in range(10)]
    writer = ScoreWriter(ch.insert_score_rows, attempts=4, backoff_s=0.1, is_data_error=is_data_error)
    started = time.monotonic()
    with pytest.raises(WriteFailed):
        asyncio.run(writer.write(rows, list(range(10))))
    assert time.monotonic() - started >= 0.1 + 0.2 + 0.4
    assert (writer.inserts, writer.failed_attempts, writer.retries) == (4, 4, 3)
    assert writer.blocked and writer.refused_rows == 0
    # Once the cause is gone, the same rows are written.
    ch.client.command("DROP VIEW ja4.ml_all_scores")
    ch.client.command("RENAME TABLE ja4.kept TO ja4.ml_all_scores")
    assert asyncio.run(writer.write(rows, list(range(10)))) == [] and not writer.blocked
    assert count(ch) == 10


@pytest.mark.parametrize("value", [b"not json", b"[1]", b'"x"', None], ids=["garbage", "array", "string", "tombstone"])
def test_unreadable_score_record_is_refused_with_a_reason(value) -> None:
    with pytest.raises(SchemaError, match="score record"):
        read_score(value)


@pytest.mark.parametrize("field, value", [
    ("window_start", "garbage"), ("window_start", 1e300), ("window_start", -5), ("window_start", 5_000_000_000),
    ("window_start", None), ("anomaly_score", "high"), ("scored_at", 1e300), ("imputed", 5), ("model_version", None),
], ids=repr)
def test_a_score_record_that_cannot_be_a_row_is_refused_before_clickhouse(field, value) -> None:
    """What an older scorer may have written: refused alone, with the field named."""
    import orjson

    with pytest.raises(SchemaError, match=field):
        read_score(orjson.dumps(score(0, **{field: value})))


def test_a_good_score_record_becomes_a_row() -> None:
    import json

    row = read_score(json.dumps(score(0, window_start=1795514400, asn_number=2**70)).encode())
    assert row[0] == 1795514400 and row[13] is None  # an ASN beyond Int64 is stored as NULL
