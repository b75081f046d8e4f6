"""The hot-reload steps without a broker: ordering, no-ops, refusals, retry."""

from __future__ import annotations

import asyncio
import shutil
from datetime import datetime, timedelta, timezone

import orjson
import pytest

from ja4_core.bundle import ModelStore
from ja4_core.control import build_activate, parse_control
from stream_scorer.model_holder import ModelHolder
from tests.helpers import quick_bundle


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    store = ModelStore(tmp_path_factory.mktemp("store") / "models")
    store.infos = [quick_bundle(store, seed=s, n=1500, ntrees=20, epochs=1, set_current=(s == 1)) for s in (1, 2)]
    return store


def msg(info, *, at: datetime, rollback: bool = False, uri: str | None = None):
    return parse_control(build_activate(model=info.model, version=info.version, uri=uri or info.uri,
                                        manifest_sha256=info.manifest_sha256, issued_by="t",
                                        rollback=rollback, issued_at=at))


def run(coro):
    return asyncio.run(coro)


def test_ordering_and_noops(store) -> None:
    v1, v2 = store.infos
    now = datetime.now(timezone.utc)

    async def scenario():
        h = ModelHolder(store, "default")
        assert await h.apply(msg(v1, at=now)) == "activated"
        assert await h.apply(msg(v1, at=now + timedelta(seconds=1))) == "ignored:same-version"
        assert await h.apply(msg(v2, at=now - timedelta(seconds=5))) == "ignored:older"
        assert h.active.version == v1.version
        assert await h.apply(msg(v2, at=now + timedelta(seconds=2))) == "activated"
        # A rollback obeys the same order: an old-dated one (a replay) changes nothing; a
        # rollback is a new announcement of the older version, with a new issued_at.
        assert await h.apply(msg(v1, at=now - timedelta(seconds=60), rollback=True)) == "ignored:older"
        assert h.active.version == v2.version
        assert await h.apply(msg(v1, at=now + timedelta(seconds=3), rollback=True)) == "activated"
        return h

    h = run(scenario())
    assert h.active.version == v1.version and h.ready.is_set()


def test_refusals_keep_previous_model(store, tmp_path) -> None:
    v1, v2 = store.infos
    now = datetime.now(timezone.utc)
    outside = tmp_path / "elsewhere" / v2.version
    shutil.copytree(v2.path, outside)

    async def scenario():
        h = ModelHolder(store, "default")
        await h.apply(msg(v1, at=now))
        assert await h.apply(msg(v2, at=now + timedelta(1), uri=outside.as_uri())) == "refused:uri"
        assert await h.apply(msg(v2, at=now + timedelta(2), uri="http://evil.example/x")) == "refused:uri"
        bad_sha = parse_control(orjson.dumps({**orjson.loads(build_activate(
            model="default", version=v2.version, uri=v2.uri, manifest_sha256="0" * 64, issued_by="t")),
            "issued_at": (now + timedelta(3)).isoformat()}))
        assert await h.apply(bad_sha) == "refused:bundle"
        return h

    h = run(scenario())
    assert h.active.version == v1.version
    assert h.outcomes["refused:uri"] == 2 and h.outcomes["refused:bundle"] == 1


def test_missing_bundle_is_retried_when_it_returns(store, tmp_path) -> None:
    v1, v2 = store.infos
    now = datetime.now(timezone.utc)
    hidden = tmp_path / "hidden"

    async def scenario():
        h = ModelHolder(store, "default")
        await h.apply(msg(v1, at=now))
        shutil.move(str(v2.path), hidden)
        try:
            assert await h.apply(msg(v2, at=now + timedelta(1))) == "refused:bundle"
            assert h.active.version == v1.version and h.pending_retry is not None
        finally:
            shutil.move(str(hidden), v2.path)
        assert await h.retry_pending() == "activated"
        return h

    h = run(scenario())
    assert h.active.version == v2.version and h.pending_retry is None


def test_current_pointer_fallback(store) -> None:
    async def scenario():
        h = ModelHolder(store, "default")
        assert await h.activate_current() == "activated"
        return h

    h = run(scenario())
    assert h.active.version == store.current("default") and h.active.source == "CURRENT"
