"""Analyst labels: the one validation of a label, shared by the sink's label feed
(``TOPIC_LABELS``) and ``stream-trainer label --file``.

A label is one JSON object (or one CSV row) naming a feature record's key (``window_start``,
``src_ip``, ``ja4``, ``host``, as in the feature record) with ``label`` = ``bot`` | ``human``,
``source`` (who or what sent it: ``console``, ``siem``, ...) and optionally ``analyst``,
``note`` and, on a bot label only, ``kind`` (the bot family, e.g. ``headless_impersonator``:
at most :data:`KIND_MAX_CHARS` of ``[a-z0-9_-]``; the trainer reports recall per kind).
Anything else is refused with the reason, so a typo (``"lable"``) or a stray field
is an error the sender sees, not a label silently stored without its meaning:

* a field the format does not have (:class:`LabelFieldError`),
* a value other than ``bot`` / ``human``, a key field or ``source`` missing, a
  ``window_start`` the feature contract refuses (:class:`LabelFieldError`),
* a ``kind`` on a ``human`` label, or one with characters outside ``[a-z0-9_-]``
  (:class:`LabelKindError`, a :class:`LabelFieldError`),
* a text longer than its limit (:data:`TEXT_LIMITS`; ``note`` at most
  :data:`NOTE_MAX_CHARS`), or a message larger than :data:`LABEL_MAX_BYTES`
  (:class:`LabelTooLargeError`),
* bytes that are not one JSON object (:class:`LabelNotJSONError`).

A label whose key the product never scored is valid (an analyst may label from another
tool); whoever stores it counts it apart (``unscored``).
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Mapping

import orjson

from ja4_core.errors import Ja4StreamError, RecordError, SchemaError
from ja4_core.features import KEY_FIELDS, window_start_seconds

LABEL_VALUES: tuple[str, ...] = ("bot", "human")
#: The longest analyst note, in characters.
NOTE_MAX_CHARS = 1000
#: The longest bot ``kind``, in characters.
KIND_MAX_CHARS = 64
#: The most characters of each text field (a key field longer than these is no real key).
TEXT_LIMITS: dict[str, int] = {"src_ip": 64, "ja4": 128, "host": 255, "source": 64, "analyst": 128,
                               "note": NOTE_MAX_CHARS, "kind": KIND_MAX_CHARS}
#: What a bot ``kind`` may hold: a short family name, usable as a Prometheus label value.
KIND_PATTERN = re.compile(r"[a-z0-9_-]+")
#: A label message larger than this is refused before it is parsed.
LABEL_MAX_BYTES = 8192
REQUIRED_FIELDS: tuple[str, ...] = (*KEY_FIELDS, "label", "source")
OPTIONAL_FIELDS: tuple[str, ...] = ("analyst", "note", "kind")
ALLOWED_FIELDS: frozenset[str] = frozenset(REQUIRED_FIELDS + OPTIONAL_FIELDS)


class LabelError(SchemaError):
    """A label that cannot be stored; the message says why."""


class LabelNotJSONError(LabelError):
    """The bytes are not one JSON object."""


class LabelFieldError(LabelError):
    """A field is unknown, missing or has a value the format does not take."""


class LabelKindError(LabelFieldError):
    """A ``kind`` on a human label, or one with characters a kind does not take."""


class LabelTooLargeError(LabelError):
    """A text field or the whole message is over its size limit."""


class LabelFileError(Ja4StreamError):
    """A line of a label file is not a valid label; the message names the file and line."""


@dataclass(frozen=True)
class Label:
    """One valid label. ``window_start`` is epoch seconds (whole: the feature table's type)."""

    window_start: int
    src_ip: str
    ja4: str
    host: str
    label: str
    source: str
    analyst: str = ""
    note: str = ""
    #: The bot family (``headless_impersonator``, ...); "" when unnamed, always "" on a human.
    kind: str = ""

    @property
    def key(self) -> tuple[int, str, str, str]:
        return (self.window_start, self.src_ip, self.ja4, self.host)

    def as_row(self) -> dict[str, Any]:
        """The dict :meth:`ja4_core.clickhouse_io.ClickHouseIO.insert_labels` takes."""
        return {"window_start": self.window_start, "src_ip": self.src_ip, "ja4": self.ja4, "host": self.host,
                "label": self.label, "source": self.source, "analyst": self.analyst, "note": self.note,
                "kind": self.kind}

    def as_message(self) -> dict[str, Any]:
        """The label as a ``TOPIC_LABELS`` message (``window_start`` as ISO-8601 UTC)."""
        doc = self.as_row()
        doc["window_start"] = datetime.fromtimestamp(self.window_start, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        return {k: v for k, v in doc.items() if v != "" or k not in OPTIONAL_FIELDS}


def _text(doc: Mapping[str, Any], name: str, required: bool) -> str:
    value = doc.get(name)
    if value is None or value == "":
        if required:
            raise LabelFieldError(f"field {name!r} is missing")
        return ""
    if not isinstance(value, str):
        raise LabelFieldError(f"field {name!r} must be text, got {type(value).__name__}")
    limit = TEXT_LIMITS[name]
    if len(value) > limit:
        raise LabelTooLargeError(f"field {name!r} is {len(value)} characters, more than {limit}")
    return value


def parse_label(doc: Any, *, default_source: str | None = None) -> Label:
    """A decoded label -> :class:`Label`, or :class:`LabelError` naming the problem.

    >>> parse_label({"window_start": "2026-11-24T21:00:00Z", "src_ip": "203.0.113.7", "ja4": "t13d",
    ...              "host": "shop.example", "label": "bot", "source": "console"}).window_start
    1795554000
    >>> parse_label({"window_start": 0, "src_ip": "a", "ja4": "b", "host": "c", "label": "bot",
    ...              "source": "x", "lable": "bot"})
    Traceback (most recent call last):
    ...
    ja4_core.label_record.LabelFieldError: unknown field 'lable'; a label has window_start, src_ip, ja4, host, label, source, analyst, note, kind
    >>> parse_label({"window_start": 0, "src_ip": "a", "ja4": "b", "host": "c", "label": "human",
    ...              "source": "x", "kind": "scraper"})
    Traceback (most recent call last):
    ...
    ja4_core.label_record.LabelKindError: field 'kind' names a bot family; a 'human' label has none
    """
    if not isinstance(doc, Mapping):
        raise LabelNotJSONError(f"a label must be a JSON object, got {type(doc).__name__}")
    unknown = sorted(str(k) for k in doc if k not in ALLOWED_FIELDS)
    if unknown:
        raise LabelFieldError(f"unknown field {unknown[0][:60]!r}; a label has "
                              f"{', '.join(REQUIRED_FIELDS + OPTIONAL_FIELDS)}")
    if default_source and not doc.get("source"):
        doc = {**doc, "source": default_source}
    if doc.get("window_start") is None:
        raise LabelFieldError("field 'window_start' is missing")
    try:
        window = int(window_start_seconds(doc["window_start"]))
    except RecordError as exc:
        raise LabelFieldError(str(exc)) from None
    label = doc.get("label")
    if label not in LABEL_VALUES:
        raise LabelFieldError(f"field 'label' must be 'bot' or 'human', got {str(label)[:40]!r}")
    return Label(window, _text(doc, "src_ip", True), _text(doc, "ja4", True), _text(doc, "host", True), label,
                 _text(doc, "source", True), _text(doc, "analyst", False), _text(doc, "note", False),
                 _kind(doc, label))


def _kind(doc: Mapping[str, Any], label: str) -> str:
    """The label's bot ``kind`` ("" when absent), or :class:`LabelKindError`: a kind on a
    human is a contradiction the sender must resolve, not a field to drop silently."""
    kind = _text(doc, "kind", False)
    if not kind:
        return ""
    if label != "bot":
        raise LabelKindError(f"field 'kind' names a bot family; a {label!r} label has none")
    if not KIND_PATTERN.fullmatch(kind):
        raise LabelKindError(f"field 'kind' must be lowercase letters, digits, '_' or '-', got {kind[:40]!r}")
    return kind


def read_label(value: bytes | None) -> Label:
    """A ``TOPIC_LABELS`` message's value -> :class:`Label`, or :class:`LabelError`."""
    if value is None:
        raise LabelNotJSONError("a label message has no value")
    if len(value) > LABEL_MAX_BYTES:
        raise LabelTooLargeError(f"a label message is {len(value)} bytes, more than {LABEL_MAX_BYTES}")
    try:
        doc = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        raise LabelNotJSONError(f"not JSON: {str(exc).splitlines()[0][:200]}") from None
    return parse_label(doc)


def read_label_file(path: Path, *, default_source: str | None = None) -> list[Label]:
    """Every label of a CSV (header row; ``.csv``) or NDJSON file (one object per line), all
    checked before any is returned: the first bad line raises :class:`LabelFileError` naming
    ``path:line`` and the reason, so an import stores the whole file or nothing."""
    labels: list[Label] = []
    try:
        if path.suffix.lower() == ".csv":
            with open(path, newline="", encoding="utf-8") as fh:
                reader = csv.DictReader(fh)
                for row in reader:
                    if None in row:
                        raise LabelFileError(f"{path}:{reader.line_num}: more cells than the header has")
                    doc = {k: v for k, v in row.items() if v not in (None, "")}
                    labels.append(_on_line(path, reader.line_num, doc, default_source))
            return labels
        with open(path, "rb") as fh:
            for lineno, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                if len(line) > LABEL_MAX_BYTES:
                    raise LabelFileError(f"{path}:{lineno}: the line is {len(line)} bytes, more than {LABEL_MAX_BYTES}")
                try:
                    doc = orjson.loads(line)
                except orjson.JSONDecodeError as exc:
                    raise LabelFileError(f"{path}:{lineno}: not JSON: {str(exc).splitlines()[0][:200]}") from None
                labels.append(_on_line(path, lineno, doc, default_source))
    except (OSError, UnicodeDecodeError) as exc:
        raise LabelFileError(f"{path}: cannot read: {exc}") from None
    return labels


def _on_line(path: Path, lineno: int, doc: Any, default_source: str | None) -> Label:
    try:
        return parse_label(doc, default_source=default_source)
    except LabelError as exc:
        raise LabelFileError(f"{path}:{lineno}: {exc}") from None
