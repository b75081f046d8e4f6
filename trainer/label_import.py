"""``stream-trainer label --file F``: import analyst labels from a CSV or NDJSON file into
``soc_labels``, with the label feed's own check (:mod:`ja4_core.label_record`).

The whole file is checked before anything is written: the first bad line stops the import
with an error naming ``file:line`` and the reason, and nothing is stored (fix the line, run
it again; nothing is half-imported). Labels for windows ``ml_all_scores`` never scored are
imported too and counted apart in the output.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ja4_core.label_record import read_label_file

if TYPE_CHECKING:
    from ja4_core.clickhouse_io import ClickHouseIO

#: Labels per INSERT (and per lookup of which windows were scored).
IMPORT_BATCH = 5000


@dataclass(frozen=True)
class ImportResult:
    """What an import stored: every label, of which ``unscored`` for windows never scored."""

    imported: int
    unscored: int
    bots: int


def import_labels(ch: "ClickHouseIO", path: Path, *, default_source: str | None = None) -> ImportResult:
    """Check every line of ``path``, then insert the labels (``ch``: a ClickHouseIO)."""
    labels = read_label_file(path, default_source=default_source)
    unscored = 0
    for start in range(0, len(labels), IMPORT_BATCH):
        chunk = labels[start:start + IMPORT_BATCH]
        scored = ch.scored_keys([lab.key for lab in chunk])
        unscored += sum(lab.key not in scored for lab in chunk)
        ch.insert_labels([lab.as_row() for lab in chunk])
    return ImportResult(len(labels), unscored, sum(lab.label == "bot" for lab in labels))
