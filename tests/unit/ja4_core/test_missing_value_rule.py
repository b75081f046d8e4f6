"""One missing-value rule (issue 14): the scorer, the trainer's feature import and both file
readers give the same value for the same cell.

On c6ab0d5 they differ: the scorer imputes ``"1.5"``, the trainer's import parses it; the
scorer's CSV reader turns ``src_ip`` ``"10"`` into the number 10 (then dead-lettered) and
``"nan"`` into text, the trainer's CSV reader turns ``"12"`` into ``12.0`` and ``"nan"`` into NaN.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import orjson

from ja4_core.clickhouse_io import FEATURES_TABLE, connect
from ja4_core.features import feature_value
from stream_scorer.cli import _read_file
from stream_scorer.parsing import parse_batch
from trainer.cli import read_rows

KEY = {"window_start": "2026-11-24T21:00:00Z", "src_ip": "10", "ja4": "t13d1516h2_x", "host": "a.example"}
#: JSON cells, one feature each: numbers, booleans, null, numeric and other strings, containers.
CELLS = {"f_float": 1.5, "f_int": 2, "f_true": True, "f_false": False, "f_null": None, "f_numstr": "1.5",
         "f_text": "abc", "f_empty": "", "f_list": [1], "f_obj": {"a": 1}, "f_neg": -3.25, "f_big": 1e308,
         "f_zero": 0}
FEATURES = [*CELLS, "f_absent"]
EXPECTED = [1.5, 2.0, 1.0, 0.0, math.nan, math.nan, math.nan, math.nan, math.nan, math.nan, -3.25, 1e308, 0.0,
            math.nan]


def _same(a, b) -> None:
    np.testing.assert_array_equal(np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64))


def _scorer(rec: dict) -> list[float]:
    return parse_batch([orjson.dumps(rec)], FEATURES).X[0].tolist()


def _trainer_import(rec: dict, tmp_path: Path) -> list[float]:
    """Through the real import into the embedded ClickHouse and back (NULL = missing)."""
    with connect(f"chdb://{tmp_path / 'ch'}") as ch:
        ch.init_db(FEATURES)  # one Nullable(Float64) column per feature
        ch.insert_features([rec])
        cols = ", ".join(f"`{f}`" for f in FEATURES)
        row = ch.client.query(f"SELECT {cols} FROM {ch.table(FEATURES_TABLE)}").result_rows[0]
    return [math.nan if v is None else float(v) for v in row]


def test_same_json_cells_give_the_same_values_everywhere(tmp_path: Path) -> None:
    rec = {**KEY, **CELLS}
    _same(_scorer(rec), EXPECTED)
    _same([feature_value(rec.get(f)) for f in FEATURES], EXPECTED)
    _same(_trainer_import(rec, tmp_path), EXPECTED)
    path = tmp_path / "rows.ndjson"
    path.write_text(json.dumps(rec) + "\n")
    for reader in (_read_file, read_rows):
        (got,) = list(reader(path))
        assert got == rec
        _same(_scorer(got), EXPECTED)


def test_both_csv_readers_read_a_cell_alike(tmp_path: Path) -> None:
    """CSV has no types: a cell is the JSON value its text spells, then the one rule applies."""
    texts = {"f_int": "12", "f_float": " 1.5", "f_exp": "1e3", "f_true": "true", "f_text": "abc", "f_nan": "nan",
             "f_inf": "inf", "f_huge": "1e400", "f_empty": ""}
    key = {**KEY, "asn_number": "64500", "country_code": "01"}
    path = tmp_path / "rows.csv"
    header = [*key, *texts]
    path.write_text(",".join(header) + "\n" + ",".join([*key.values(), *texts.values()]) + "\n")
    (scorer_rec,) = list(_read_file(path))
    (trainer_rec,) = list(read_rows(path))
    feats = list(texts)
    expected = [12.0, 1.5, 1000.0, 1.0, math.nan, math.nan, math.nan, math.nan, math.nan]
    _same([feature_value(scorer_rec.get(f)) for f in feats], expected)
    _same([feature_value(trainer_rec.get(f)) for f in feats], expected)
    # Key and text context fields stay text, so the record is keyed (not dead-lettered) either way.
    for rec in (scorer_rec, trainer_rec):
        assert {k: rec[k] for k in KEY} == KEY and rec["country_code"] == "01" and rec["asn_number"] == 64500
        parsed = parse_batch([orjson.dumps(rec)], feats)
        assert parsed.rejects == [] and len(parsed) == 1
        _same(parsed.X[0], expected)
