"""The trainer's judgement of retrain requests (no Kafka): one accepted per cool-down, for
its model and the version it serves; forged, malformed, stale and old ones change nothing."""

from __future__ import annotations

import threading
from datetime import datetime, timedelta, timezone
from pathlib import Path

from ja4_core.bundle import ModelStore
from ja4_core.retrain_request import build_retrain_request
from ja4_core.settings import load_settings
from trainer.plan import TrainingPlan
from trainer.retrain_watch import RequestWatcher, requested_plan


def _req(version: str = "v1", *, model: str = "default", key: str | None = "k", age_s: float = 0.0,
         by: str = "replica") -> bytes:
    return build_retrain_request(model=model, version=version, issued_by=by, drift_share=0.4, threshold=0.3,
                                 drifted=["hits"], window_s=300, window_records=900, sustained_s=60,
                                 signing_key=key, issued_at=datetime.now(timezone.utc) - timedelta(seconds=age_s))


def _watcher(tmp_path: Path, clock: list[float]) -> RequestWatcher:
    store = ModelStore(tmp_path)
    (tmp_path / "default").mkdir()
    (tmp_path / "default" / "CURRENT").write_text("v1")
    settings = load_settings({"CONTROL_SIGNING_KEY": "k", "DRIFT_REQUEST_COOLDOWN_S": "600",
                              "MODEL_STORE": str(tmp_path)})
    return RequestWatcher(settings, store, threading.Event(), clock=lambda: clock[0])


def test_one_request_per_cooldown_for_the_served_version(tmp_path: Path, monkeypatch) -> None:
    import time

    clock = [time.time() - 601]  # then 601 s later: now
    w = _watcher(tmp_path, clock)
    monkeypatch.setattr(w.store, "current", lambda model: "v1")
    assert w.offer(_req(key="other")) == "refused:signature"
    assert w.offer(_req(key=None)) == "refused:signature"
    assert w.offer(b'{"type": "retrain_request"}') == "refused:malformed"
    assert w.offer(_req(model="other")) == "ignored:other_model"
    assert w.offer(_req("v0")) == "ignored:stale_version"
    assert w.offer(_req(age_s=3600)) == "ignored:old"
    assert w.offer(b'{"type": "activate"}') == "not_a_request"
    assert w.wait(0.0) is None  # nothing accepted so far
    assert w.offer(_req(by="replica-1")) == "accepted"
    assert w.offer(_req(by="replica-2")) == "ignored:cooldown"
    got = w.wait(0.0)
    assert got is not None and got.issued_by == "replica-1"
    assert w.wait(0.0) is None  # taken once
    clock[0] += 601
    assert w.offer(_req(by="replica-3")) == "accepted"


def test_a_request_makes_a_training_plan_a_drift_run_with_its_figures() -> None:
    from ja4_core.retrain_request import parse_retrain_request

    req = parse_retrain_request(_req(), ("k",))
    plan = requested_plan(TrainingPlan("train", "forced"), req)
    assert plan.reason == "drift"
    fields = plan.drift_fields
    assert fields["drift_forced"] and fields["drift_share"] == 0.4 and fields["drifted_features"] == ["hits"]
    assert fields["drift"]["requested"]["issued_by"] == "replica"
    assert requested_plan(TrainingPlan("skip", "too few rows"), req).reason == "too few rows"
