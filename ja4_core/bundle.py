"""The model bundle format and the versioned model store: the only code that touches bundle files.

Layout (see the contract)::

    MODEL_STORE/<model>/<version>/manifest.json   format version, features, medians, weights,
                                                   thresholds, combination (per-member quantile
                                                   tables + the evidence behind the weights;
                                                   optional), drift digest, metrics, sha256 of files
    MODEL_STORE/<model>/<version>/eif.isotree     isotree's own serialisation
    MODEL_STORE/<model>/<version>/ae.pt           torch state dict (weights_only loadable)
    MODEL_STORE/<model>/<version>/xgb.ubj         optional, XGBoost UBJSON
    MODEL_STORE/<model>/<version>/eif.forest.safetensors, ae.weights.safetensors
                                                   optional compact files (under ``compact_files``):
                                                   the compiled evaluators' arrays, memory-mapped
    MODEL_STORE/<model>/CURRENT                   name of the active version
    MODEL_STORE/<model>/.lock                     held by a trainer while it writes

A bundle is written under a ``.tmp-`` name and renamed into place, so a reader never sees a
half-written one; :func:`load_bundle` verifies every checksum before any model file is
parsed. Nothing here uses pickle. The trainer and the scorer both import this module.

Compact files (issue 20): the manifest's ``compact_files`` maps each member's compact file to its
sha256, apart from ``files`` so that readers from before them load these bundles unchanged (they
ignore the key). A reader serving the compiled evaluators maps the compact files and builds the
members from them, without parsing isotree's file or importing torch; it still checks the sha256
of every file of ``files`` (through a mapping, without copying), so a damaged bundle is refused
whichever of its files is damaged. Bundles without compact files load as before.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import math
import mmap
import os
import re
import secrets
import shutil
import stat
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator, Mapping
from urllib.parse import unquote, urlparse

import numpy as np

from ja4_core.detectors import REGISTRY, REQUIRED, AutoencoderDetector, EIFDetector
from ja4_core.detectors.arrays import UnsupportedVersion
from ja4_core.ensemble import Ensemble, impute
from ja4_core.errors import BundleError, ControlError, StoreLockedError
from ja4_core.features import SCORE_LEVELS

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
CURRENT = "CURRENT"
#: The trainer's record of the last announcement the broker confirmed (``trainer.run`` writes it).
PUBLISHED = "PUBLISHED"
#: ``CURRENT`` holds one version name; anything longer is not ours.
MAX_POINTER_BYTES = 256
TMP_PREFIX = ".tmp-"
#: The only files a manifest may reference: plain names, never paths.
ALLOWED_FILES = frozenset(cls.FILENAME for cls in REGISTRY.values())
#: The compact files a manifest's ``compact_files`` may list, by member.
COMPACT_FILES: dict[str, str] = {m: cls.COMPACT_FILENAME for m, cls in REGISTRY.items() if cls.COMPACT_FILENAME}
#: Which evaluator setting value serves a member from its compact file.
_COMPACT_EVALUATOR = "compiled"

log = logging.getLogger(__name__)
MAX_MANIFEST_BYTES = 16 * 1024 * 1024
#: Largest model file read into memory for verification (the default EIF is ~37 MB).
MAX_MODEL_FILE_BYTES = 2 * 1024**3
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
_FEATURE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")


def check_name(value: str, what: str) -> str:
    """Refuse model names and versions that could escape the store (``..``, ``/``)."""
    if not isinstance(value, str) or not _SAFE_NAME.fullmatch(value) or ".." in value:
        raise BundleError(f"unsafe {what} {value!r}: letters, digits, '.', '_', '-' only")
    return value


def new_version(now: datetime | None = None) -> str:
    """A sortable, unique version id such as ``20261124T221000Z-3f2a``."""
    now = now or datetime.now(timezone.utc)
    return f"{now.strftime('%Y%m%dT%H%M%S')}{now.microsecond // 1000:03d}Z-{secrets.token_hex(2)}"


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# --- the store -------------------------------------------------------------------------

class ModelStore:
    """Versioned bundles of each model under one root directory."""

    def __init__(self, root: str | Path) -> None:
        if isinstance(root, str) and root.startswith("file://"):
            root = unquote(urlparse(root).path)
        self.root = Path(root).expanduser().resolve()

    def model_dir(self, model: str) -> Path:
        return self.root / check_name(model, "model name")

    def bundle_dir(self, model: str, version: str) -> Path:
        return self.model_dir(model) / check_name(version, "version")

    def uri(self, model: str, version: str) -> str:
        return self.bundle_dir(model, version).as_uri()

    def resolve_uri(self, uri: str, model: str, version: str) -> Path:
        """The bundle directory a control message's ``uri`` names, refused unless it is
        exactly ``<store>/<model>/<version>`` (no other scheme, no traversal, no symlink out)."""
        parsed = urlparse(uri)
        if parsed.scheme not in ("file", "") or (parsed.netloc not in ("", "localhost")):
            raise ControlError(f"uri {uri!r}: only file:// URLs inside the model store are accepted")
        expected = self.bundle_dir(model, version)
        path = Path(unquote(parsed.path))
        if not path.is_absolute():
            path = self.root / path
        if os.path.normpath(path) != str(expected):
            raise ControlError(f"uri {uri!r} does not name {expected} in the model store")
        if expected.exists() and not str(expected.resolve()).startswith(str(self.root) + os.sep):
            raise ControlError(f"uri {uri!r} resolves outside the model store")
        return expected

    def versions(self, model: str) -> list[str]:
        """Complete versions, oldest first (ids sort by time)."""
        base = self.model_dir(model)
        if not base.is_dir():
            return []
        return sorted(p.name for p in base.iterdir()
                      if p.is_dir() and not p.name.startswith(".") and (p / MANIFEST).is_file())

    def read_current(self, model: str) -> str | None:
        """The version ``CURRENT`` names, or None when there is no ``CURRENT``.

        :raises BundleError: ``CURRENT`` is not a small regular file holding one ASCII version
            name (empty, binary, huge, a path such as ``../../x``, a symlink, a directory)."""
        path = self.model_dir(model) / CURRENT
        raw = _read_regular(path, MAX_POINTER_BYTES, "pointer", missing_ok=True)
        if raw is None:
            return None
        try:
            version = raw.decode("ascii").strip()
        except UnicodeDecodeError:
            raise BundleError(f"{path}: not an ASCII version name") from None
        if not version:
            raise BundleError(f"{path}: empty")
        check_name(version, f"version in {path}")
        return version

    def current(self, model: str) -> str | None:
        """The version ``CURRENT`` names; None when it is missing or malformed (the trainer then
        writes a new one). The scorer uses :meth:`read_current`, which says what is wrong."""
        try:
            return self.read_current(model)
        except BundleError:
            return None

    def read_published(self, model: str) -> dict[str, Any]:
        """The trainer's ``PUBLISHED`` marker: the last announcement the broker confirmed
        ({} when there is none, or it is unreadable)."""
        try:
            raw = _read_regular(self.model_dir(model) / PUBLISHED, MAX_POINTER_BYTES * 64, "marker", missing_ok=True)
            marker = json.loads(raw) if raw is not None else None
        except (BundleError, ValueError):
            return {}
        return marker if isinstance(marker, dict) else {}

    def write_published(self, model: str, record: Mapping[str, Any]) -> None:
        """Replace the ``PUBLISHED`` marker atomically (temp file + rename)."""
        base = self.model_dir(model)
        tmp = base / f"{TMP_PREFIX}{PUBLISHED}-{secrets.token_hex(4)}"
        tmp.write_text(json.dumps(dict(record)))
        os.replace(tmp, base / PUBLISHED)

    def published_sha(self, model: str, version: str) -> str | None:
        """The manifest sha256 the ``PUBLISHED`` marker records for ``version``, or None when the
        marker names another version or is missing or unreadable."""
        marker = self.read_published(model)
        if marker.get("version") != version:
            return None
        sha = marker.get("manifest_sha256")
        return sha if isinstance(sha, str) and re.fullmatch(r"[0-9a-f]{64}", sha) else None

    def set_current(self, model: str, version: str) -> None:
        """Point ``CURRENT`` at a version atomically (write a temp file, then rename)."""
        if not (self.bundle_dir(model, version) / MANIFEST).is_file():
            raise BundleError(f"cannot make {model}/{version} current: no such bundle")
        base = self.model_dir(model)
        tmp = base / f"{TMP_PREFIX}{CURRENT}-{secrets.token_hex(4)}"
        tmp.write_text(version + "\n")
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, base / CURRENT)
        _fsync_dir(base)

    def purge(self, model: str, keep: int) -> list[str]:
        """Delete all but the newest ``keep`` versions, never the current one; also remove
        leftovers of interrupted writes. Returns the versions removed."""
        current = self.current(model)
        versions = self.versions(model)
        doomed = [v for v in versions[:-keep] if v != current] if keep > 0 else []
        for version in doomed:
            shutil.rmtree(self.bundle_dir(model, version), ignore_errors=True)
        base = self.model_dir(model)
        if base.is_dir():
            for leftover in base.glob(TMP_PREFIX + "*"):
                if time.time() - leftover.stat().st_mtime > 3600:
                    shutil.rmtree(leftover, ignore_errors=True) if leftover.is_dir() else leftover.unlink(missing_ok=True)
        return doomed

    @contextlib.contextmanager
    def lock(self, model: str, wait_s: float = 0.0) -> Iterator[None]:
        """Exclusive writer lock per model, so two trainers never interleave writes."""
        base = self.model_dir(model)
        base.mkdir(parents=True, exist_ok=True)
        fh = open(base / ".lock", "a+")
        deadline = time.monotonic() + wait_s
        try:
            while True:
                try:
                    fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        raise StoreLockedError(
                            f"model store {base} is locked by another trainer") from None
                    time.sleep(0.2)
            yield
        finally:
            fh.close()


# --- writing ---------------------------------------------------------------------------

@dataclass(frozen=True)
class BundleInfo:
    model: str
    version: str
    path: Path
    uri: str
    manifest_sha256: str
    size_bytes: int


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def build_manifest(ensemble: Ensemble, *, model: str, version: str,
                   extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """The manifest body (without file checksums) for a fitted ensemble."""
    for name in ensemble.features:
        if not _FEATURE_NAME.fullmatch(name):
            raise BundleError(f"feature name {name!r} is not an identifier")
    manifest: dict[str, Any] = {
        "format_version": FORMAT_VERSION,
        "model_name": model,
        "version": version,
        "created_at": datetime.now(timezone.utc).isoformat(),
        "features": list(ensemble.features),
        "medians": [float(m) for m in ensemble.medians],
        "weights": {"ae": ensemble.ae_weight, "xgb": ensemble.xgb_weight},
        "thresholds": {k: float(ensemble.thresholds[k]) for k in SCORE_LEVELS[1:]},
    }
    members = ensemble.members()
    for member, cls in REGISTRY.items():  # one section per registered member, None when absent
        det = members.get(member)
        manifest[member] = {"file": cls.FILENAME, **det.manifest_section()} if det is not None else None
    if ensemble.combination is not None:
        # how the members are combined, decided by the trainer (trainer.combine): the per-member
        # quantile tables the scorer needs, the weights and the evidence behind them
        manifest["combination"] = ensemble.combination
    manifest.update(extra or {})
    return manifest


def smoke_section(ensemble: Ensemble, rows: np.ndarray) -> dict[str, Any]:
    """A few baseline rows and their expected combined scores, for the load-time smoke test."""
    filled, _ = impute(np.asarray(rows, dtype=np.float64), ensemble.medians)
    expected = ensemble.score(filled).anomaly
    return {"rows": filled.tolist(), "expected": expected.tolist()}


def write_bundle(store: ModelStore, ensemble: Ensemble, *, model: str, version: str | None = None,
                 extra: dict[str, Any] | None = None, smoke_rows: np.ndarray | None = None) -> BundleInfo:
    """Write a bundle under a temporary name, fsync it, then rename it into place.

    The caller points ``CURRENT`` at it and announces it only after this returns.
    """
    version = check_name(version or new_version(), "version")
    final = store.bundle_dir(model, version)
    if final.exists():
        raise BundleError(f"bundle {model}/{version} already exists")
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.parent / f"{TMP_PREFIX}{version}-{secrets.token_hex(4)}"
    tmp.mkdir()
    try:
        files = [det.save(tmp) for det in ensemble.members().values()]
        manifest = build_manifest(ensemble, model=model, version=version, extra=extra)
        if smoke_rows is not None and len(smoke_rows):
            manifest["smoke"] = smoke_section(ensemble, smoke_rows)
        manifest["files"] = {name: sha256_file(tmp / name) for name in files}
        compact = _write_compact(tmp, ensemble, manifest)
        if compact:
            manifest["compact_files"] = compact
        body = json.dumps(manifest, default=_json_default, indent=1, allow_nan=False).encode()
        (tmp / MANIFEST).write_bytes(body)
        for name in [*files, *compact, MANIFEST]:
            with open(tmp / name, "rb") as fh:
                os.fsync(fh.fileno())
        _fsync_dir(tmp)
        os.rename(tmp, final)
        _fsync_dir(final.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    size = sum(p.stat().st_size for p in final.iterdir())
    return BundleInfo(model, version, final, final.as_uri(), hashlib.sha256(body).hexdigest(), size)


def _write_compact(directory: Path, ensemble: Ensemble, manifest: dict[str, Any]) -> dict[str, str]:
    """Each member's compact file (when its compiled evaluator matched the library on the probe
    rows), named in the member's section as ``compact``; returns {file: sha256}."""
    probe = evaluator_probe(manifest, ensemble.medians)
    written: dict[str, str] = {}
    for member, det in ensemble.members().items():
        name = COMPACT_FILES.get(member)
        data = det.compact_bytes(probe) if name else None
        if name and data is not None:
            (directory / name).write_bytes(data)
            manifest[member]["compact"] = name
            written[name] = hashlib.sha256(data).hexdigest()
    return written


