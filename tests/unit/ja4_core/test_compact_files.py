"""The bundle's compact files (issue 20): the compiled evaluators' arrays, hashed in the manifest,
memory-mapped on load, served without isotree or torch; bundles without them still load."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ja4_core.bundle import MANIFEST, ModelStore, load_bundle, smoke_check, write_bundle
from ja4_core.detectors import AutoencoderDetector, EIFDetector, arrays
from ja4_core.errors import BundleError
from ja4_core.features import DEFAULT_FEATURES
from ja4_dev.simulator import TrafficSimulator
from trainer.fit import FitConfig, fit_ensemble

FEATURES = DEFAULT_FEATURES[:12] + ("fingerprint_coherence_score",)
EIF_FILE, AE_FILE = EIFDetector.COMPACT_FILENAME, AutoencoderDetector.COMPACT_FILENAME
PORTABLE = {"eif_evaluator": "isotree", "ae_evaluator": "torch"}


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def edit_manifest(path: Path, change) -> None:
    m = json.loads((path / MANIFEST).read_text())
    change(m)
    (path / MANIFEST).write_text(json.dumps(m))


@pytest.fixture(scope="module")
def fitted():
    humans = TrafficSimulator(seed=31, bot_share=0.0).records(1500)
    X = np.array([[r[f] for f in FEATURES] for r in humans])
    lab = TrafficSimulator(seed=32, bot_share=0.5).records(400)
    Xl = np.array([[r[f] for f in FEATURES] for r in lab])
    yl = np.array([r["label"] == "bot" for r in lab], dtype=int)
    fit = fit_ensemble(X, FEATURES, FitConfig(eif_ntrees=50, ae_epochs=3), xgb_data=(Xl, yl))
    probe = TrafficSimulator(seed=33, bot_share=0.3).records(300)
    return fit.ensemble, X, np.array([[r[f] for f in FEATURES] for r in probe])


@pytest.fixture(scope="module")
def pristine(fitted, tmp_path_factory):
    ens, X, _ = fitted
    return write_bundle(ModelStore(tmp_path_factory.mktemp("pristine")), ens, model="default",
                        version="20260101T000000000Z-cccc", smoke_rows=X[:6])


@pytest.fixture
def copy(pristine, tmp_path) -> Path:
    dest = tmp_path / "store" / "default" / pristine.version
    shutil.copytree(pristine.path, dest)
    return dest


def test_compact_files_are_hashed_in_the_manifest_and_serve(pristine, fitted):
    _, _, Xp = fitted
    m = json.loads((pristine.path / MANIFEST).read_text())
    assert m["compact_files"] == {EIF_FILE: sha(pristine.path / EIF_FILE), AE_FILE: sha(pristine.path / AE_FILE)}
    assert m["eif"]["compact"] == EIF_FILE and m["ae"]["compact"] == AE_FILE
    assert EIF_FILE not in m["files"] and AE_FILE not in m["files"]  # older readers ignore compact_files
    fast, portable = load_bundle(pristine.path), load_bundle(pristine.path, **PORTABLE)
    assert fast.ensemble.eif.model_ is None and fast.ensemble.ae.net_ is None  # not parsed: arrays only
    assert (fast.ensemble.eif.evaluator, fast.ensemble.ae.evaluator) == ("compiled", "compiled")
    smoke_check(fast)
    got, ref = fast.ensemble.score(Xp), portable.ensemble.score(Xp)
    np.testing.assert_allclose(got.eif, ref.eif, rtol=0, atol=1e-9)
    np.testing.assert_allclose(got.ae, ref.ae, rtol=0, atol=1e-6)


@pytest.mark.parametrize("name", [EIF_FILE, AE_FILE])
@pytest.mark.parametrize("where", ["header", "middle", "last"])
def test_a_changed_byte_in_a_compact_file_is_refused(copy, name, where):
    data = bytearray((copy / name).read_bytes())
    data[{"header": 20, "middle": len(data) // 2, "last": len(data) - 1}[where]] ^= 0x01
    (copy / name).write_bytes(bytes(data))
    with pytest.raises(BundleError, match=f"sha256 of {name}"):
        load_bundle(copy)
    load_bundle(copy, **PORTABLE)  # the library evaluators do not read it


def test_a_damaged_portable_file_is_refused_even_when_the_compact_files_serve(copy):
    """Every file of ``files`` is still hashed: the truncated isotree file is not parsed, yet refused."""
    (copy / "eif.isotree").write_bytes((copy / "eif.isotree").read_bytes()[:-100])
    with pytest.raises(BundleError, match="sha256 of eif.isotree"):
        load_bundle(copy)


def test_an_old_bundle_without_compact_files_still_loads(copy, fitted):
    _, _, Xp = fitted
    for name in (EIF_FILE, AE_FILE):
        (copy / name).unlink()

    def drop(m):
        del m["compact_files"]
        m["eif"].pop("compact"), m["ae"].pop("compact")
    edit_manifest(copy, drop)
    old = load_bundle(copy)
    smoke_check(old)
    assert (old.ensemble.eif.evaluator, old.ensemble.ae.evaluator) == ("compiled", "compiled")
    assert old.ensemble.eif.model_ is not None  # built from isotree's file, checked against it
    reference = load_bundle(copy, **PORTABLE).ensemble.score(Xp).anomaly
    np.testing.assert_allclose(old.ensemble.score(Xp).anomaly, reference, rtol=0, atol=1e-6)


def test_a_listed_compact_file_that_is_missing_is_refused(copy):
    (copy / EIF_FILE).unlink()
    with pytest.raises(BundleError, match="missing"):
        load_bundle(copy)


def test_a_compact_file_of_a_newer_version_falls_back_to_the_portable_file(copy, fitted):
    ens, _, _ = fitted
    tables, meta = arrays.decode((copy / EIF_FILE).read_bytes(), format="ja4-eif-forest", version=1)
    (copy / EIF_FILE).write_bytes(arrays.encode(tables, format="ja4-eif-forest", version=99, extra=meta))
    edit_manifest(copy, lambda m: m["compact_files"].__setitem__(EIF_FILE, sha(copy / EIF_FILE)))
    loaded = load_bundle(copy)
    assert loaded.ensemble.eif.model_ is not None and loaded.ensemble.eif.evaluator == "compiled"
    smoke_check(loaded)


@pytest.mark.parametrize("damage", ["child out of range", "leaf out of range", "column out of range", "loop"])
def test_compact_forest_tables_that_the_walk_could_leave_are_refused(copy, damage):
    """The compiled walk does no bounds checks, so ids are checked once at load (a file with a
    matching sha is the trainer's, but a bug there must not become a crash here)."""
    tables, meta = arrays.decode((copy / EIF_FILE).read_bytes(), format="ja4-eif-forest", version=1)
    tables = {k: v.copy() for k, v in tables.items()}
    inode = tables["inode"]
    if damage == "child out of range":
        inode[0, 0] = len(inode) + 5
    elif damage == "leaf out of range":
        inode[0, 1] = -len(tables["leaf"]) - 1
    elif damage == "column out of range":
        inode[0, 2] = len(FEATURES)
    else:
        inode[1, 0] = 0  # a child pointing back to an earlier node
    (copy / EIF_FILE).write_bytes(arrays.encode(tables, format="ja4-eif-forest", version=1, extra=meta))
    edit_manifest(copy, lambda m: m["compact_files"].__setitem__(EIF_FILE, sha(copy / EIF_FILE)))
    with pytest.raises(BundleError, match=EIF_FILE):
        load_bundle(copy)


def test_the_mapped_compact_file_is_what_serves_when_the_path_is_replaced_after_the_check(copy, fitted, monkeypatch):
    """The race of a mapping: another valid forest renamed into place between the hash and the
    parse. The loaded forest is the verified one (the mapping stays on the opened inode)."""
    ens, X, Xp = fitted
    other = EIFDetector(ntrees=50, random_seed=99).fit(X).compact_bytes(X[:20])
    original = EIFDetector.__dict__["load_compact"].__func__

    def swap_then_load(klass, *args, **kwargs):
        (copy / "swap").write_bytes(other)
        (copy / "swap").rename(copy / EIF_FILE)
        return original(klass, *args, **kwargs)

    monkeypatch.setattr(EIFDetector, "load_compact", classmethod(swap_then_load))
    loaded = load_bundle(copy)
    assert (copy / EIF_FILE).read_bytes() == other, "the file on disk was replaced"
    smoke_check(loaded)
    np.testing.assert_allclose(loaded.ensemble.score(Xp).eif, ens.score(Xp).eif, rtol=0, atol=1e-9)


_NO_LIBRARIES = """
import sys
from ja4_core.bundle import load_bundle, smoke_check
b = load_bundle(sys.argv[1])
smoke_check(b)
print(sorted(m for m in ("torch", "isotree") if m in sys.modules))
"""


def test_loading_and_scoring_from_compact_files_imports_neither_torch_nor_isotree(pristine):
    out = subprocess.run([sys.executable, "-c", _NO_LIBRARIES, str(pristine.path)], capture_output=True,
                         text=True, timeout=120, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


def test_arrays_refuse_offsets_that_do_not_add_up():
    blob = bytearray(arrays.encode({"a": np.arange(4.0)}, format="t", version=1))
    with pytest.raises(BundleError, match="offsets|after the last"):
        arrays.decode(bytes(blob) + b"x", format="t", version=1)
    with pytest.raises(BundleError, match="not a u file"):
        arrays.decode(bytes(blob), format="u", version=1)
    with pytest.raises(BundleError, match="header"):
        arrays.decode(b"\xff" * 16, format="t", version=1)
