"""A challenger that raises or hangs while scoring (issue 17): it is dropped and reported,
and the champion's batch goes on unchanged and undelayed. Real bundles, loaded through the
replica's own verified path (:meth:`stream_scorer.shadow.ShadowHolder.apply`)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import time
from datetime import datetime, timezone
from typing import Any, Callable

import orjson
import pytest

from ja4_core.bundle import LoadedBundle, ModelStore
from ja4_core.control import build_control, parse_control
from ja4_dev.simulator import TrafficSimulator
from stream_scorer import metrics
from stream_scorer.model_holder import load_verified
from stream_scorer.parsing import parse_batch
from stream_scorer.scoring import score_matrix, serialise
from stream_scorer.shadow import ShadowHolder, ShadowScored, score_beside
from tests.helpers import quick_bundle

NOW = datetime(2026, 11, 24, 21, 0, 1, tzinfo=timezone.utc)


class CountingPool(concurrent.futures.ThreadPoolExecutor):
    """The scoring thread, counting the work handed to it (a delay would be more work)."""

    def __init__(self) -> None:
        super().__init__(1, thread_name_prefix="score-test")
        self.submitted = 0

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> concurrent.futures.Future[Any]:
        self.submitted += 1
        return super().submit(fn, *args, **kwargs)


def _dropped(reason: str) -> float:
    return metrics.REGISTRY.get_sample_value("ja4_shadow_dropped_total", {"reason": reason}) or 0.0


def champion_records(values: list[bytes | None], champion: LoadedBundle) -> list[tuple[int, bytes]]:
    """What the champion alone sends for a batch (parsed afresh: serialising updates the records)."""
    parsed = parse_batch(values, champion.ensemble.features)
    return serialise(parsed, score_matrix(parsed, champion), champion, NOW).scores


def bundles_and_batches(tmp_path: Any) -> tuple[ModelStore, Any, LoadedBundle, list[list[bytes | None]],
                                                 list[list[tuple[int, bytes]]]]:
    """A champion (loaded), a challenger's bundle, two batches, and the champion's records of
    them with no challenger at all."""
    store = ModelStore(tmp_path / "models")
    v1 = quick_bundle(store, seed=1, n=1500, ntrees=30, epochs=1)
    v2 = quick_bundle(store, seed=2, n=1500, ntrees=30, epochs=1, set_current=False)
    champion = load_verified(v1.path, v1.manifest_sha256, 1)
    batches: list[list[bytes | None]] = [[orjson.dumps(r) for r in TrafficSimulator(seed=s, bot_share=0.2).records(200)]
                                         for s in (7, 8)]
    return store, v2, champion, batches, [champion_records(values, champion) for values in batches]


def test_a_challenger_that_raises_is_dropped_and_the_champions_batches_are_unchanged_and_undelayed(
        tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    store, v2, champion, batches, expected = bundles_and_batches(tmp_path)
    holder = ShadowHolder(store, "default")
    pool = CountingPool()
    dropped_before = _dropped("scoring")
    calls = []

    def raising_score(*args: Any, **kwargs: Any) -> None:
        calls.append(time.monotonic())
        raise FloatingPointError("challenger bug")

    async def run() -> list[tuple[list[tuple[int, bytes]], ShadowScored | None, float, int]]:
        msg = parse_control(build_control("shadow", model="default", version=v2.version, uri=v2.uri,
                                          manifest_sha256=v2.manifest_sha256, issued_by="test"))
        assert await holder.apply(msg) == "shadowing"
        assert holder.active is not None
        monkeypatch.setattr(holder.active.bundle.ensemble, "score", raising_score)
        loop = asyncio.get_running_loop()
        out = []
        for values in batches:  # as the worker's score stage does: the champion, then the challenger once
            parsed = parse_batch(values, champion.ensemble.features)
            scored = await loop.run_in_executor(pool, score_matrix, parsed, champion)
            called = len(calls)
            started = time.monotonic()
            shadow = await score_beside(holder, parsed, values, champion, 10_000, 5.0)
            waited = time.monotonic() - started
            out.append((serialise(parsed, scored, champion, NOW).scores, shadow, waited, len(calls) - called))
        return out

    try:
        (first, shadow1, _, work1), (second, shadow2, waited2, work2) = asyncio.run(run())
    finally:
        pool.shutdown()
    assert first == expected[0] and second == expected[1], "a champion score record changed"
    assert len(calls) == 1, "the challenger was called once, on the first batch, and never again"
    assert shadow1 is None and work1 == 1
    # The batch after the failure hands the challenger nothing more: it is not delayed.
    assert shadow2 is None and work2 == 0 and waited2 < 0.05
    assert holder.active is None
    assert _dropped("scoring") == dropped_before + 1
    described = holder.describe()  # the challenger part of ``/model``
    assert described["active"] is None
    assert described["dropped"]["reason"] == "scoring" and described["dropped"]["version"] == v2.version
    assert "challenger bug" in described["dropped"]["detail"]
    assert metrics.REGISTRY.get_sample_value("ja4_challenger_model_info",
                                             {"model_name": "default", "model_version": ""}) == 1.0


def test_a_challenger_that_hangs_is_dropped_at_its_deadline_and_never_holds_the_scoring_thread(
        tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    store, v2, champion, batches, expected = bundles_and_batches(tmp_path)
    holder = ShadowHolder(store, "default")
    pool = CountingPool()
    release = threading.Event()
    dropped_before = _dropped("timeout")

    def hanging_score(*args: Any, **kwargs: Any) -> None:
        release.wait(60)  # a challenger stuck in native code, say

    async def run() -> list[tuple[list[tuple[int, bytes]], ShadowScored | None, float, float]]:
        msg = parse_control(build_control("shadow", model="default", version=v2.version, uri=v2.uri,
                                          manifest_sha256=v2.manifest_sha256, issued_by="test"))
        assert await holder.apply(msg) == "shadowing"
        assert holder.active is not None
        monkeypatch.setattr(holder.active.bundle.ensemble, "score", hanging_score)
        loop = asyncio.get_running_loop()
        out = []
        for values in batches:
            parsed = parse_batch(values, champion.ensemble.features)
            started = time.monotonic()
            scored = await asyncio.wait_for(loop.run_in_executor(pool, score_matrix, parsed, champion), 10)
            champion_s = time.monotonic() - started
            started = time.monotonic()
            shadow = await score_beside(holder, parsed, values, champion, 10_000, 0.3)
            out.append((serialise(parsed, scored, champion, NOW).scores, shadow, time.monotonic() - started,
                        champion_s))
        return out

    try:
        (first, shadow1, waited1, _), (second, shadow2, waited2, champion2_s) = asyncio.run(run())
    finally:
        release.set()
        pool.shutdown()
    assert first == expected[0] and second == expected[1], "a champion score record changed"
    assert shadow1 is None and 0.25 <= waited1 < 5, "the batch waited for the challenger only until its deadline"
    # The next batch: the champion's scoring thread was free (the challenger hung on its own
    # thread) and the dropped challenger is not called again.
    assert shadow2 is None and waited2 < 0.05 and champion2_s < 10
    assert holder.active is None and holder.describe()["dropped"]["reason"] == "timeout"
    assert _dropped("timeout") == dropped_before + 1