# --- reading ---------------------------------------------------------------------------

@dataclass(frozen=True)
class LoadedBundle:
    """A verified, loaded bundle: the ensemble plus its manifest."""

    model: str
    version: str
    path: Path
    manifest: dict[str, Any]
    manifest_sha256: str
    ensemble: Ensemble
    size_bytes: int


def _read_regular(path: Path, limit: int, what: str, missing_ok: bool = False) -> bytes | None:
    """Read a regular file once, through one descriptor: never a symlink, never more than
    ``limit`` bytes (so a huge or endless file costs at most that). None if it is missing
    and ``missing_ok``."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0))
    except FileNotFoundError:
        if missing_ok:
            return None
        raise BundleError(f"{path.parent}: no {path.name}" if what == "manifest" else
                          f"{path.parent}: {path.name} is missing or not a regular file") from None
    except OSError as exc:  # ELOOP for a symlink, EACCES, ...
        raise BundleError(f"{path.parent}: {what} {path.name} is missing or not a regular file ({exc.strerror})") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise BundleError(f"{path.parent}: {what} {path.name} is missing or not a regular file")
        if info.st_size > limit:  # refused before reading; the loop below bounds a growing file
            raise BundleError(f"{path}: {what} of {info.st_size} bytes exceeds {limit}")
        chunks: list[bytes] = []
        size = 0
        while size <= limit:
            chunk = os.read(fd, min(1 << 20, limit + 1 - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    finally:
        os.close(fd)
    if size > limit:
        raise BundleError(f"{path}: {what} exceeds {limit} bytes")
    return b"".join(chunks)


def _read_required(path: Path, limit: int, what: str) -> bytes:
    data = _read_regular(path, limit, what)
    assert data is not None  # missing_ok=False raises instead
    return data


def read_manifest(path: Path, expected_sha256: str | None = None) -> tuple[dict[str, Any], str]:
    """Read (once), size-check, checksum and structurally validate a manifest; open no model file."""
    manifest, digest, _ = _read_manifest_sized(path, expected_sha256)
    return manifest, digest


def _read_manifest_sized(path: Path, expected_sha256: str | None) -> tuple[dict[str, Any], str, int]:
    mpath = path / MANIFEST
    body = _read_required(mpath, MAX_MANIFEST_BYTES, "manifest")
    digest = hashlib.sha256(body).hexdigest()
    if expected_sha256 is not None and digest != expected_sha256:
        raise BundleError(f"{mpath}: sha256 {digest[:12]}… differs from the announced {expected_sha256[:12]}…")
    try:
        manifest = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BundleError(f"{mpath}: not valid JSON ({exc})") from None
    _validate_manifest(manifest, mpath)
    return manifest, digest, len(body)


def _validate_manifest(m: Any, where: Path) -> None:
    def bad(reason: str) -> BundleError:
        return BundleError(f"{where}: {reason}")

    if not isinstance(m, dict):
        raise bad("manifest is not a JSON object")
    if m.get("format_version") != FORMAT_VERSION:
        raise bad(f"format_version {m.get('format_version')!r} is not supported (expected {FORMAT_VERSION})")
    feats = m.get("features")
    if not isinstance(feats, list) or not feats or not all(isinstance(f, str) and _FEATURE_NAME.fullmatch(f) for f in feats):
        raise bad("features must be a non-empty list of identifiers")
    if len(set(feats)) != len(feats):
        raise bad("features lists a name twice")
    medians = m.get("medians")
    if not isinstance(medians, list) or len(medians) != len(feats) or not all(
            isinstance(v, (int, float)) and np.isfinite(v) for v in medians):
        raise bad("medians must be one finite number per feature")
    thresholds = m.get("thresholds")
    if not isinstance(thresholds, dict) or any(not isinstance(thresholds.get(k), (int, float)) for k in SCORE_LEVELS[1:]):
        raise bad(f"thresholds must give a number for each of {', '.join(SCORE_LEVELS[1:])}")
    cuts = [thresholds[k] for k in SCORE_LEVELS[1:]]
    if any(isinstance(c, bool) or not math.isfinite(c) for c in cuts):
        raise bad("thresholds must be finite numbers")
    if cuts != sorted(cuts):
        raise bad("thresholds must increase from LOW to CRITICAL")
    files = m.get("files")
    if not isinstance(files, dict) or not files:
        raise bad("files must map file names to sha256")
    for name, digest in files.items():
        if name not in ALLOWED_FILES:
            raise bad(f"references {name!r}, which is not one of {', '.join(sorted(ALLOWED_FILES))}")
        if not isinstance(digest, str) or not re.fullmatch(r"[0-9a-f]{64}", digest):
            raise bad(f"sha256 of {name} is malformed")
    for member, cls in REGISTRY.items():
        fname = cls.FILENAME
        section = m.get(member)
        if section is None:
            if member in REQUIRED:
                raise bad(f"has no {member} section")
            continue
        if not isinstance(section, dict) or section.get("file") != fname or fname not in files:
            raise bad(f"{member} section must name {fname}, listed under files")
    compact = m.get("compact_files", {})
    if not isinstance(compact, dict):
        raise bad("compact_files must map file names to sha256")
    for name, digest in compact.items():
        if name not in COMPACT_FILES.values():
            raise bad(f"compact_files references {name!r}, which is not one of {', '.join(sorted(COMPACT_FILES.values()))}")
        if not isinstance(digest, str) or not re.fullmatch(r"[0-9a-f]{64}", digest):
            raise bad(f"sha256 of {name} is malformed")
    for member, name in COMPACT_FILES.items():
        section = m.get(member)
        if isinstance(section, dict) and "compact" in section and (section["compact"] != name or name not in compact):
            raise bad(f"{member} section's compact file must be {name}, listed under compact_files")
    weights = m.get("weights", {})
    if not isinstance(weights, dict) or not all(
            isinstance(weights.get(k, 0.0), (int, float)) and 0.0 <= weights.get(k, 0.0) <= 1.0 for k in ("ae", "xgb")):
        raise bad("weights must be numbers in [0, 1]")
    combination = m.get("combination")
    if combination is not None:
        _validate_combination(combination, m, bad)


def _validate_combination(c: Any, m: dict[str, Any], bad: Any) -> None:
    """The ``combination`` section: null tables (explicit weights on raw scores), or one quantile
    table per member present, each two equally
    long lists, ``q`` finite and strictly increasing, ``p`` non-decreasing inside (0, 1)."""
    if not isinstance(c, dict) or not isinstance(c.get("tables"), (dict, type(None))):
        raise bad("combination must be an object with quantile tables (or null tables: raw scores blended)")
    if c["tables"] is None:
        return
    present = {"eif"} | {k for k in ("ae", "xgb") if m.get(k)}
    tables = c["tables"]
    if set(tables) != present:
        raise bad(f"combination tables must cover exactly the members {sorted(present)}, got {sorted(tables)}")
    for member, t in tables.items():
        q, p = (t.get("q"), t.get("p")) if isinstance(t, dict) else (None, None)
        ok = (isinstance(q, list) and isinstance(p, list) and 0 < len(q) == len(p)
              and all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in q + p)
              and all(b > a for a, b in zip(q, q[1:])) and all(b >= a for a, b in zip(p, p[1:]))
              and all(0.0 < v < 1.0 for v in p))
        if not ok:
            raise bad(f"combination table of {member} must be equally long q (strictly increasing) and p "
                      "(non-decreasing, inside (0, 1)) lists of finite numbers")


#: Bytes hashed between two pauses of a paced hash (:func:`paced_sha256`): ~1 ms of CPU here.
HASH_CHUNK_BYTES = 1 << 20


def paced_sha256(data: bytes | mmap.mmap | memoryview, pause_s: float = 0.0) -> str:
    """The sha256 (hex) of ``data``; with ``pause_s`` > 0, hashed :data:`HASH_CHUNK_BYTES` at a
    time with a sleep of ``pause_s`` after each chunk but the last.

    Why: a replica's hot reload hashes ~48 MB (the isotree file its compiled evaluator never
    parses, and the compact forest), ~46 ms of a core at full speed. Every replica reads the
    same control message and reloads at the same moment, so on a box of 2 cores shared with the
    replicas' own pipelines and the broker, unpaced hashes took the cores from the pipelines:
    the longest gap between score arrivals of a reload window began at the publish, before any
    swap (HR's probe, 2026-12-01). Paced, the hash uses at most about half a core, so a batch
    waiting for a core finds one; the reload takes ~50 ms longer."""
    if pause_s <= 0 or len(data) <= HASH_CHUNK_BYTES:
        return hashlib.sha256(data).hexdigest()
    digest = hashlib.sha256()
    view = memoryview(data)
    try:
        for start in range(0, len(view), HASH_CHUNK_BYTES):
            if start:
                time.sleep(pause_s)
            digest.update(view[start:start + HASH_CHUNK_BYTES])  # releases the GIL over the chunk
    finally:
        view.release()
    return digest.hexdigest()


def map_verified(path: Path, expected_sha256: str, pause_s: float = 0.0) -> mmap.mmap:
    """Map a bundle file read-only and check the sha256 of the mapped bytes: the mapping
    returned is what the model is then built from, in place (no copy).

    Why this is still verify-before-use (no time-of-check/time-of-use gap through the path):
    the file is opened once (never through a symlink) and mapped from that descriptor, so the
    mapping is of the inode that was opened, not of whatever the path names later; the hash is
    computed over the mapped pages themselves, and the model reads those same pages. The store
    changes only by writing new files and renaming them into place (bundles, ``CURRENT``), and
    a rename, a replacement or a deletion of the path after the check leaves this mapping on
    the verified inode (a deleted file lives on until unmapped). What a mapping cannot rule
    out, and a copy would, is an in-place write into that same inode after the check - by a
    writer who may already rewrite the store, which nothing in this product does. Against such
    a writer the smoke check of the load (recorded scores) is the remaining line.

    ``pause_s``: the hash is paced (:func:`paced_sha256`).

    :raises BundleError: missing, not a regular file, empty, too large, or a different sha256."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0))
    except OSError as exc:  # FileNotFoundError, ELOOP for a symlink, EACCES, ...
        raise BundleError(f"{path.parent}: file {path.name} is missing or not a regular file ({exc.strerror})") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise BundleError(f"{path.parent}: file {path.name} is missing or not a regular file")
        if not 0 < info.st_size <= MAX_MODEL_FILE_BYTES:
            raise BundleError(f"{path}: file of {info.st_size} bytes (empty, or more than {MAX_MODEL_FILE_BYTES})")
        mapped = mmap.mmap(fd, info.st_size, flags=mmap.MAP_SHARED, prot=mmap.PROT_READ)
    finally:
        os.close(fd)
    try:
        actual = paced_sha256(mapped, pause_s)  # hashlib releases the GIL over large buffers
    except BaseException:
        mapped.close()
        raise
    if actual != expected_sha256:
        mapped.close()
        raise BundleError(f"{path.parent}: sha256 of {path.name} is {actual[:12]}…, manifest says {expected_sha256[:12]}…")
    return mapped


def _verify_unparsed(path: Path, digests: Mapping[str, str], pause_s: float = 0.0) -> int:
    """Check the sha256 of files no model is built from; return their total size."""
    size = 0
    for name, expected in digests.items():
        with contextlib.closing(map_verified(path / name, expected, pause_s)) as mapped:
            size += len(mapped)
    return size


def read_verified(path: Path, manifest: dict[str, Any], hash_only: frozenset[str] = frozenset()) -> dict[str, bytes]:
    """Read every file the manifest lists, once each, and check the sha256 of the bytes read.

    The bytes returned are the only ones the models are built from (:func:`build_ensemble`):
    the files are never opened again, so a file replaced on disk after its check cannot be
    loaded in its place. Files in ``hash_only`` (not parsed: their members load from compact
    files) are checked through a mapping and not returned. Opens no model parser."""
    verified: dict[str, bytes] = {}
    for name, expected in manifest["files"].items():
        if name in hash_only:
            map_verified(path / name, expected).close()
            continue
        data = _read_required(path / name, MAX_MODEL_FILE_BYTES, "file")
        actual = hashlib.sha256(data).hexdigest()
        if actual != expected:
            raise BundleError(f"{path}: sha256 of {name} is {actual[:12]}…, manifest says {expected[:12]}…")
        verified[name] = data
    return verified


def verify_files(path: Path, manifest: dict[str, Any]) -> int:
    """Check every listed file's sha256; return the total size. Opens no model parser."""
    return sum(len(data) for data in read_verified(path, manifest).values())


def compact_plan(manifest: dict[str, Any], *, eif_evaluator: str = "compiled",
                 ae_evaluator: str = "compiled") -> dict[str, str]:
    """{member: compact file} of the members that load from their compact file: those whose
    evaluator setting is ``compiled`` and whose bundle has one."""
    wanted = {"eif": eif_evaluator, "ae": ae_evaluator}
    listed = manifest.get("compact_files") or {}
    return {member: name for member, name in COMPACT_FILES.items()
            if wanted.get(member) == _COMPACT_EVALUATOR and isinstance(manifest.get(member), dict)
            and manifest[member].get("compact") == name and name in listed}


def build_ensemble(manifest: dict[str, Any], files: Mapping[str, Any], *, nthreads: int = 1,
                   eif_evaluator: str = "compiled", ae_evaluator: str = "compiled",
                   compact: Mapping[str, Any] | None = None) -> Ensemble:
    """Build the ensemble from a validated manifest and the verified bytes of its files: each
    registered member the manifest has a section for is rebuilt by its own ``load`` from those
    bytes, never from the store's files (which a writer could replace after the check).
    ``compact`` maps members to the verified contents of their compact files (mappings, from
    :func:`map_verified`): those members are rebuilt by ``load_compact`` instead."""
    features = tuple(manifest["features"])
    n = len(features)
    compact = compact or {}
    members = {member: (cls.load_compact(compact[member], manifest[member], n, nthreads=nthreads)
                        if member in compact else cls.load(files[cls.FILENAME], manifest[member], n, nthreads=nthreads))
               for member, cls in REGISTRY.items() if manifest.get(member)}
    eif, ae = members["eif"], members.get("ae")
    assert isinstance(eif, EIFDetector) and (ae is None or isinstance(ae, AutoencoderDetector))
    weights = manifest.get("weights", {})
    combination = manifest.get("combination")  # absent in bundles from before issue 16: raw blend
    ensemble = Ensemble(features=features, medians=np.asarray(manifest["medians"], dtype=np.float64),
                        **members,  # type: ignore[arg-type]  # registry names = Ensemble fields (tested)
                        ae_weight=float(weights.get("ae", 0.3)),
                        xgb_weight=float(weights.get("xgb", 0.2)),
                        thresholds={k: float(v) for k, v in manifest["thresholds"].items()},
                        tables=combination.get("tables") if combination else None, combination=combination)
    if eif_evaluator == "compiled" and "eif" not in compact:
        eif.use_compiled(evaluator_probe(manifest, ensemble.medians), files[eif.FILENAME])
    if ae is not None and ae_evaluator == "compiled" and "ae" not in compact:
        ae.use_compiled(evaluator_probe(manifest, ensemble.medians))
    return ensemble


def load_bundle(path: Path, *, expected_manifest_sha256: str | None = None, nthreads: int = 1,
                eif_evaluator: str = "compiled", ae_evaluator: str = "compiled",
                hash_pause_s: float = 0.0) -> LoadedBundle:
    """Verify, then load a bundle. Raises :class:`BundleError` with the reason on any problem.

    The manifest is read once and checked (against ``expected_manifest_sha256`` when given);
    each model file is read once, its bytes hashed against the manifest and the models built
    from those bytes (:func:`read_verified`, :func:`build_ensemble`).

    ``eif_evaluator='compiled'`` switches the EIF to the compiled evaluator of the same forest
    once it gave isotree's scores on :func:`evaluator_probe` rows (isotree otherwise);
    ``ae_evaluator='compiled'`` does the same for the autoencoder's weights (torch otherwise).
    With those settings, a member that has a compact file is built from it, mapped
    (:func:`map_verified`), without isotree's parser or torch; its portable file is then only
    hashed. A compact file of a version this reader does not know falls back to the portable file.

    ``hash_pause_s`` > 0 (a replica's reload, :mod:`stream_scorer.model_holder`): the mapped files
    are hashed paced (:func:`paced_sha256`) and the unparsed ones on this thread, after the others,
    so that a load takes at most about half a core instead of two busy threads."""
    path = Path(path)
    manifest, digest, manifest_size = _read_manifest_sized(path, expected_manifest_sha256)
    plan = compact_plan(manifest, eif_evaluator=eif_evaluator, ae_evaluator=ae_evaluator)
    portable = {REGISTRY[member].FILENAME: manifest["files"][REGISTRY[member].FILENAME] for member in plan}
    parsed = {"files": {name: sha for name, sha in manifest["files"].items() if name not in portable}}
    # The unparsed portable files (isotree's 28-38 MB) are hashed on a second thread meanwhile
    # (hashlib releases the GIL), or paced on this one after the others; the bundle is refused
    # unless they match too.
    paced = hash_pause_s > 0
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="ja4-verify") as pool:
        unparsed = pool.submit(_verify_unparsed, path, {} if paced else portable)
        mapped = {member: map_verified(path / name, manifest["compact_files"][name], hash_pause_s)
                  for member, name in plan.items()}
        try:
            files = read_verified(path, parsed)
            ensemble = build_ensemble(manifest, files, nthreads=nthreads, eif_evaluator=eif_evaluator,
                                      ae_evaluator=ae_evaluator, compact=mapped)
        except UnsupportedVersion as exc:
            log.warning("%s: %s; loading the portable files", path, exc)
            mapped = {}
            files = read_verified(path, manifest)
            ensemble = build_ensemble(manifest, files, nthreads=nthreads, eif_evaluator=eif_evaluator,
                                      ae_evaluator=ae_evaluator)
        unparsed_size = unparsed.result()
        if paced and mapped:  # (the fallback read them whole); a failure above (a bad file) leaves the mappings to the garbage collector, as before
            unparsed_size = _verify_unparsed(path, portable, hash_pause_s)
    size = (sum(len(data) for data in files.values()) + manifest_size + sum(len(m) for m in mapped.values())
            + (unparsed_size if mapped else 0))
    return LoadedBundle(model=str(manifest.get("model_name", path.parent.name)),
                        version=str(manifest.get("version", path.name)), path=path, manifest=manifest,
                        manifest_sha256=digest, ensemble=ensemble, size_bytes=size)


