"""The optional bot ``kind`` of an analyst label (issue 16: recall per bot kind)."""

from __future__ import annotations

import numpy as np
import pytest

from ja4_core.label_record import LabelKindError, LabelTooLargeError, parse_label
from ja4_dev.simulator import TrafficSimulator, analyst_label

BASE = {"window_start": 0, "src_ip": "203.0.113.7", "ja4": "t13d", "host": "shop.example", "source": "console"}


def test_a_bot_label_keeps_its_kind_in_the_stored_row():
    lab = parse_label({**BASE, "label": "bot", "kind": "headless_impersonator"})
    assert lab.kind == "headless_impersonator" and lab.as_row()["kind"] == "headless_impersonator"
    assert parse_label({**BASE, "label": "bot"}).as_row()["kind"] == ""


def test_a_kind_on_a_human_label_is_refused():
    with pytest.raises(LabelKindError):
        parse_label({**BASE, "label": "human", "kind": "scraper"})


@pytest.mark.parametrize("kind", ["Headless", "credential stuffing", "bot;drop", "é"])
def test_a_kind_with_characters_outside_a_z0_9_dash_underscore_is_refused(kind):
    with pytest.raises(LabelKindError):
        parse_label({**BASE, "label": "bot", "kind": kind})


def test_a_kind_longer_than_64_characters_is_refused():
    with pytest.raises(LabelTooLargeError):
        parse_label({**BASE, "label": "bot", "kind": "a" * 65})


def test_the_simulated_analyst_labels_name_the_true_bot_kind_and_are_valid():
    rows = TrafficSimulator(seed=3, bot_share=0.5).records(200, start=1795554000)
    labels = [parse_label(analyst_label(r)) for r in rows]
    assert all(lab.kind == (r["bot_kind"] if r["label"] == "bot" else "") for lab, r in zip(labels, rows))
    assert any(lab.kind for lab in labels)


def test_recall_per_kind_counts_bots_without_a_kind_as_unspecified():
    from trainer.labels import bot_kinds
    from trainer.report import operating_point

    kinds = bot_kinds(np.array(["scraper", "scraper", "", ""], dtype=object), 4)
    op = operating_point(np.array([0.95, 0.2, 0.99, 0.1]), {"HIGH": 0.9}, {"5pct": 0.9}, kinds=kinds)
    assert op["recall"]["HIGH"] == 0.5
    assert op["by_kind"]["scraper"] == {"n_bots": 2, "recall": {"HIGH": 0.5, "at_5pct_human_alerts": 0.5}}
    assert op["by_kind"]["unspecified"]["n_bots"] == 2
