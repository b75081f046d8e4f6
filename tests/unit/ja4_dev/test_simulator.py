"""Traffic simulator: reproducibility, schema, class mix, campaigns, history, detection quality."""

from __future__ import annotations

import csv
import io
import ipaddress
import math
import re
from collections import Counter
from datetime import datetime, timezone
from importlib import resources

import numpy as np
import pytest

from ja4_dev import simulator as sim_mod
from ja4_core.features import CONTEXT_FIELDS, DEFAULT_FEATURES, KEY_FIELDS
from ja4_dev.simulator import (
    BOT_KINDS,
    HUMAN,
    Fingerprint,
    TrafficSimulator,
    load_fingerprints,
)

START = datetime(2026, 11, 24, 21, 0, tzinfo=timezone.utc)
ISO_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")
ALL_FIELDS = {*KEY_FIELDS, *DEFAULT_FEATURES, *CONTEXT_FIELDS, "label", "bot_kind"}
FLAGS = {
    "has_accept_language", "has_cookie", "has_referer", "has_sec_ch_ua", "ua_ch_mismatch",
    "mss_mobile_mismatch", "h2_settings_known", "h2_pseudo_order_match",
    "tls_h2_family_mismatch", "is_ua_rotating", "is_rare_ja4",
}
RATIOS = {
    "modern_browser_score", "post_ratio", "orphan_ratio", "asset_ratio", "direct_access_ratio",
    "ip_id_zero_ratio", "port_exhaustion_ratio", "src_port_density",
    "fingerprint_coherence_score", "ja4_asn_concentration", "ja4_country_concentration",
    "burst_ratio", "pause_ratio", "host_diversity", "benford_deviation",
}
COUNTS = {
    "hits", "header_count", "header_order_shared_count", "max_keepalives", "tcp_shared_count",
    "distinct_ja4_count",
}


def _epoch(iso: str) -> int:
    parsed = datetime.strptime(iso, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)
    return int(parsed.timestamp())


def _csv_ja4s() -> set[str]:
    text = resources.files("ja4_dev").joinpath("data/ja4plus-mapping.csv").read_text("utf-8")
    return {row["ja4"].strip() for row in csv.DictReader(io.StringIO(text)) if row["ja4"].strip()}


@pytest.fixture(scope="module")
def mixed() -> list[dict]:
    return TrafficSimulator(seed=7, bot_share=0.5).records(3000, start=START, span_s=6 * 3600)


def _matrix(records: list[dict]) -> np.ndarray:
    return np.array([[r[f] for f in DEFAULT_FEATURES] for r in records], dtype=float)


# -- fingerprints --------------------------------------------------------------------------------


def test_load_fingerprints_are_the_csv_rows_with_a_ja4() -> None:
    fps = load_fingerprints()
    assert fps and all(isinstance(fp, Fingerprint) for fp in fps)
    assert {fp.ja4 for fp in fps} == _csv_ja4s()
    assert {fp.family for fp in fps} <= set(sim_mod.FAMILIES)
    assert {"chromium", "firefox", "safari", "library", "malware"} <= {fp.family for fp in fps}
    by_app = {fp.application: fp.family for fp in fps}
    assert by_app["Chromium Browser"] == "chromium"
    assert by_app["Python"] == "library"
    assert by_app["Cobalt Strike v4.9.1 beacon"] == "malware"


# -- reproducibility -----------------------------------------------------------------------------


def test_same_seed_same_records() -> None:
    a, b = TrafficSimulator(seed=42), TrafficSimulator(seed=42)
    assert a.records(500, start=START) == b.records(500, start=START)
    assert a.campaign(200, start=START) == b.campaign(200, start=START)
    assert a.history(0.25, 20, end=START) == b.history(0.25, 20, end=START)


def test_different_seed_different_records() -> None:
    a = TrafficSimulator(seed=1).records(200, start=START)
    b = TrafficSimulator(seed=2).records(200, start=START)
    assert a != b


# -- schema, types and ranges --------------------------------------------------------------------


