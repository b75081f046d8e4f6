"""Champion and challenger through real workers and the broker (issue 17)."""

from __future__ import annotations

import time

import orjson

from ja4_core.bundle import ModelStore
from ja4_core.control import build_control, control_key
from ja4_dev.simulator import TrafficSimulator
from tests.helpers import Collector, Worker, headers_of, produce, quick_bundle, record_key, records_to_messages, topic_env

KEY = "test-signing-key"
#: Fields of a score record that depend on the model (``scored_at`` is the clock's).
SCORE_FIELDS = ("anomaly_score", "eif_score", "ae_score", "xgb_prob", "threat_level", "model_version", "imputed")


def announce(bootstrap: str, topic: str, info, msg_type: str = "activate") -> None:
    produce(bootstrap, topic, [(control_key(msg_type, info.model), build_control(
        msg_type, model=info.model, version=info.version, uri=info.uri, manifest_sha256=info.manifest_sha256,
        issued_by="test", signing_key=KEY))])


def wait_for(workers: list[Worker], check, what: str, timeout: float = 40.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all(check(w.model()) for w in workers):
            return
        time.sleep(0.2)
    raise AssertionError(f"{what}: {[w.model() for w in workers]}")


def champion(info: dict) -> str | None:
    return (info.get("active") or {}).get("model_version")


def challenger(info: dict) -> str | None:
    return ((info.get("challenger") or {}).get("active") or {}).get("model_version")


def scores_by_key(messages) -> dict[tuple, list[dict]]:
    out: dict[tuple, list[dict]] = {}
    for m in messages:
        doc = orjson.loads(m.value())
        out.setdefault(record_key(doc), []).append(doc)
    return out


def test_a_challenger_shadows_without_changing_a_champion_score_and_a_late_replica_loads_both(
        kafka_bootstrap, unique, tmp_path) -> None:
    store = ModelStore(tmp_path / "models")
    v1 = quick_bundle(store, seed=1)
    v2 = quick_bundle(store, seed=2, set_current=False)
    v3 = quick_bundle(store, seed=3, set_current=False)
    env = topic_env(kafka_bootstrap, unique, store.root, SCORER_BATCH_WAIT_MS="20", CONTROL_SIGNING_KEY=KEY)
    records = TrafficSimulator(seed=7, bot_share=0.2).records(300)
    workers = [Worker(env, tmp_path).start()]
    try:
        workers[0].wait_ready()
        announce(kafka_bootstrap, env["TOPIC_CONTROL"], v1)
        wait_for(workers, lambda i: champion(i) == v1.version, "champion v1")
        produce(kafka_bootstrap, env["TOPIC_FEATURES"], records_to_messages(records))
        scores = Collector(kafka_bootstrap, env["TOPIC_SCORES"])
        scores.until_count(len(records))
        assert len(scores.messages) == len(records)

        announce(kafka_bootstrap, env["TOPIC_CONTROL"], v2, "shadow")
        wait_for(workers, lambda i: challenger(i) == v2.version and champion(i) == v1.version, "challenger v2")
        produce(kafka_bootstrap, env["TOPIC_FEATURES"], records_to_messages(records))  # the same records again
        scores.until_count(2 * len(records))
        shadow = Collector(kafka_bootstrap, env["TOPIC_SHADOW_SCORES"]).until_count(len(records))

        # A replica that starts while the challenger shadows loads both.
        late = Worker(env, tmp_path).start()
        workers.append(late)
        late.wait_ready(need_partitions=False)
        wait_for([late], lambda i: champion(i) == v1.version and challenger(i) == v2.version, "late replica")

        # A tampered challenger bundle is refused on every replica while the champion serves.
        ae = v3.path / "ae.pt"
        data = bytearray(ae.read_bytes())
        data[len(data) // 2] ^= 0x01
        ae.write_bytes(bytes(data))
        announce(kafka_bootstrap, env["TOPIC_CONTROL"], v3, "shadow")
        wait_for(workers, lambda i: ((i["challenger"] or {}).get("dropped") or {}).get("reason") == "refused:bundle"
                 and challenger(i) is None and champion(i) == v1.version, "tampered challenger refused")
        more = TrafficSimulator(seed=8).records(100)
        produce(kafka_bootstrap, env["TOPIC_FEATURES"], records_to_messages(more))
        scores.until_count(2 * len(records) + len(more))
        for w in workers:
            assert w.get("/ready")[0] in (200, 503)  # alive; the champion's readiness is checked below
        assert workers[0].get("/ready")[0] == 200
    finally:
        for w in workers:
            w.stop()
    by_key = scores_by_key(scores.messages)
    assert len(by_key) == len(records) + len(more)
    for rec in records:
        first, second = by_key[record_key(rec)]
        assert {f: first[f] for f in SCORE_FIELDS} == {f: second[f] for f in SCORE_FIELDS}, "a champion score changed"
        assert first["model_version"] == v1.version
    assert all(docs[0]["model_version"] == v1.version for docs in by_key.values()), "only the champion scores"
    shadow_docs = {record_key(orjson.loads(m.value())): (orjson.loads(m.value()), headers_of(m)) for m in shadow}
    assert set(shadow_docs) == {record_key(r) for r in records}
    for key, (doc, headers) in shadow_docs.items():
        assert headers["model-version"] == doc["model_version"] == v2.version
        assert doc["champion_version"] == v1.version
        assert doc["champion_anomaly_score"] == by_key[key][1]["anomaly_score"]
        assert doc["champion_threat_level"] == by_key[key][1]["threat_level"]
    assert any(d["anomaly_score"] != d["champion_anomaly_score"] for d, _ in shadow_docs.values())
    # The shadow records have the champion's keys (same partitioning).
    keys = {m.key() for m in shadow}
    assert keys == {str(r["src_ip"]).encode() for r in records}
