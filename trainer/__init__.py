"""ja4-stream trainer: retrains the ensemble from ClickHouse and announces new versions."""