def test_every_field_present_with_its_type_and_range(mixed: list[dict]) -> None:
    hosts = set(sim_mod.DEFAULT_HOSTS)
    for r in mixed:
        assert set(r) == ALL_FIELDS
        assert ISO_RE.match(r["window_start"])
        assert isinstance(ipaddress.ip_address(r["src_ip"]), ipaddress.IPv4Address)
        assert r["host"] in hosts
        for f in DEFAULT_FEATURES:
            v = r[f]
            assert type(v) is float, (f, type(v))
            assert math.isfinite(v) and v >= (-1.0 if f == "lag1_autocorrelation" else 0.0), (f, v)
        assert all(r[f] in (0.0, 1.0) for f in FLAGS)
        assert all(0.0 <= r[f] <= 1.0 for f in RATIOS)
        assert all(r[f] == int(r[f]) for f in COUNTS)
        assert r["hits"] >= 1 and r["distinct_ja4_count"] >= 1
        assert r["max_keepalives"] <= r["hits"] and r["multiplexing_efficiency"] <= r["hits"]
        assert -1.0 <= r["lag1_autocorrelation"] <= 1.0
        assert r["ua_ch_mismatch"] <= r["has_sec_ch_ua"]
        assert type(r["asn_number"]) is int and r["asn_number"] > 0
        assert re.fullmatch(r"[A-Z]{2}", r["country_code"])
        assert r["label"] in (HUMAN, "bot")
        assert r["bot_kind"] == HUMAN if r["label"] == HUMAN else r["bot_kind"] in BOT_KINDS
        assert bool(r["bot_name"]) == (r["bot_kind"] == "known_crawler")


def test_ja4_and_browser_family_agree(mixed: list[dict]) -> None:
    family = {fp.ja4: fp.family for fp in load_fingerprints()}
    names = {"chromium": "Chrome", "firefox": "Firefox", "safari": "Safari"}
    assert {r["ja4"] for r in mixed} <= _csv_ja4s()
    for r in mixed:
        assert r["browser_family"] == names.get(family[r["ja4"]], "")
        if family[r["ja4"]] != "chromium" and r["label"] == HUMAN:
            assert r["has_sec_ch_ua"] == 0.0  # only Chromium sends client hints


def test_humans_mostly_browsers_from_residential_ranges(mixed: list[dict]) -> None:
    residential = {row[1] for row in sim_mod._RESIDENTIAL}
    datacenter = {row[1] for row in sim_mod._DATACENTER}
    humans = [r for r in mixed if r["label"] == HUMAN]
    bots = [r for r in mixed if r["bot_kind"] not in (HUMAN, "known_crawler")]
    assert np.mean([r["browser_family"] != "" for r in humans]) > 0.9
    assert np.mean([r["asn_number"] in residential for r in humans]) > 0.9
    assert np.mean([r["asn_number"] in datacenter for r in bots]) > 0.6


def test_keys_are_unique(mixed: list[dict]) -> None:
    keys = [tuple(r[k] for k in KEY_FIELDS) for r in mixed]
    assert len(set(keys)) == len(keys)


def test_windows_aligned_and_spread_over_the_span() -> None:
    start = START.timestamp() + 125.0  # not aligned: windows still are
    records = TrafficSimulator(seed=3).records(600, start=start, window_s=600, span_s=3600)
    windows = {_epoch(r["window_start"]) for r in records}
    assert all(w % 600 == 0 for w in windows)
    assert min(windows) == math.floor(start / 600) * 600
    assert max(windows) < start + 3600
    assert len(windows) == 7  # 3600 s from an unaligned start touch 7 ten-minute windows


def test_default_span_is_one_window() -> None:
    records = TrafficSimulator(seed=3).records(100, start=START)
    assert {r["window_start"] for r in records} == {"2026-11-24T21:00:00Z"}


# -- class mix -----------------------------------------------------------------------------------


@pytest.mark.parametrize("share", [0.0, 0.2, 0.6])
def test_bot_share_is_respected(share: float) -> None:
    records = TrafficSimulator(seed=11, bot_share=share).records(4000, start=START)
    observed = np.mean([r["label"] == "bot" for r in records])
    assert abs(observed - share) < 0.03


def test_only_requested_kinds() -> None:
    kinds = ("scraper", "known_crawler")
    records = TrafficSimulator(seed=5, bot_share=1.0, kinds=kinds).records(500, start=START)
    assert {r["bot_kind"] for r in records} == set(kinds)


def test_kinds_show_their_traits(mixed: list[dict]) -> None:
    def median(kind: str, feature: str) -> float:
        return float(np.median([r[feature] for r in mixed if r["bot_kind"] == kind]))

    assert median("scraper", "hits") > 5 * median(HUMAN, "hits")
    assert median("scraper", "asset_ratio") < 0.2 < median(HUMAN, "asset_ratio")
    assert median("credential_stuffer", "post_ratio") > 0.5 > median(HUMAN, "post_ratio")
    assert median("credential_stuffer", "header_order_shared_count") > 5 * median(
        HUMAN, "header_order_shared_count"
    )
    assert median("naive_script", "cadence_cv") < 0.5 < median(HUMAN, "cadence_cv")
    assert median("naive_script", "header_count") < median(HUMAN, "header_count")
    assert median("headless_impersonator", "fingerprint_coherence_score") < median(
        HUMAN, "fingerprint_coherence_score"
    )
    impersonators = [r for r in mixed if r["bot_kind"] == "headless_impersonator"]
    families = Counter(r["browser_family"] for r in impersonators)
    assert "" not in families