def evaluator_probe(manifest: dict[str, Any], medians: np.ndarray, n_random: int = 256) -> np.ndarray:
    """Rows on which a faster evaluator must equal the reference one: the smoke rows, the medians, and
    deterministic spreads around the medians from tiny to huge (so that every side of many splits,
    and the far tails, are exercised)."""
    rows = [medians[np.newaxis, :]]
    smoke = manifest.get("smoke") or {}
    if smoke.get("rows"):
        smoke_rows = np.asarray(smoke["rows"], dtype=np.float64)
        if smoke_rows.ndim == 2 and smoke_rows.shape[1] == len(medians):
            rows.append(smoke_rows)
    rng = np.random.default_rng(0)
    scale = np.maximum(np.abs(medians), 1.0)
    spread = np.logspace(-3, 3, n_random)[:, np.newaxis]
    rows.append(medians + rng.standard_normal((n_random, len(medians))) * scale * spread)
    return np.vstack(rows)


def smoke_check(bundle: LoadedBundle) -> None:
    """Score the manifest's own smoke rows: finite, in [0, 1], the right count, and equal to
    the scores the trainer recorded. Catches a bundle that loads but scores garbage."""
    smoke = bundle.manifest.get("smoke")
    ens = bundle.ensemble
    if smoke and smoke.get("rows"):
        rows = np.asarray(smoke["rows"], dtype=np.float64)
    else:  # no recorded rows: the medians are always a valid input
        rows = ens.medians[np.newaxis, :]
    if rows.ndim != 2 or rows.shape[1] != ens.n_features:
        raise BundleError(f"{bundle.path}: smoke rows have {rows.shape[-1]} columns, bundle has {ens.n_features} features")
    scores = ens.score(rows).anomaly
    if scores.shape != (len(rows),) or not np.all(np.isfinite(scores)) or scores.min() < 0 or scores.max() > 1:
        raise BundleError(f"{bundle.path}: smoke scores are not finite values in [0, 1]")
    expected = smoke.get("expected") if smoke else None
    if expected is not None and not np.allclose(scores, np.asarray(expected, dtype=np.float64), atol=1e-5):
        raise BundleError(f"{bundle.path}: smoke scores differ from those recorded at training")
