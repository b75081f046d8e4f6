"""Shadow score records: built beside the champion's without touching them, and checked by
the sink before they become ``ml_shadow_scores`` rows."""

from __future__ import annotations

from datetime import datetime, timezone

import numpy as np
import orjson
import pytest

from ja4_core.ensemble import ScoreBatch
from ja4_core.errors import SchemaError
from ja4_core.shadow_table import shadow_row
from stream_scorer.parsing import parse_batch
from stream_scorer.scoring import ScoredMatrix
from stream_scorer.shadow import ShadowScored, shadow_outputs

NOW = datetime(2026, 11, 24, 21, 0, 1, tzinfo=timezone.utc)
RECORDS = [{"window_start": "2026-11-24T21:00:00Z", "src_ip": f"203.0.113.{i}", "ja4": "t13d", "host": "h",
            "hits": float(i)} for i in range(3)]


class _Bundle:
    model, version = "default", "v2"


class _Model:
    bundle, version = _Bundle(), "v2"


def _scored(scores: list[float], levels: list[str]) -> ScoredMatrix:
    arr = np.array(scores)
    return ScoredMatrix(ScoreBatch(anomaly=arr, eif=arr, ae=None, xgb=None), levels, np.zeros((3, 1), bool))


def test_one_shadow_record_per_record_with_both_models_figures_and_the_champions_key() -> None:
    values = [orjson.dumps(r) for r in RECORDS]
    parsed = parse_batch(values, ["hits"])
    before = [dict(r) for r in parsed.records]
    champion = _scored([0.1, 0.5, 0.9], ["NORMAL", "LOW", "HIGH"])
    shadow = ShadowScored(_Model(), parsed, _scored([0.2, 0.5, 0.4], ["NORMAL", "NORMAL", "LOW"]))  # type: ignore[arg-type]
    keys = [b"k0", b"k1", b"k2"]
    outs = shadow_outputs(parsed, champion, "v1", shadow, keys, "shadow-topic", NOW)
    assert [o.key for o in outs] == keys and {o.topic for o in outs} == {"shadow-topic"}
    assert all(o.headers == [("model-version", b"v2")] for o in outs)
    docs = [orjson.loads(o.value) for o in outs]
    assert [(d["anomaly_score"], d["champion_anomaly_score"], d["threat_level"], d["champion_threat_level"])
            for d in docs] == [(0.2, 0.1, "NORMAL", "NORMAL"), (0.5, 0.5, "NORMAL", "LOW"), (0.4, 0.9, "LOW", "HIGH")]
    assert all(d["model_version"] == "v2" and d["champion_version"] == "v1" for d in docs)
    assert parsed.records == before, "the champion's records are not touched"
    assert shadow_row(docs[0])[:4] == [int(datetime(2026, 11, 24, 21, tzinfo=timezone.utc).timestamp()), "203.0.113.0", "t13d", "h"]


def test_a_challenger_parse_that_does_not_pair_with_the_champions_is_skipped() -> None:
    values = [orjson.dumps(r) for r in RECORDS]
    parsed, fewer = parse_batch(values, ["hits"]), parse_batch(values[:2], ["hits"])
    shadow = ShadowScored(_Model(), fewer, _scored([0.2, 0.5, 0.4], ["NORMAL"] * 3))  # type: ignore[arg-type]
    assert shadow_outputs(parsed, _scored([0.1] * 3, ["NORMAL"] * 3), "v1", shadow, [None] * 3, "t", NOW) == []


@pytest.mark.parametrize("field,value", [("champion_version", None), ("anomaly_score", "high"),
                                         ("champion_anomaly_score", float("nan")), ("window_start", "garbage")])
def test_a_shadow_record_that_cannot_be_a_row_is_refused_naming_the_field(field: str, value: object) -> None:
    doc = {**RECORDS[0], "anomaly_score": 0.2, "threat_level": "NORMAL", "model_name": "default",
           "model_version": "v2", "champion_version": "v1", "champion_anomaly_score": 0.1,
           "champion_threat_level": "NORMAL", "scored_at": NOW.isoformat()}
    shadow_row(doc)
    doc[field] = value
    with pytest.raises(SchemaError):
        shadow_row(doc)
