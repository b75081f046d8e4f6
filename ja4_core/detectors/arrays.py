"""Named numeric arrays in one file, in the safetensors layout, read without copying.

Why: the worker serves the compiled evaluators, which need only a model's arrays (the EIF's
node tables, the autoencoder's weights). Rebuilding them from isotree's file or a torch state
dict costs a parser, a library import and copies; these files are instead mapped and used in
place (:func:`decode` gives read-only views of the buffer it is handed).

Layout (safetensors, so any safetensors reader opens these files; no pickle anywhere): an
8-byte little-endian header length ``n``, ``n`` bytes of JSON ``{name: {"dtype", "shape",
"data_offsets": [begin, end]}, "__metadata__": {str: str}}`` padded with spaces, then the
arrays' bytes back to back, little-endian, C order. Arrays are written widest item first and
the header is padded so the data starts on a 64-byte boundary: every array is then aligned for
its type. ``__metadata__`` carries ``format`` (what the file holds) and ``version``: a reader
refuses a file of another ``format`` and raises :class:`UnsupportedVersion` for another version,
so an older reader can fall back to the portable file instead of refusing the bundle.

>>> import numpy as np
>>> blob = encode({"a": np.arange(3, dtype=np.int32)}, format="demo", version=1, extra={"k": "v"})
>>> arrays, meta = decode(blob, format="demo", version=1)
>>> arrays["a"].tolist(), meta["k"], arrays["a"].flags.writeable
([0, 1, 2], 'v', False)
"""

from __future__ import annotations

import json
import struct
from typing import Mapping

import numpy as np

from ja4_core.errors import BundleError

#: safetensors dtype names of the numpy types these files hold.
_DTYPES: dict[str, np.dtype] = {"F64": np.dtype("<f8"), "F32": np.dtype("<f4"),
                                "I64": np.dtype("<i8"), "I32": np.dtype("<i4")}
_NAMES = {dt: name for name, dt in _DTYPES.items()}
_ALIGN = 64
#: Largest header accepted (a file's header lists a handful of arrays).
MAX_HEADER_BYTES = 1 << 20


class UnsupportedVersion(BundleError):
    """The file is of the expected kind but another version of it: use the portable file."""


def encode(arrays: Mapping[str, np.ndarray], *, format: str, version: int,
           extra: Mapping[str, str] | None = None) -> bytes:
    """The file's bytes for ``arrays`` (any of float64/float32/int64/int32)."""
    ordered = sorted(arrays.items(), key=lambda kv: (-np.asarray(kv[1]).dtype.itemsize, kv[0]))
    header: dict[str, object] = {"__metadata__": {**(extra or {}), "format": format, "version": str(version)}}
    blobs, offset = [], 0
    for name, value in ordered:
        arr = np.asarray(value)
        dtype = arr.dtype.newbyteorder("<")
        if dtype not in _NAMES:
            raise ValueError(f"{name}: dtype {arr.dtype} cannot be stored")
        data = np.ascontiguousarray(arr, dtype=dtype).tobytes()
        header[name] = {"dtype": _NAMES[dtype], "shape": list(arr.shape), "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    body = json.dumps(header, separators=(",", ":")).encode()
    body += b" " * (-(8 + len(body)) % _ALIGN)
    return struct.pack("<Q", len(body)) + body + b"".join(blobs)


def decode(buffer: bytes | memoryview | object, *, format: str,
           version: int) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Read-only array views into ``buffer`` (bytes or a mapped file) and the metadata.

    :raises BundleError: not such a file, or offsets, shapes or types that do not add up.
    :raises UnsupportedVersion: a file of ``format`` in another version."""
    view = memoryview(buffer).cast("B")  # type: ignore[arg-type]
    if len(view) < 8:
        raise BundleError(f"{format}: file of {len(view)} bytes has no header")
    (n,) = struct.unpack("<Q", view[:8])
    if n > min(MAX_HEADER_BYTES, len(view) - 8):
        raise BundleError(f"{format}: header length {n} does not fit the file")
    try:
        header = json.loads(bytes(view[8:8 + n]))
    except (ValueError, UnicodeDecodeError) as exc:
        raise BundleError(f"{format}: header is not JSON ({exc})") from None
    meta = header.pop("__metadata__", None) if isinstance(header, dict) else None
    if not isinstance(meta, dict) or meta.get("format") != format:
        raise BundleError(f"file is not a {format} file")
    if meta.get("version") != str(version):
        raise UnsupportedVersion(f"{format}: version {meta.get('version')!r}, this reader knows {version}")
    data = view[8 + n:]
    arrays: dict[str, np.ndarray] = {}
    end = 0
    for name, spec in sorted(header.items(), key=lambda kv: _offsets(kv[1])[0]):
        dtype = _DTYPES.get(str(spec.get("dtype"))) if isinstance(spec, dict) else None
        shape = spec.get("shape") if isinstance(spec, dict) else None
        begin, stop = _offsets(spec)
        if dtype is None or not isinstance(shape, list) or not all(isinstance(d, int) and d >= 0 for d in shape):
            raise BundleError(f"{format}: array {name!r} has an unusable dtype or shape")
        if begin != end or stop > len(data) or stop - begin != int(np.prod(shape)) * dtype.itemsize:
            raise BundleError(f"{format}: array {name!r} does not match its offsets")
        arrays[name] = np.frombuffer(data[begin:stop], dtype=dtype).reshape(shape)
        end = stop
    if end != len(data):
        raise BundleError(f"{format}: {len(data) - end} bytes after the last array")
    return arrays, {str(k): str(v) for k, v in meta.items()}


def _offsets(spec: object) -> tuple[int, int]:
    offsets = spec.get("data_offsets") if isinstance(spec, dict) else None
    if (not isinstance(offsets, list) or len(offsets) != 2 or not all(isinstance(o, int) for o in offsets)
            or not 0 <= offsets[0] <= offsets[1]):
        return (-1, -1)
    return offsets[0], offsets[1]
