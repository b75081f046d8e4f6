"""A replica's reload hashes its bundle paced, on the loading thread alone (issue 20: the
longest score gaps of a reload window began at the publish, while every replica hashed ~48 MB
on two threads at once). Real bundles, loaded through the replica's own verified path."""

from __future__ import annotations

import hashlib
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from ja4_core import bundle as bundle_mod
from ja4_core.bundle import ModelStore, load_bundle, paced_sha256
from ja4_core.detectors import EIFDetector
from ja4_core.errors import BundleError
from stream_scorer import model_holder
from stream_scorer.model_holder import load_verified
from tests.helpers import quick_bundle

CHUNK = 64 * 1024  # small bundles: a chunk this size gives each file several pauses


@pytest.fixture(scope="module")
def info(tmp_path_factory: pytest.TempPathFactory) -> Any:
    return quick_bundle(ModelStore(tmp_path_factory.mktemp("paced")), seed=3, n=1500, ntrees=30, epochs=1)


class Pauses:
    """Stands in for ``time.sleep``: records each pause and the thread that paused."""

    def __init__(self) -> None:
        self.threads: list[str] = []
        self.real = time.sleep

    def __call__(self, seconds: float) -> None:
        self.threads.append(threading.current_thread().name)
        self.real(0)


def test_paced_digest_equals_the_plain_one() -> None:
    data = bytes(range(256)) * (3 * 4096 + 17)  # ~3.1 MiB, not a whole number of chunks
    assert paced_sha256(data, 0.0005) == hashlib.sha256(data).hexdigest()
    assert paced_sha256(data) == hashlib.sha256(data).hexdigest()


def test_reload_hashes_every_large_file_paced_on_its_own_thread(info: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bundle_mod, "HASH_CHUNK_BYTES", CHUNK)
    pauses = Pauses()
    monkeypatch.setattr(bundle_mod.time, "sleep", pauses)
    loaded = load_verified(info.path, info.manifest_sha256, 1)
    hashed = [info.path / EIFDetector.FILENAME, info.path / EIFDetector.COMPACT_FILENAME]
    expected = sum((p.stat().st_size - 1) // CHUNK for p in hashed)  # pauses between the chunks of each file
    assert expected > 0 and len(pauses.threads) >= expected
    # the isotree file the compiled evaluator never parses is no longer hashed on a second thread
    assert set(pauses.threads) == {threading.current_thread().name}
    assert loaded.version == info.version
    assert model_holder.RELOAD_HASH_PAUSE_S > 0


def test_paced_load_still_refuses_a_changed_unparsed_file(info: Any, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    import shutil

    monkeypatch.setattr(bundle_mod, "HASH_CHUNK_BYTES", CHUNK)
    dest = tmp_path / "default" / info.version
    shutil.copytree(info.path, dest)
    isotree = dest / EIFDetector.FILENAME
    data = bytearray(isotree.read_bytes())
    data[len(data) // 2] ^= 0xFF
    isotree.write_bytes(bytes(data))
    with pytest.raises(BundleError, match="sha256"):
        load_bundle(dest, expected_manifest_sha256=info.manifest_sha256, hash_pause_s=0.0001)
