"""The bundle format and the model store (ja4_core.bundle).

Round trip, then every refusal of ``load_bundle`` / ``smoke_check`` on a copy of one
pristine bundle, then the store: versions, CURRENT, purge, URIs, names and the writer lock.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import isotree
import numpy as np
import pytest
import torch
import xgboost as xgb

from ja4_core import bundle as bundle_mod
from ja4_core.bundle import (CURRENT, MANIFEST, MAX_MANIFEST_BYTES, ModelStore, check_name, load_bundle,
                                  new_version, read_manifest, smoke_check, write_bundle)
from ja4_core.detectors import EIFDetector
from ja4_core.errors import BundleError, ControlError, StoreLockedError
from ja4_core.features import DEFAULT_FEATURES, SCORE_LEVELS
from ja4_dev.simulator import TrafficSimulator
from trainer.fit import FitConfig, fit_ensemble

FEATURES = DEFAULT_FEATURES[:12] + ("fingerprint_coherence_score",)


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def fitted():
    humans = TrafficSimulator(seed=21, bot_share=0.0).records(1500)
    X = np.array([[r[f] for f in FEATURES] for r in humans])
    lab = TrafficSimulator(seed=22, bot_share=0.5).records(400)
    Xl = np.array([[r[f] for f in FEATURES] for r in lab])
    yl = np.array([r["label"] == "bot" for r in lab], dtype=int)
    fit = fit_ensemble(X, FEATURES, FitConfig(eif_ntrees=50, ae_epochs=3), xgb_data=(Xl, yl))
    probe = TrafficSimulator(seed=23, bot_share=0.3).records(300)
    Xp = np.array([[r[f] for f in FEATURES] for r in probe])
    return fit.ensemble, X, Xp


@pytest.fixture(scope="module")
def pristine(fitted, tmp_path_factory):
    ens, X, _ = fitted
    store = ModelStore(tmp_path_factory.mktemp("pristine"))
    return write_bundle(store, ens, model="default", version="20260101T000000000Z-aaaa", smoke_rows=X[:6],
                        extra={"training": {"rows": len(X)}})


@pytest.fixture
def copy(pristine, tmp_path) -> Path:
    """A private copy of the pristine bundle to damage, at <store>/default/<version>."""
    dest = tmp_path / "store" / "default" / pristine.version
    shutil.copytree(pristine.path, dest)
    return dest


def edit_manifest(path: Path, change) -> None:
    m = json.loads((path / MANIFEST).read_text())
    change(m)
    (path / MANIFEST).write_text(json.dumps(m))


def refresh_sha(path: Path, name: str) -> None:
    key = "compact_files" if name.endswith(".safetensors") else "files"
    edit_manifest(path, lambda m: m[key].__setitem__(name, sha(path / name)))


# --- round trip -----------------------------------------------------------------------------

def test_round_trip_scores_are_identical(fitted, pristine):
    ens, _, Xp = fitted
    loaded = load_bundle(pristine.path)
    before, after = ens.score(Xp), loaded.ensemble.score(Xp)
    np.testing.assert_array_equal(after.eif, before.eif)
    np.testing.assert_allclose(after.ae, before.ae, rtol=0, atol=1e-6)
    np.testing.assert_allclose(after.xgb, before.xgb, rtol=0, atol=1e-7)
    np.testing.assert_allclose(after.anomaly, before.anomaly, rtol=0, atol=1e-6)
    assert loaded.ensemble.features == FEATURES
    np.testing.assert_array_equal(loaded.ensemble.medians, ens.medians)
    assert loaded.ensemble.thresholds == ens.thresholds
    assert (loaded.ensemble.ae_weight, loaded.ensemble.xgb_weight) == (ens.ae_weight, ens.xgb_weight)
    assert loaded.model == "default" and loaded.version == pristine.version
    assert loaded.manifest_sha256 == pristine.manifest_sha256 == sha(pristine.path / MANIFEST)
    assert loaded.size_bytes == pristine.size_bytes
    assert loaded.manifest["training"] == {"rows": 1500}
    smoke_check(loaded)


def test_written_bundle_layout(pristine):
    names = sorted(p.name for p in pristine.path.iterdir())
    assert names == ["ae.pt", "ae.weights.safetensors", "eif.forest.safetensors", "eif.isotree", MANIFEST, "xgb.ubj"]
    assert not [p for p in pristine.path.parent.iterdir() if p.name.startswith(".tmp-")]
    assert pristine.uri == pristine.path.as_uri()
    m = json.loads((pristine.path / MANIFEST).read_text(),
                   parse_constant=lambda c: pytest.fail(f"manifest holds {c}"))
    assert m["format_version"] == 1 and m["features"] == list(FEATURES)
    assert m["files"] == {n: sha(pristine.path / n) for n in ("ae.pt", "eif.isotree", "xgb.ubj")}
    assert m["compact_files"] == {n: sha(pristine.path / n) for n in ("ae.weights.safetensors", "eif.forest.safetensors")}
    assert list(m["thresholds"]) == list(SCORE_LEVELS[1:])
    assert m["eif"]["params"]["ndim"] == 3 and m["smoke"]["expected"]


def test_model_files_are_in_their_libraries_formats_without_pickle(pristine):
    state = torch.load(pristine.path / "ae.pt", weights_only=True)
    assert state and all(isinstance(v, torch.Tensor) for v in state.values())
    booster = xgb.Booster()
    booster.load_model(str(pristine.path / "xgb.ubj"))
    assert booster.num_features() == len(FEATURES)
    assert (pristine.path / "xgb.ubj").read_bytes()[:1] == b"{"  # UBJSON object, not JSON text
    forest = isotree.IsolationForest.import_model(str(pristine.path / "eif.isotree"))
    assert forest.ntrees == 50


def test_write_refuses_an_existing_version(fitted, pristine):
    with pytest.raises(BundleError, match="already exists"):
        write_bundle(ModelStore(pristine.path.parent.parent), fitted[0], model="default", version=pristine.version)


@pytest.mark.parametrize("version", ["../escape", "a/b", "..", ".hidden"])
def test_write_refuses_an_unsafe_version(fitted, tmp_path, version):
    with pytest.raises(BundleError, match="unsafe"):
        write_bundle(ModelStore(tmp_path), fitted[0], model="default", version=version)
    assert not (tmp_path / "escape").exists()


def test_failed_write_leaves_nothing_behind(fitted, tmp_path, monkeypatch):
    ens = fitted[0]

    def boom(directory):
        raise OSError("disk full")
    monkeypatch.setattr(ens.xgb, "save", boom)
    with pytest.raises(OSError, match="disk full"):
        write_bundle(ModelStore(tmp_path), ens, model="default", version="v1")
    assert list((tmp_path / "default").iterdir()) == []


def test_expected_manifest_sha_is_checked(copy, pristine):
    load_bundle(copy, expected_manifest_sha256=pristine.manifest_sha256)
    with pytest.raises(BundleError, match="differs from the announced"):
        load_bundle(copy, expected_manifest_sha256="0" * 64)


def test_edited_manifest_no_longer_matches_the_announced_sha(copy, pristine):
    edit_manifest(copy, lambda m: m["thresholds"].__setitem__("CRITICAL", 0.99))
    with pytest.raises(BundleError, match="differs from the announced"):
        load_bundle(copy, expected_manifest_sha256=pristine.manifest_sha256)


# --- refusals: files ---------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["eif.isotree", "ae.pt", "xgb.ubj"])
@pytest.mark.parametrize("where", ["first", "middle", "last"])
def test_one_changed_byte_is_refused(copy, name, where):
    path = copy / name
    data = bytearray(path.read_bytes())
    i = {"first": 0, "middle": len(data) // 2, "last": len(data) - 1}[where]
    data[i] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(BundleError, match=f"sha256 of {re.escape(name)}"):
        load_bundle(copy)


@pytest.mark.parametrize("name", ["eif.isotree", "ae.pt", "xgb.ubj"])
def test_missing_file_is_refused(copy, name):
    (copy / name).unlink()
    with pytest.raises(BundleError, match=f"{re.escape(name)} is missing"):
        load_bundle(copy)


def test_symlinked_file_is_refused_even_with_the_right_content(copy, tmp_path):
    outside = tmp_path / "outside.isotree"
    shutil.move(copy / "eif.isotree", outside)
    os.symlink(outside, copy / "eif.isotree")
    with pytest.raises(BundleError, match="not a regular file"):
        load_bundle(copy)


def test_missing_manifest_is_refused(copy):
    (copy / MANIFEST).unlink()
    with pytest.raises(BundleError, match="no manifest.json"):
        load_bundle(copy)


@pytest.mark.parametrize("body", [b"{oops", b"[1, 2]", b"\xff\xfe", b"null"])
def test_unreadable_manifest_is_refused(copy, body):
    (copy / MANIFEST).write_bytes(body)
    with pytest.raises(BundleError):
        load_bundle(copy)


def test_oversized_manifest_is_refused_before_reading(copy, monkeypatch):
    with open(copy / MANIFEST, "r+b") as fh:
        fh.truncate(MAX_MANIFEST_BYTES + 1)
    monkeypatch.setattr(Path, "read_bytes", lambda self: pytest.fail("the oversized manifest was read"))
    with pytest.raises(BundleError, match="exceeds"):
        load_bundle(copy)


@pytest.mark.parametrize("name", ["../x", "/etc/passwd", "eif.isotree/../../x", "extra.bin", "manifest.json", ""])
def test_manifest_referencing_an_unknown_or_path_file_is_refused(copy, name):
    edit_manifest(copy, lambda m: m["files"].__setitem__(name, "0" * 64))
    with pytest.raises(BundleError, match="not one of"):
        load_bundle(copy)


@pytest.mark.parametrize("member, file", [("eif", "../eif.isotree"), ("ae", "xgb.ubj"), ("xgb", "/tmp/xgb.ubj")])
def test_member_section_naming_another_file_is_refused(copy, member, file):
    edit_manifest(copy, lambda m: m[member].__setitem__("file", file))
    with pytest.raises(BundleError, match=f"{member} section must name"):
        load_bundle(copy)


def test_member_file_not_listed_under_files_is_refused(copy):
    edit_manifest(copy, lambda m: m["files"].pop("ae.pt"))
    with pytest.raises(BundleError, match="ae section"):
        load_bundle(copy)


@pytest.mark.parametrize("digest", ["abc", "G" * 64, "0" * 63, 5, None])
def test_malformed_sha_is_refused(copy, digest):
    edit_manifest(copy, lambda m: m["files"].__setitem__("eif.isotree", digest))
    with pytest.raises(BundleError, match="malformed"):
        load_bundle(copy)


@pytest.mark.parametrize("name, match, evaluators", [
    ("eif.isotree", "isotree", {"eif_evaluator": "isotree"}), ("ae.pt", "autoencoder", {"ae_evaluator": "torch"}),
    ("xgb.ubj", "XGBoost", {}), ("eif.forest.safetensors", "ja4-eif-forest", {}),
    ("ae.weights.safetensors", "ja4-ae-weights", {})])
def test_garbage_model_file_with_a_matching_sha_is_refused_cleanly(copy, name, match, evaluators):
    """Each file is parsed by the load that uses it (the portable EIF and AE files by the
    library evaluators; the compiled ones load from the compact files)."""
    (copy / name).write_bytes(b"definitely not a model" * 10)
    refresh_sha(copy, name)
    with pytest.raises(BundleError, match=match):
        load_bundle(copy, **evaluators)


_EXECUTED: list[str] = []


def _payload():
    _EXECUTED.append("code ran")
    return {}


class _Evil:
    def __reduce__(self):
        return (_payload, ())


def test_pickled_code_in_the_weights_file_is_refused_without_running(copy):
    torch.save({"weight": _Evil()}, copy / "ae.pt")  # torch.save pickles arbitrary objects
    refresh_sha(copy, "ae.pt")
    with pytest.raises(BundleError, match="autoencoder"):
        load_bundle(copy, ae_evaluator="torch")  # the load that parses ae.pt
    load_bundle(copy)  # the compiled evaluator loads from the compact file: ae.pt is only hashed
    assert _EXECUTED == []


# --- refusals: manifest contents -------------------------------------------------------------

@pytest.mark.parametrize("case", ["empty", "duplicate", "dash", "digit-first", "space", "empty-name", "number",
                                  "non-ascii", "not-a-list", "null"])
def test_unusable_feature_list_is_refused(copy, case):
    """Each case keeps one median per feature, so only the feature list itself can be at fault."""
    bad_name = {"dash": "bad-name", "digit-first": "1abc", "space": "a b", "empty-name": "", "number": 5,
                "non-ascii": "héllo"}

    def change(m):
        feats = m["features"]
        if case == "empty":
            m["features"], m["medians"] = [], []
        elif case == "duplicate":
            feats[1] = feats[0]
        elif case == "not-a-list":
            m["features"] = ",".join(feats)
        elif case == "null":
            m["features"] = None
        else:
            feats[0] = bad_name[case]
    edit_manifest(copy, change)
    with pytest.raises(BundleError, match="features"):
        load_bundle(copy)


def test_feature_name_with_a_trailing_newline_is_refused(copy):
    edit_manifest(copy, lambda m: m["features"].__setitem__(0, m["features"][0] + "\n"))
    with pytest.raises(BundleError, match="features"):
        load_bundle(copy)


@pytest.mark.parametrize("medians", ["short", "nan", "string", "missing"])
def test_unusable_medians_are_refused(copy, medians):
    def change(m):
        if medians == "short":
            m["medians"] = m["medians"][:-1]
        elif medians == "nan":
            m["medians"][0] = float("nan")  # json.dumps writes the NaN literal
        elif medians == "string":
            m["medians"][0] = "1.0"
        else:
            del m["medians"]
    edit_manifest(copy, change)
    with pytest.raises(BundleError, match="medians"):
        load_bundle(copy)


@pytest.mark.parametrize("thresholds", [
    {"LOW": 0.9, "MEDIUM": 0.5, "HIGH": 0.95, "CRITICAL": 0.99},
    {"LOW": 0.1, "MEDIUM": 0.2, "HIGH": 0.4, "CRITICAL": 0.3},
    {"LOW": 0.1, "MEDIUM": 0.2, "HIGH": 0.3},
    {"LOW": 0.1, "MEDIUM": "0.2", "HIGH": 0.3, "CRITICAL": 0.4},
    [0.1, 0.2, 0.3, 0.4],
], ids=["low-above-medium", "critical-below-high", "missing-level", "string", "list"])
def test_unusable_thresholds_are_refused(copy, thresholds):
    edit_manifest(copy, lambda m: m.__setitem__("thresholds", thresholds))
    with pytest.raises(BundleError, match="thresholds"):
        load_bundle(copy)


def test_equal_thresholds_are_accepted(copy):
    th = {"LOW": 0.5, "MEDIUM": 0.5, "HIGH": 0.7, "CRITICAL": 0.7}
    edit_manifest(copy, lambda m: m.__setitem__("thresholds", th))
    assert load_bundle(copy).ensemble.thresholds == th


def test_nan_thresholds_are_refused(copy):
    edit_manifest(copy, lambda m: m.__setitem__("thresholds", {k: float("nan") for k in SCORE_LEVELS[1:]}))
    with pytest.raises(BundleError, match="thresholds"):
        load_bundle(copy)


@pytest.mark.parametrize("version", [2, 0, "1", None, "missing"])
def test_wrong_format_version_is_refused(copy, version):
    def change(m):
        if version == "missing":
            del m["format_version"]
        else:
            m["format_version"] = version
    edit_manifest(copy, change)
    with pytest.raises(BundleError, match="format_version"):
        load_bundle(copy)


@pytest.mark.parametrize("weights", [{"ae": 1.5, "xgb": 0.2}, {"ae": 0.3, "xgb": -0.1}, {"ae": "0.3"}, [0.3, 0.2]])
def test_weights_outside_unit_interval_are_refused(copy, weights):
    edit_manifest(copy, lambda m: m.__setitem__("weights", weights))
    with pytest.raises(BundleError, match="weights"):
        load_bundle(copy)


def test_missing_eif_section_is_refused(copy):
    edit_manifest(copy, lambda m: m.__setitem__("eif", None))
    with pytest.raises(BundleError, match="eif"):
        load_bundle(copy)


def test_autoencoder_scaling_of_the_wrong_width_is_refused(copy):
    edit_manifest(copy, lambda m: m["ae"].__setitem__("min", m["ae"]["min"][:-1]))
    with pytest.raises(BundleError, match="autoencoder"):
        load_bundle(copy)


def test_read_manifest_opens_no_model_file(copy):
    (copy / "eif.isotree").write_bytes(b"tampered")
    manifest, digest = read_manifest(copy)  # structure only: does not look at the model files
    assert digest == sha(copy / MANIFEST) and manifest["features"] == list(FEATURES)


# --- smoke check -------------------------------------------------------------------------------

def test_smoke_check_refuses_recorded_expectations_that_do_not_match(copy):
    edit_manifest(copy, lambda m: m["smoke"].__setitem__("expected", [v + 0.01 for v in m["smoke"]["expected"]]))
    loaded = load_bundle(copy)
    with pytest.raises(BundleError, match="differ"):
        smoke_check(loaded)


@pytest.mark.parametrize("name", ["eif.isotree", "eif.forest.safetensors"])
def test_smoke_check_catches_a_swapped_model_with_a_valid_checksum(copy, fitted, name):
    _, X, _ = fitted
    other = EIFDetector(ntrees=50, random_seed=99).fit(X)
    if name == "eif.isotree":
        other.save(copy)  # overwrites eif.isotree with a different, valid forest
    else:
        (copy / name).write_bytes(other.compact_bytes(X[:20]))
    refresh_sha(copy, name)
    loaded = load_bundle(copy, eif_evaluator="isotree" if name == "eif.isotree" else "compiled")
    with pytest.raises(BundleError, match="differ"):
        smoke_check(loaded)


def test_smoke_rows_of_the_wrong_width_are_refused(copy):
    edit_manifest(copy, lambda m: m["smoke"].__setitem__("rows", [r[:-1] for r in m["smoke"]["rows"]]))
    with pytest.raises(BundleError, match="columns"):
        smoke_check(load_bundle(copy))


def test_smoke_check_without_recorded_rows_scores_the_medians(copy):
    edit_manifest(copy, lambda m: m.pop("smoke"))
    smoke_check(load_bundle(copy))


# --- the store -----------------------------------------------------------------------------

def fake_version(store: ModelStore, model: str, version: str) -> Path:
    path = store.root / model / version
    path.mkdir(parents=True)
    (path / MANIFEST).write_text("{}")
    return path


def test_versions_are_sorted_and_skip_incomplete_and_temporary_dirs(tmp_path):
    store = ModelStore(tmp_path)
    for v in ("20260103T000000000Z-cccc", "20260101T000000000Z-aaaa", "20260102T000000000Z-bbbb"):
        fake_version(store, "default", v)
    fake_version(store, "default", ".tmp-20260104T000000000Z-dddd-1234")
    (tmp_path / "default" / "20260105T000000000Z-eeee").mkdir()          # no manifest: incomplete
    (tmp_path / "default" / "stray-file").write_text("x")
    (tmp_path / "default" / CURRENT).write_text("20260101T000000000Z-aaaa\n")
    assert store.versions("default") == ["20260101T000000000Z-aaaa", "20260102T000000000Z-bbbb",
                                         "20260103T000000000Z-cccc"]
    assert store.versions("other") == []


def test_new_versions_sort_by_time_and_are_safe_names():
    t0 = datetime(2026, 11, 24, 22, 10, tzinfo=timezone.utc)
    ids = [new_version(t0 + timedelta(milliseconds=ms)) for ms in (0, 1, 999, 1000, 60_000)]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    for v in ids:
        assert check_name(v, "version") == v
    assert re.fullmatch(r"20261124T221000000Z-[0-9a-f]{4}", ids[0])


def test_set_current_points_at_a_version_without_leftovers(tmp_path):
    store = ModelStore(tmp_path)
    fake_version(store, "default", "v1")
    fake_version(store, "default", "v2")
    assert store.current("default") is None
    store.set_current("default", "v1")
    assert store.current("default") == "v1"
    store.set_current("default", "v2")
    assert store.current("default") == "v2"
    assert sorted(p.name for p in (tmp_path / "default").iterdir()) == [CURRENT, "v1", "v2"]


def test_set_current_refuses_a_missing_version(tmp_path):
    store = ModelStore(tmp_path)
    fake_version(store, "default", "v1")
    store.set_current("default", "v1")
    with pytest.raises(BundleError, match="no such bundle"):
        store.set_current("default", "v9")
    assert store.current("default") == "v1"


def test_set_current_is_atomic(tmp_path, monkeypatch):
    """The pointer is replaced by a rename: a crash before it leaves the old pointer whole."""
    store = ModelStore(tmp_path)
    fake_version(store, "default", "v1")
    fake_version(store, "default", "v2")
    store.set_current("default", "v1")
    seen = []

    def crash(src, dst):
        seen.append((Path(src).read_text(), Path(dst).name))
        raise OSError("power cut")
    monkeypatch.setattr(bundle_mod.os, "replace", crash)
    with pytest.raises(OSError):
        store.set_current("default", "v2")
    monkeypatch.undo()
    assert seen == [("v2\n", CURRENT)]  # the new content was complete before the rename
    assert (tmp_path / "default" / CURRENT).read_text() == "v1\n"


def test_purge_keeps_the_newest_and_never_the_current(tmp_path):
    store = ModelStore(tmp_path)
    versions = [f"2026010{i}T000000000Z-000{i}" for i in range(1, 8)]
    for v in versions:
        fake_version(store, "default", v)
    store.set_current("default", versions[0])  # rolled back to the oldest
    removed = store.purge("default", keep=3)
    assert removed == versions[1:4]
    assert store.versions("default") == [versions[0]] + versions[4:]
    assert store.current("default") == versions[0]
    assert store.purge("default", keep=3) == []


def test_purge_with_history_larger_than_the_store_removes_nothing(tmp_path):
    store = ModelStore(tmp_path)
    for v in ("v1", "v2"):
        fake_version(store, "default", v)
    assert store.purge("default", keep=5) == []
    assert store.versions("default") == ["v1", "v2"]


def test_purge_removes_only_stale_temporary_leftovers(tmp_path):
    store = ModelStore(tmp_path)
    fake_version(store, "default", "v1")
    old_dir = fake_version(store, "default", ".tmp-v0-1111")
    old_file = tmp_path / "default" / ".tmp-CURRENT-2222"
    old_file.write_text("v0")
    young_dir = fake_version(store, "default", ".tmp-v2-3333")  # a write in progress
    stale = time.time() - 7200
    for p in (old_dir, old_file):
        os.utime(p, (stale, stale))
    store.purge("default", keep=5)
    assert not old_dir.exists() and not old_file.exists()
    assert young_dir.exists()


def test_resolve_uri_accepts_the_exact_bundle_uri(tmp_path):
    store = ModelStore(tmp_path)
    path = fake_version(store, "default", "v1")
    assert store.resolve_uri(store.uri("default", "v1"), "default", "v1") == path
    assert store.resolve_uri(store.uri("default", "v1") + "/", "default", "v1") == path
    assert store.resolve_uri(str(path), "default", "v1") == path


def test_store_accepts_a_file_url_root(tmp_path):
    store = ModelStore(tmp_path.as_uri())
    assert store.root == tmp_path.resolve()


@pytest.mark.parametrize("uri", [
    "http://example.com/default/v1",
    "https://example.com/store/default/v1",
    "s3://bucket/default/v1",
    "ftp://host/default/v1",
    "file://evil.example.com{root}/default/v1",
    "file://{root}/default/v2",
    "file://{root}/other/v1",
    "file://{root}/default/v1/../../../outside/default/v1",
    "file://{root}/../outside/default/v1",
    "file://{root}/default/v1/eif.isotree",
    "file:///etc/passwd",
    "file://{root}/default/%2e%2e/%2e%2e/outside",
])
def test_resolve_uri_refuses_anything_but_the_bundle(tmp_path, uri):
    root = tmp_path / "store"
    store = ModelStore(root)
    fake_version(store, "default", "v1")
    with pytest.raises(ControlError):
        store.resolve_uri(uri.format(root=store.root), "default", "v1")


def test_resolve_uri_refuses_a_bundle_symlinked_out_of_the_store(tmp_path):
    store = ModelStore(tmp_path / "store")
    outside = tmp_path / "outside" / "v1"
    outside.mkdir(parents=True)
    (outside / MANIFEST).write_text("{}")
    (store.root / "default").mkdir(parents=True)
    os.symlink(outside, store.root / "default" / "v1")
    with pytest.raises(ControlError, match="outside"):
        store.resolve_uri(store.uri("default", "v1"), "default", "v1")


@pytest.mark.parametrize("model, version", [("..", "v1"), ("default", ".."), ("default", "../v1"),
                                            ("a/b", "v1"), ("default", "v1/../../x")])
def test_resolve_uri_refuses_unsafe_names(tmp_path, model, version):
    store = ModelStore(tmp_path)
    with pytest.raises((BundleError, ControlError)):
        store.resolve_uri(f"file://{tmp_path}/{model}/{version}", model, version)


@pytest.mark.parametrize("name", ["..", ".", "/", "", "a/b", "../x", "a\\b", ".hidden", "a..b", "-x", "a b",
                                  "x" * 129, "v1\x00", None, 5])
def test_check_name_refuses_unsafe_names(name):
    with pytest.raises(BundleError, match="unsafe"):
        check_name(name, "version")


@pytest.mark.parametrize("name", ["default", "20261124T221000Z-3f2a", "a", "A_b-c.d", "x" * 128])
def test_check_name_accepts_safe_names(name):
    assert check_name(name, "model name") == name


def test_check_name_refuses_a_trailing_newline():
    with pytest.raises(BundleError):
        check_name("v1\n", "version")


def test_store_refuses_unsafe_model_names(tmp_path):
    store = ModelStore(tmp_path)
    for bad in ("..", "../x", "a/b"):
        with pytest.raises(BundleError):
            store.model_dir(bad)
        with pytest.raises(BundleError):
            store.versions(bad)


def test_store_lock_refuses_a_second_holder(tmp_path):
    store = ModelStore(tmp_path)
    with store.lock("default"):
        with pytest.raises(StoreLockedError, match="locked"):
            with store.lock("default"):
                pass
        with store.lock("other"):  # the lock is per model
            pass
    with store.lock("default"):  # released on exit
        pass


def test_store_lock_waits_up_to_its_deadline(tmp_path):
    store = ModelStore(tmp_path)
    with store.lock("default"):
        started = time.monotonic()
        with pytest.raises(StoreLockedError):
            with store.lock("default", wait_s=0.5):
                pass
        assert 0.4 <= time.monotonic() - started < 3.0


# --- verified bytes are the bytes loaded (issue 13, item 8) ----------------------------------

@pytest.mark.parametrize("name", ["eif.isotree", "xgb.ubj", "ae.pt"])
def test_a_file_swapped_after_its_check_is_not_what_gets_loaded(copy, fitted, pristine, monkeypatch, name):
    """Replace a model file with another valid model (and fix its checksum) at the last moment
    before the parser runs: the loaded member still scores like the file that was hashed."""
    from ja4_core.detectors import AutoencoderDetector, XGBDetector

    ens, X, Xp = fitted
    other_dir = copy.parent / "other"
    other_dir.mkdir()
    if name == "eif.isotree":
        EIFDetector(ntrees=50, random_seed=99).fit(X).save(other_dir)
        cls = EIFDetector
    elif name == "xgb.ubj":
        y = (X[:, 0] > np.median(X[:, 0])).astype(int)
        XGBDetector(n_estimators=5).fit(X, y).save(other_dir)
        cls = XGBDetector
    else:
        AutoencoderDetector(epochs=1, random_seed=7).fit(X[:, ::-1].copy()).save(other_dir)
        cls = AutoencoderDetector
    original = cls.__dict__["load"].__func__

    def swap_then_load(klass, *args, **kwargs):  # the race: the store changes between check and parse
        shutil.copyfile(other_dir / name, copy / name)
        refresh_sha(copy, name)
        return original(klass, *args, **kwargs)

    monkeypatch.setattr(cls, "load", classmethod(swap_then_load))
    loaded = load_bundle(copy, eif_evaluator="isotree", ae_evaluator="torch")
    assert sha(copy / name) != pristine_sha(pristine, name), "the file on disk was swapped"
    reference = load_bundle(pristine.path, eif_evaluator="isotree", ae_evaluator="torch").ensemble.score(Xp)
    got = loaded.ensemble.score(Xp)
    member = {"eif.isotree": "eif", "xgb.ubj": "xgb", "ae.pt": "ae"}[name]
    np.testing.assert_allclose(getattr(got, member), getattr(reference, member), rtol=0, atol=1e-9)
    smoke_check(loaded)


def pristine_sha(pristine, name: str) -> str:
    return sha(pristine.path / name)


def test_build_ensemble_uses_only_the_bytes_given(copy, fitted):
    """``read_verified`` then ``build_ensemble``: the store can be emptied in between."""
    from ja4_core.bundle import build_ensemble, read_verified

    _, _, Xp = fitted
    manifest, _ = read_manifest(copy)
    files = read_verified(copy, manifest)
    shutil.rmtree(copy)
    ens = build_ensemble(manifest, files)
    assert np.all(np.isfinite(ens.score(Xp).anomaly))


def test_read_verified_refuses_a_changed_byte_without_parsing(copy):
    from ja4_core.bundle import read_verified

    manifest, _ = read_manifest(copy)
    data = bytearray((copy / "ae.pt").read_bytes())
    data[10] ^= 0xFF
    (copy / "ae.pt").write_bytes(bytes(data))
    with pytest.raises(BundleError, match="sha256 of ae.pt"):
        read_verified(copy, manifest)


# --- CURRENT and PUBLISHED pointers (issue 13, item 8) ---------------------------------------

@pytest.mark.parametrize("content", [b"", b"\n  \n", b"\xff\xfe\x00garbage", "versión".encode(), b"../../x",
                                     b"/etc/passwd", b"a/b", b"..", b"v1\x00", b"x" * 300, b"v" * 100_000])
def test_malformed_current_is_refused_with_a_reason(tmp_path, content):
    store = ModelStore(tmp_path)
    (tmp_path / "default").mkdir()
    (tmp_path / "default" / CURRENT).write_bytes(content)
    with pytest.raises(BundleError):
        store.read_current("default")
    assert store.current("default") is None  # the trainer's lenient view: "no current version"


def test_current_that_is_not_a_regular_file_is_refused(tmp_path):
    store = ModelStore(tmp_path)
    (tmp_path / "default" / CURRENT).mkdir(parents=True)
    with pytest.raises(BundleError, match="not a regular file"):
        store.read_current("default")
    target = tmp_path / "elsewhere"
    target.write_text("v1\n")
    (tmp_path / "default" / CURRENT).rmdir()
    os.symlink(target, tmp_path / "default" / CURRENT)
    with pytest.raises(BundleError, match="not a regular file"):
        store.read_current("default")


def test_read_current_reads_a_good_pointer_and_none_when_missing(tmp_path):
    store = ModelStore(tmp_path)
    assert store.read_current("default") is None
    (tmp_path / "default").mkdir()
    (tmp_path / "default" / CURRENT).write_text("20260101T000000000Z-aaaa\n")
    assert store.read_current("default") == "20260101T000000000Z-aaaa"


def test_published_sha_only_for_the_version_it_names(tmp_path):
    from ja4_core.bundle import PUBLISHED

    store = ModelStore(tmp_path)
    (tmp_path / "default").mkdir()
    assert store.published_sha("default", "v1") is None
    (tmp_path / "default" / PUBLISHED).write_text(json.dumps({"version": "v1", "manifest_sha256": "a" * 64}))
    assert store.published_sha("default", "v1") == "a" * 64
    assert store.published_sha("default", "v2") is None
    for bad in ("{oops", json.dumps({"version": "v1", "manifest_sha256": "nothex"}), "[]"):
        (tmp_path / "default" / PUBLISHED).write_text(bad)
        assert store.published_sha("default", "v1") is None