def test_unknown_kind_and_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="allowed"):
        TrafficSimulator(kinds=("scraper", "bogus"))
    with pytest.raises(ValueError):
        TrafficSimulator(bot_share=1.5)
    sim = TrafficSimulator()
    with pytest.raises(ValueError, match="allowed"):
        sim.campaign(10, kind="bogus")
    with pytest.raises(ValueError):
        sim.records(10, window_s=0)
    with pytest.raises(ValueError):
        sim.records(-1)


# -- campaigns -----------------------------------------------------------------------------------


def test_campaign_is_one_concentrated_browser_impersonation() -> None:
    sim = TrafficSimulator(seed=9)
    records = sim.campaign(800, start=START, span_s=4 * 3600)
    chromium = {fp.ja4 for fp in load_fingerprints() if fp.family == "chromium"}
    assert all(r["label"] == "bot" and r["bot_kind"] == "headless_impersonator" for r in records)
    assert len({r["ja4"] for r in records}) == 1 and records[0]["ja4"] in chromium
    assert {r["browser_family"] for r in records} == {"Chrome"}
    assert len({r["asn_number"] for r in records}) == 1
    nets = {ipaddress.ip_network(f"{r['src_ip']}/20", strict=False) for r in records}
    assert len(nets) == 1
    humans = sim.records(800, start=START)
    shared = [r["header_order_shared_count"] for r in records]
    assert np.median(shared) > 5 * np.median([r["header_order_shared_count"] for r in humans])
    assert np.mean([r["ua_ch_mismatch"] for r in records]) > 0.3


def test_campaign_infrastructure_follows_its_id_not_call_order() -> None:
    def infra(records: list[dict]) -> set[tuple]:
        return {
            (r["ja4"], r["asn_number"], ipaddress.ip_network(f"{r['src_ip']}/20", strict=False))
            for r in records
        }

    busy = TrafficSimulator(seed=9)
    busy.records(300, start=START)
    first = infra(busy.campaign(50, start=START, campaign_id="c-1"))
    again = infra(TrafficSimulator(seed=9).campaign(50, start=START, campaign_id="c-1"))
    assert len(first) == 1 and first == again


def test_campaign_of_known_crawlers_names_the_bot() -> None:
    records = TrafficSimulator(seed=4).campaign(100, kind="known_crawler", start=START)
    assert len({r["bot_name"] for r in records}) == 1 and records[0]["bot_name"]


# -- history -------------------------------------------------------------------------------------


def test_history_spans_the_requested_days() -> None:
    end = datetime(2026, 11, 24, 21, 35, tzinfo=timezone.utc)
    records = TrafficSimulator(seed=8, bot_share=0.2).history(2, 30, end=end)
    counts = Counter(r["window_start"] for r in records)
    windows = sorted(_epoch(w) for w in counts)
    assert len(windows) == 48 and set(counts.values()) == {30}
    assert windows[-1] == _epoch("2026-11-24T20:00:00Z")  # last complete hour before end
    assert windows[-1] - windows[0] == 47 * 3600
    assert all(b - a == 3600 for a, b in zip(windows, windows[1:]))
    assert 0.1 < np.mean([r["label"] == "bot" for r in records]) < 0.3


# -- quality -------------------------------------------------------------------------------------


def test_isolation_forest_on_humans_separates_bots_but_not_perfectly() -> None:
    ensemble = pytest.importorskip("sklearn.ensemble")
    metrics = pytest.importorskip("sklearn.metrics")
    train = TrafficSimulator(seed=21, bot_share=0.0).records(2000, start=START, span_s=86400)
    test = TrafficSimulator(seed=22, bot_share=0.3).records(3000, start=START, span_s=86400)
    forest = ensemble.IsolationForest(n_estimators=100, random_state=0).fit(_matrix(train))
    scores = -forest.score_samples(_matrix(test))  # higher = more anomalous
    auc = metrics.roc_auc_score([r["label"] == "bot" for r in test], scores)
    assert 0.75 <= auc <= 0.995, auc
