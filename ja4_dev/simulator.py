"""Seeded, vectorised generator of labelled feature records for humans and bots.

Why it exists: the scorer, the trainer, the benchmarks and the tests need feature records
(one per window, src_ip, JA4 and host, as in the contract's "Default feature set") with a
known ground truth, in volume, without a live capture.  This module makes them.

The model of traffic
--------------------
* **Clients.** Every record belongs to one class: ``"human"`` or one of :data:`BOT_KINDS`.
  A class fixes where its IPs come from, which real JA4 fingerprints (from the packaged
  FoxIO ``ja4plus-mapping.csv``) it presents, which hosts it visits and one *profile*: a
  distribution per feature (beta for ratios, Bernoulli for flags, log-normal for heavy-tailed
  counts such as ``hits``).
* **Addresses.** Humans come from a fixed pool of ``n_ips`` addresses in consumer-ISP
  ranges (a few percent through VPN exits in hosting ranges); bots come from a few /24s in
  hosting ranges (cloud and VPS providers), some kinds partly through residential proxies;
  known crawlers from their operators' ranges.  The ranges and ASNs are plausible examples
  for realism, not an authoritative IP-to-ASN map.  Pools are fixed by the seed, so the same
  addresses recur across windows.
* **Overlap.** Classes are not cleanly separable, on purpose: each human record has an
  "atypicality" o ~ Beta(1, 6) and takes each feature from an atypical-human profile
  (privacy tools, corporate proxies, power users) with probability o; each bot record has a
  "stealth" s drawn per kind and takes each feature from the human profile with probability s.
  Bots are anomalous on average, yet an unsupervised detector trained on humans misses some.
* **Coherence.** After mixing, features are made consistent with each other and with the
  JA4: no HTTP/2 traits for a client whose JA4 ALPN is HTTP/1 only, client hints only from
  Chromium (or from bots that spoof them), ``ua_ch_mismatch`` only with client hints,
  per-connection counts no larger than ``hits``, human volume following the local time of
  day, and so on.
* **Campaigns.** :meth:`TrafficSimulator.campaign` makes one coordinated operation: one kind,
  one JA4, one ASN, a narrow address range, a shared header order, and high stealth except for
  a few signature features; an unsupervised model flags part of it, labels separate it.

Everything is drawn with numpy in blocks per class; only the final conversion to dicts is
per record.  The only I/O is reading the packaged CSV.
"""

from __future__ import annotations

import csv
import io
import math
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from functools import lru_cache
from importlib import resources
from typing import Any

import numpy as np

from ja4_core.features import CONTEXT_FIELDS, DEFAULT_FEATURES, KEY_FIELDS

__all__ = [
    "BOT_KINDS",
    "HUMAN",
    "Fingerprint",
    "TrafficSimulator",
    "analyst_label",
    "load_fingerprints",
]

#: The bot kinds the simulator knows, in the order their class codes are assigned.
BOT_KINDS: tuple[str, ...] = (
    "naive_script",
    "scraper",
    "credential_stuffer",
    "headless_impersonator",
    "known_crawler",
)
#: Label and ``bot_kind`` of human records.
HUMAN = "human"

#: Fingerprint families; ``load_fingerprints`` assigns one of these to each CSV row.
FAMILIES: tuple[str, ...] = ("chromium", "firefox", "safari", "library", "malware", "other")

#: Ground-truth fields added to every record after the key, feature and context fields.
TRUTH_FIELDS: tuple[str, ...] = ("label", "bot_kind")

#: Hostnames used when none are given.
DEFAULT_HOSTS: tuple[str, ...] = (
    "www.example.com",
    "shop.example.com",
    "login.example.com",
    "api.example.com",
    "blog.example.com",
)

E_UNKNOWN_KIND = "unknown bot kind {kind!r}; allowed: {allowed}"

_CLASSES: tuple[str, ...] = (HUMAN, *BOT_KINDS)
_CODE = {name: code for code, name in enumerate(_CLASSES)}
_BROWSER_FAMILY = {"chromium": "Chrome", "firefox": "Firefox", "safari": "Safari"}
_MALWARE_WORDS = ("cobalt", "sliver", "icedid", "qakbot", "pikabot", "darkgate", "lumma", "havoc")

#: Share of each kind among bots when ``records`` mixes several kinds.
_KIND_WEIGHTS: dict[str, float] = {
    "naive_script": 0.30,
    "scraper": 0.25,
    "credential_stuffer": 0.15,
    "headless_impersonator": 0.20,
    "known_crawler": 0.10,
}

# --------------------------------------------------------------------------------------------
# Fingerprints
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Fingerprint:
    """One real JA4 from the FoxIO mapping, with the client family the simulator uses it for.

    ``family`` is one of ``chromium``, ``firefox``, ``safari`` (browsers), ``library`` (HTTP
    libraries such as Python or Go), ``malware`` (C2 agents) or ``other`` (devices, VPNs).
    """

    application: str
    ja4: str
    family: str


def _family(application: str, library: str) -> str:
    app = application.lower()
    if "chrom" in app:
        return "chromium"
    if "firefox" in app:
        return "firefox"
    if "safari" in app:
        return "safari"
    if any(word in app for word in _MALWARE_WORDS):
        return "malware"
    if not app and library:
        return "library"
    return "other"


@lru_cache(maxsize=1)
def _fingerprints() -> tuple[Fingerprint, ...]:
    text = (
        resources.files("ja4_dev")
        .joinpath("data/ja4plus-mapping.csv")
        .read_text(encoding="utf-8")
    )
    out: list[Fingerprint] = []
    for row in csv.DictReader(io.StringIO(text)):
        ja4 = (row.get("ja4") or "").strip()
        if not ja4:
            continue
        app = (row.get("Application") or "").strip()
        lib = (row.get("Library") or "").strip()
        dev = (row.get("Device") or "").strip()
        out.append(Fingerprint(application=app or lib or dev, ja4=ja4, family=_family(app, lib)))
    return tuple(out)


def load_fingerprints() -> list[Fingerprint]:
    """Return the JA4 fingerprints of the packaged FoxIO mapping (rows with a ``ja4`` only).

    Records only ever carry these strings, so every simulated JA4 is a real one.
    """
    return list(_fingerprints())


# --------------------------------------------------------------------------------------------
# Address space
# --------------------------------------------------------------------------------------------

# (CIDR, ASN, country, weight).  Plausible consumer-ISP ranges and the ISPs' real ASNs.
_RESIDENTIAL: tuple[tuple[str, int, str, float], ...] = (
    ("73.0.0.0/10", 7922, "US", 0.15),  # Comcast
    ("99.0.0.0/11", 7018, "US", 0.08),  # AT&T
    ("71.160.0.0/11", 701, "US", 0.07),  # Verizon
    ("99.224.0.0/11", 812, "CA", 0.03),  # Rogers
    ("79.192.0.0/10", 3320, "DE", 0.08),  # Deutsche Telekom
    ("90.0.0.0/11", 3215, "FR", 0.06),  # Orange
    ("82.64.0.0/12", 12322, "FR", 0.03),  # Free
    ("86.128.0.0/11", 2856, "GB", 0.07),  # BT
    ("83.32.0.0/11", 3352, "ES", 0.04),  # Telefonica
    ("77.160.0.0/12", 1136, "NL", 0.03),  # KPN
    ("126.0.0.0/10", 17676, "JP", 0.06),  # SoftBank
    ("1.128.0.0/11", 1221, "AU", 0.03),  # Telstra
    ("177.32.0.0/12", 28573, "BR", 0.06),  # Claro
    ("49.36.0.0/14", 55836, "IN", 0.07),  # Reliance Jio
    ("122.160.0.0/12", 24560, "IN", 0.04),  # Airtel
)
# Hosting and cloud ranges: where most bots (and VPN exits) live.
_DATACENTER: tuple[tuple[str, int, str, float], ...] = (
    ("3.80.0.0/12", 16509, "US", 0.18),  # Amazon
    ("18.184.0.0/15", 16509, "DE", 0.06),  # Amazon
    ("34.64.0.0/10", 396982, "US", 0.12),  # Google Cloud
    ("104.248.0.0/16", 14061, "NL", 0.07),  # DigitalOcean
    ("167.99.0.0/16", 14061, "US", 0.07),  # DigitalOcean
    ("51.68.0.0/16", 16276, "FR", 0.09),  # OVH
    ("95.216.0.0/16", 24940, "FI", 0.07),  # Hetzner
    ("88.198.0.0/16", 24940, "DE", 0.06),  # Hetzner
    ("45.79.0.0/16", 63949, "US", 0.06),  # Linode
    ("45.32.0.0/16", 20473, "US", 0.06),  # Vultr
    ("47.74.0.0/15", 45102, "SG", 0.08),  # Alibaba
    ("43.128.0.0/14", 132203, "SG", 0.06),  # Tencent
)
# Declared crawlers and their operators' ranges.
_CRAWLERS: tuple[tuple[str, str, int, str, float], ...] = (
    ("Googlebot", "66.249.64.0/19", 15169, "US", 0.45),
    ("Bingbot", "157.55.39.0/24", 8075, "US", 0.25),
    ("Applebot", "17.241.0.0/16", 714, "US", 0.10),
    ("YandexBot", "213.180.192.0/19", 13238, "RU", 0.10),
    ("DuckDuckBot", "20.191.45.0/24", 8075, "US", 0.10),
)
# Hours from UTC used for the human day/night cycle.
_UTC_OFFSET = {
    "US": -6.0, "CA": -5.0, "DE": 1.0, "FR": 1.0, "GB": 0.0, "ES": 1.0, "NL": 1.0, "JP": 9.0,
    "AU": 10.0, "BR": -3.0, "IN": 5.5, "FI": 2.0, "SG": 8.0, "RU": 3.0,
}

#: Share of each bot kind's addresses that are residential proxies rather than hosting.
_PROXY_SHARE = {
    "naive_script": 0.05,
    "scraper": 0.15,
    "credential_stuffer": 0.35,
    "headless_impersonator": 0.25,
}
#: Share of human addresses that are VPN exits in hosting ranges.
_HUMAN_VPN_SHARE = 0.04


@dataclass(frozen=True)
class _Blocks:
    """Address blocks as arrays: network base, prefix length, ASN and country."""

    base: np.ndarray  # uint32
    plen: np.ndarray  # int64
    asn: np.ndarray  # int64
    cc: tuple[str, ...]
    weight: np.ndarray  # float64, sums to 1


def _blocks(rows: Sequence[tuple[str, int, str, float]]) -> _Blocks:
    base, plen = [], []
    for cidr, *_ in rows:
        net, bits = cidr.split("/")
        a, b, c, d = (int(x) for x in net.split("."))
        base.append((a << 24) | (b << 16) | (c << 8) | d)
        plen.append(int(bits))
    weight = np.array([r[3] for r in rows], dtype=float)
    return _Blocks(
        base=np.array(base, dtype=np.uint32),
        plen=np.array(plen, dtype=np.int64),
        asn=np.array([r[1] for r in rows], dtype=np.int64),
        cc=tuple(r[2] for r in rows),
        weight=weight / weight.sum(),
    )


@dataclass(frozen=True)
class _Pool:
    """A set of source addresses with their ASN, country and (crawlers) declared bot name.

    ``host_bits`` is how much of each address may change when a key collision forces a new
    address: a fresh address stays in the same range, so the same ASN and country hold.
    """

    ip: np.ndarray  # uint32
    asn: np.ndarray  # int64
    cc: np.ndarray  # object (str)
    bot_name: np.ndarray  # object (str)
    host_bits: np.ndarray  # int64
    weight: np.ndarray  # float64, sums to 1


def _random_hosts(rng: np.random.Generator, base: np.ndarray, plen: np.ndarray) -> np.ndarray:
    """Random addresses inside the given networks, avoiding .0 and .255."""
    size = (np.uint64(1) << (32 - plen).astype(np.uint64)).astype(np.float64)
    offset = (rng.random(base.shape[0]) * size).astype(np.uint64)
    ip = (base.astype(np.uint64) + offset).astype(np.uint32)
    last = rng.integers(1, 255, size=base.shape[0]).astype(np.uint32)
    return (ip & np.uint32(0xFFFFFF00)) | last


def _pool_from_blocks(
    rng: np.random.Generator, blocks: _Blocks, n: int, *, subnets: int | None = None
) -> _Pool:
    """Draw ``n`` addresses from ``blocks``; with ``subnets``, only from that many /24s."""
    if subnets is None:
        which = rng.choice(len(blocks.cc), size=n, p=blocks.weight)
        ip = _random_hosts(rng, blocks.base[which], blocks.plen[which])
    else:
        nets_block = rng.choice(len(blocks.cc), size=subnets, p=blocks.weight)
        nets = _random_hosts(rng, blocks.base[nets_block], blocks.plen[nets_block])
        nets &= np.uint32(0xFFFFFF00)
        pick = rng.choice(subnets, size=n)
        which = nets_block[pick]
        ip = nets[pick] | rng.integers(1, 255, size=n).astype(np.uint32)
    cc = np.array(blocks.cc, dtype=object)[which]
    return _Pool(
        ip=ip,
        asn=blocks.asn[which],
        cc=cc,
        bot_name=np.full(n, "", dtype=object),
        host_bits=np.full(n, 8, dtype=np.int64),
        weight=np.full(n, 1.0 / max(n, 1)),
    )


def _concat_pools(pools: Sequence[_Pool], weights: Sequence[float]) -> _Pool:
    parts = [(p, w) for p, w in zip(pools, weights) if p.ip.size and w > 0]
    weight = np.concatenate([p.weight * w for p, w in parts])
    return _Pool(
        ip=np.concatenate([p.ip for p, _ in parts]),
        asn=np.concatenate([p.asn for p, _ in parts]),
        cc=np.concatenate([p.cc for p, _ in parts]),
        bot_name=np.concatenate([p.bot_name for p, _ in parts]),
        host_bits=np.concatenate([p.host_bits for p, _ in parts]),
        weight=weight / weight.sum(),
    )


# --------------------------------------------------------------------------------------------
# Profiles: one distribution per feature and class
# --------------------------------------------------------------------------------------------
# Spec forms: ("beta", a, b), ("flag", p), ("lognorm", median, sigma), ("normal", mu, sd),
# ("gamma", shape, scale), ("one_plus_poisson", lam).  "_busy" is the share of the window's
# hits that fall in its busiest minute; it becomes ``hit_velocity``.

Spec = tuple[Any, ...]


def _p(**kw: Spec) -> dict[str, Spec]:
    return kw


_HUMAN_PROFILE = _p(
    hits=("lognorm", 12, 1.1), _busy=("beta", 3, 5),
    header_count=("normal", 15, 2), has_accept_language=("flag", 0.98),
    has_cookie=("flag", 0.85), has_referer=("flag", 0.8), has_sec_ch_ua=("flag", 0.97),
    modern_browser_score=("beta", 14, 1.6), ua_ch_mismatch=("flag", 0.01),
    header_order_shared_count=("lognorm", 25, 1.0),
    post_ratio=("beta", 1, 25), fuzzing_index=("gamma", 2, 0.2), orphan_ratio=("beta", 1.5, 12),
    asset_ratio=("beta", 6, 4), direct_access_ratio=("beta", 1.5, 10),
    ip_id_zero_ratio=("beta", 1, 20), multiplexing_efficiency=("lognorm", 8, 0.6),
    mss_mobile_mismatch=("flag", 0.02), request_size_variance=("lognorm", 15000, 1.0),
    port_exhaustion_ratio=("beta", 1, 60), max_keepalives=("lognorm", 20, 0.8),
    src_port_density=("beta", 1.2, 20), tcp_shared_count=("lognorm", 30, 1.0),
    h2_settings_known=("flag", 0.97), h2_pseudo_order_match=("flag", 0.99),
    fingerprint_coherence_score=("beta", 18, 2), tls_h2_family_mismatch=("flag", 0.01),
    is_ua_rotating=("flag", 0.005), distinct_ja4_count=("one_plus_poisson", 0.3),
    ja4_asn_concentration=("beta", 1.5, 20), ja4_country_concentration=("beta", 2, 6),
    path_transition_entropy=("normal", 2.6, 0.7), cadence_cv=("lognorm", 1.6, 0.4),
    burst_ratio=("beta", 2, 8), pause_ratio=("beta", 5, 4), host_diversity=("beta", 2, 6),
    lag1_autocorrelation=("normal", 0.1, 0.2), benford_deviation=("beta", 2, 18),
)
# Privacy tools, corporate proxies and power users: humans that look a little like bots.
_ATYPICAL_HUMAN_PROFILE = _p(
    hits=("lognorm", 80, 1.2), _busy=("beta", 3, 4),
    header_count=("normal", 12, 3), has_accept_language=("flag", 0.8),
    has_cookie=("flag", 0.3), has_referer=("flag", 0.3), has_sec_ch_ua=("flag", 0.8),
    modern_browser_score=("beta", 6, 2), ua_ch_mismatch=("flag", 0.08),
    header_order_shared_count=("lognorm", 150, 1.0),
    post_ratio=("beta", 1.5, 10), fuzzing_index=("gamma", 2, 0.5), orphan_ratio=("beta", 3, 6),
    asset_ratio=("beta", 2, 6), direct_access_ratio=("beta", 3, 6),
    ip_id_zero_ratio=("beta", 4, 4), multiplexing_efficiency=("lognorm", 3, 0.7),
    mss_mobile_mismatch=("flag", 0.1), request_size_variance=("lognorm", 3000, 1.2),
    port_exhaustion_ratio=("beta", 1.5, 12), max_keepalives=("lognorm", 8, 1.0),
    src_port_density=("beta", 2, 8), tcp_shared_count=("lognorm", 150, 1.0),
    h2_settings_known=("flag", 0.85), h2_pseudo_order_match=("flag", 0.95),
    fingerprint_coherence_score=("beta", 7, 3), tls_h2_family_mismatch=("flag", 0.06),
    is_ua_rotating=("flag", 0.05), distinct_ja4_count=("one_plus_poisson", 1.2),
    ja4_asn_concentration=("beta", 3, 8), ja4_country_concentration=("beta", 3, 5),
    path_transition_entropy=("normal", 1.8, 0.8), cadence_cv=("lognorm", 0.9, 0.5),
    burst_ratio=("beta", 3, 5), pause_ratio=("beta", 3, 5), host_diversity=("beta", 3, 4),
    lag1_autocorrelation=("normal", 0.25, 0.25), benford_deviation=("beta", 3, 8),
)
_BOT_PROFILES: dict[str, dict[str, Spec]] = {
    # Library clients (requests, Go net/http) with default headers, looping on a timer.
    "naive_script": _p(
        hits=("lognorm", 60, 1.0), _busy=("beta", 2, 20),
        header_count=("normal", 5, 1.5), has_accept_language=("flag", 0.1),
        has_cookie=("flag", 0.05), has_referer=("flag", 0.03), has_sec_ch_ua=("flag", 0.03),
        modern_browser_score=("beta", 1.5, 9), ua_ch_mismatch=("flag", 0.05),
        header_order_shared_count=("lognorm", 80, 1.0),
        post_ratio=("beta", 1, 8), fuzzing_index=("gamma", 2, 1.0), orphan_ratio=("beta", 9, 1.5),
        asset_ratio=("beta", 1, 40), direct_access_ratio=("beta", 9, 1.5),
        ip_id_zero_ratio=("beta", 8, 2), multiplexing_efficiency=("lognorm", 1.3, 0.3),
        mss_mobile_mismatch=("flag", 0.04), request_size_variance=("lognorm", 80, 1.5),
        port_exhaustion_ratio=("beta", 3, 8), max_keepalives=("lognorm", 2, 0.7),
        src_port_density=("beta", 5, 3), tcp_shared_count=("lognorm", 15, 1.0),
        h2_settings_known=("flag", 0.05), h2_pseudo_order_match=("flag", 0.1),
        fingerprint_coherence_score=("beta", 3, 5), tls_h2_family_mismatch=("flag", 0.1),
        is_ua_rotating=("flag", 0.08), distinct_ja4_count=("one_plus_poisson", 0.2),
        ja4_asn_concentration=("beta", 4, 4), ja4_country_concentration=("beta", 5, 3),
        path_transition_entropy=("normal", 0.4, 0.4), cadence_cv=("lognorm", 0.15, 0.6),
        burst_ratio=("beta", 4, 4), pause_ratio=("beta", 1, 10), host_diversity=("beta", 2, 5),
        lag1_autocorrelation=("normal", 0.6, 0.2), benford_deviation=("beta", 6, 4),
    ),
    # Catalogue harvesters: many deep pages, no assets, rotating user agents.
    "scraper": _p(
        hits=("lognorm", 700, 0.9), _busy=("beta", 2, 30),
        header_count=("normal", 9, 3), has_accept_language=("flag", 0.5),
        has_cookie=("flag", 0.25), has_referer=("flag", 0.2), has_sec_ch_ua=("flag", 0.5),
        modern_browser_score=("beta", 3, 4), ua_ch_mismatch=("flag", 0.3),
        header_order_shared_count=("lognorm", 60, 1.0),
        post_ratio=("beta", 1, 60), fuzzing_index=("gamma", 3, 0.4), orphan_ratio=("beta", 5, 2.5),
        asset_ratio=("beta", 1, 25), direct_access_ratio=("beta", 8, 2),
        ip_id_zero_ratio=("beta", 6, 3), multiplexing_efficiency=("lognorm", 3, 0.6),
        mss_mobile_mismatch=("flag", 0.05), request_size_variance=("lognorm", 2000, 1.0),
        port_exhaustion_ratio=("beta", 2, 6), max_keepalives=("lognorm", 40, 0.8),
        src_port_density=("beta", 4, 4), tcp_shared_count=("lognorm", 40, 1.0),
        h2_settings_known=("flag", 0.55), h2_pseudo_order_match=("flag", 0.6),
        fingerprint_coherence_score=("beta", 3, 4), tls_h2_family_mismatch=("flag", 0.25),
        is_ua_rotating=("flag", 0.7), distinct_ja4_count=("one_plus_poisson", 2.0),
        ja4_asn_concentration=("beta", 3, 5), ja4_country_concentration=("beta", 4, 4),
        path_transition_entropy=("normal", 1.0, 0.5), cadence_cv=("lognorm", 0.4, 0.5),
        burst_ratio=("beta", 6, 3), pause_ratio=("beta", 1, 10), host_diversity=("beta", 5, 3),
        lag1_autocorrelation=("normal", 0.4, 0.2), benford_deviation=("beta", 4, 5),
    ),
    # Login floods from many addresses sharing one toolkit's header order.
    "credential_stuffer": _p(
        hits=("lognorm", 250, 1.0), _busy=("beta", 2, 15),
        header_count=("normal", 11, 2), has_accept_language=("flag", 0.7),
        has_cookie=("flag", 0.6), has_referer=("flag", 0.45), has_sec_ch_ua=("flag", 0.5),
        modern_browser_score=("beta", 4, 3), ua_ch_mismatch=("flag", 0.25),
        header_order_shared_count=("lognorm", 500, 0.8),
        post_ratio=("beta", 15, 2), fuzzing_index=("gamma", 1, 0.1), orphan_ratio=("beta", 6, 2),
        asset_ratio=("beta", 1, 40), direct_access_ratio=("beta", 5, 3),
        ip_id_zero_ratio=("beta", 6, 3), multiplexing_efficiency=("lognorm", 1.3, 0.3),
        mss_mobile_mismatch=("flag", 0.15), request_size_variance=("lognorm", 400, 0.8),
        port_exhaustion_ratio=("beta", 6, 4), max_keepalives=("lognorm", 2, 0.6),
        src_port_density=("beta", 8, 3), tcp_shared_count=("lognorm", 300, 0.8),
        h2_settings_known=("flag", 0.6), h2_pseudo_order_match=("flag", 0.6),
        fingerprint_coherence_score=("beta", 3, 4), tls_h2_family_mismatch=("flag", 0.2),
        is_ua_rotating=("flag", 0.5), distinct_ja4_count=("one_plus_poisson", 1.5),
        ja4_asn_concentration=("beta", 5, 4), ja4_country_concentration=("beta", 5, 3),
        path_transition_entropy=("normal", 0.3, 0.3), cadence_cv=("lognorm", 0.3, 0.5),
        burst_ratio=("beta", 6, 3), pause_ratio=("beta", 1, 8), host_diversity=("beta", 1.5, 8),
        lag1_autocorrelation=("normal", 0.5, 0.2), benford_deviation=("beta", 5, 5),
    ),
    # Headless browsers dressed as Chrome/Firefox/Safari: right JA4, wrong details.
    "headless_impersonator": _p(
        hits=("lognorm", 120, 1.0), _busy=("beta", 3, 8),
        header_count=("normal", 13, 2.5), has_accept_language=("flag", 0.7),
        has_cookie=("flag", 0.5), has_referer=("flag", 0.5), has_sec_ch_ua=("flag", 0.8),
        modern_browser_score=("beta", 7, 3), ua_ch_mismatch=("flag", 0.45),
        header_order_shared_count=("lognorm", 150, 1.0),
        post_ratio=("beta", 2, 8), fuzzing_index=("gamma", 2, 0.3), orphan_ratio=("beta", 4, 4),
        asset_ratio=("beta", 2, 6), direct_access_ratio=("beta", 4, 5),
        ip_id_zero_ratio=("beta", 5, 4), multiplexing_efficiency=("lognorm", 4, 0.6),
        mss_mobile_mismatch=("flag", 0.25), request_size_variance=("lognorm", 5000, 1.2),
        port_exhaustion_ratio=("beta", 2, 10), max_keepalives=("lognorm", 12, 0.8),
        src_port_density=("beta", 3, 5), tcp_shared_count=("lognorm", 120, 1.0),
        h2_settings_known=("flag", 0.55), h2_pseudo_order_match=("flag", 0.5),
        fingerprint_coherence_score=("beta", 4, 4), tls_h2_family_mismatch=("flag", 0.35),
        is_ua_rotating=("flag", 0.3), distinct_ja4_count=("one_plus_poisson", 0.6),
        ja4_asn_concentration=("beta", 4, 5), ja4_country_concentration=("beta", 4, 4),
        path_transition_entropy=("normal", 1.5, 0.6), cadence_cv=("lognorm", 0.5, 0.5),
        burst_ratio=("beta", 5, 4), pause_ratio=("beta", 2, 6), host_diversity=("beta", 2, 4),
        lag1_autocorrelation=("normal", 0.3, 0.25), benford_deviation=("beta", 3, 6),
    ),
    # Declared search-engine crawlers: honest, broad, steady.
    "known_crawler": _p(
        hits=("lognorm", 150, 1.0), _busy=("beta", 2, 25),
        header_count=("normal", 8, 2), has_accept_language=("flag", 0.2),
        has_cookie=("flag", 0.03), has_referer=("flag", 0.03), has_sec_ch_ua=("flag", 0.3),
        modern_browser_score=("beta", 4, 4), ua_ch_mismatch=("flag", 0.02),
        header_order_shared_count=("lognorm", 30, 1.0),
        post_ratio=("beta", 1, 200), fuzzing_index=("gamma", 1.5, 0.3), orphan_ratio=("beta", 7, 2),
        asset_ratio=("beta", 2, 6), direct_access_ratio=("beta", 8, 2),
        ip_id_zero_ratio=("beta", 6, 3), multiplexing_efficiency=("lognorm", 6, 0.6),
        mss_mobile_mismatch=("flag", 0.01), request_size_variance=("lognorm", 3000, 1.0),
        port_exhaustion_ratio=("beta", 1.5, 20), max_keepalives=("lognorm", 30, 0.8),
        src_port_density=("beta", 2, 6), tcp_shared_count=("lognorm", 50, 1.0),
        h2_settings_known=("flag", 0.9), h2_pseudo_order_match=("flag", 0.9),
        fingerprint_coherence_score=("beta", 10, 3), tls_h2_family_mismatch=("flag", 0.03),
        is_ua_rotating=("flag", 0.0), distinct_ja4_count=("one_plus_poisson", 0.5),
        ja4_asn_concentration=("beta", 8, 2), ja4_country_concentration=("beta", 6, 2),
        path_transition_entropy=("normal", 3.0, 0.6), cadence_cv=("lognorm", 0.8, 0.4),
        burst_ratio=("beta", 3, 5), pause_ratio=("beta", 2, 5), host_diversity=("beta", 6, 2),
        lag1_autocorrelation=("normal", 0.2, 0.2), benford_deviation=("beta", 2, 8),
    ),
}
#: Beta parameters of each kind's stealth (per-feature probability of looking human).
_STEALTH: dict[str, tuple[float, float]] = {
    "naive_script": (3.0, 2.0),
    "scraper": (4.0, 2.0),
    "credential_stuffer": (4.0, 2.0),
    "headless_impersonator": (7.0, 2.0),
    "known_crawler": (3.0, 3.0),
}
#: Each kind's defining traits: they look human only at a quarter of the kind's stealth.
_CORE: dict[str, frozenset[str]] = {
    "naive_script": frozenset({"header_count", "has_cookie", "has_accept_language",
                               "modern_browser_score", "cadence_cv"}),
    "scraper": frozenset({"hits", "asset_ratio", "direct_access_ratio", "is_ua_rotating",
                          "distinct_ja4_count"}),
    "credential_stuffer": frozenset({"post_ratio", "header_order_shared_count",
                                     "port_exhaustion_ratio", "src_port_density"}),
    "headless_impersonator": frozenset({"fingerprint_coherence_score", "burst_ratio"}),
    "known_crawler": frozenset({"ja4_asn_concentration", "host_diversity", "has_cookie"}),
}
_CORE_STEALTH_FACTOR = 0.25
_HUMAN_ATYPICALITY = (1.0, 6.0)
_CAMPAIGN_STEALTH = (12.0, 2.0)
#: A campaign's features that stay bot-like whatever its stealth: its coordination signature.
_CAMPAIGN_SIGNATURE = _p(
    cadence_cv=("lognorm", 0.55, 0.45), burst_ratio=("beta", 5, 4),
    fingerprint_coherence_score=("beta", 7, 4), ua_ch_mismatch=("flag", 0.6),
    ja4_asn_concentration=("beta", 7, 3), tls_h2_family_mismatch=("flag", 0.3),
    is_ua_rotating=("flag", 0.05), has_sec_ch_ua=("flag", 1.0),
)

#: Client family mix per class (before the per-fingerprint split).
_FAMILY_MIX: dict[str, dict[str, float]] = {
    HUMAN: {"chromium": 0.66, "safari": 0.19, "firefox": 0.12, "library": 0.03},
    "naive_script": {"library": 0.85, "malware": 0.10, "other": 0.05},
    "scraper": {"library": 0.55, "chromium": 0.40, "firefox": 0.05},
    "credential_stuffer": {"library": 0.45, "chromium": 0.45, "firefox": 0.05, "safari": 0.05},
    "headless_impersonator": {"chromium": 0.8, "firefox": 0.1, "safari": 0.1},
    "known_crawler": {"chromium": 0.75, "library": 0.25},
}
#: Probability that a JA4 of this family is rare in the global population.
_RARITY = {"chromium": 0.02, "firefox": 0.03, "safari": 0.03, "library": 0.35,
           "malware": 0.9, "other": 0.85}
_HEADER_OFFSET = {"chromium": 1.0, "firefox": -2.0, "safari": -3.0, "library": -7.0,
                  "malware": -7.0, "other": -7.0}

_RATIO_FEATURES = frozenset({
    "modern_browser_score", "post_ratio", "orphan_ratio", "asset_ratio", "direct_access_ratio",
    "ip_id_zero_ratio", "port_exhaustion_ratio", "src_port_density",
    "fingerprint_coherence_score", "ja4_asn_concentration", "ja4_country_concentration",
    "burst_ratio", "pause_ratio", "host_diversity", "benford_deviation",
})
_FLAG_FEATURES = frozenset({
    "has_accept_language", "has_cookie", "has_referer", "has_sec_ch_ua", "ua_ch_mismatch",
    "mss_mobile_mismatch", "h2_settings_known", "h2_pseudo_order_match",
    "tls_h2_family_mismatch", "is_ua_rotating", "is_rare_ja4",
})
_COUNT_FEATURES = frozenset({
    "hits", "header_count", "header_order_shared_count", "max_keepalives",
    "tcp_shared_count", "distinct_ja4_count",
})


def _draw(rng: np.random.Generator, spec: Spec, m: int) -> np.ndarray:
    kind = spec[0]
    if kind == "beta":
        return rng.beta(spec[1], spec[2], m)
    if kind == "flag":
        return (rng.random(m) < spec[1]).astype(float)
    if kind == "lognorm":
        return spec[1] * np.exp(spec[2] * rng.standard_normal(m))
    if kind == "normal":
        return spec[1] + spec[2] * rng.standard_normal(m)
    if kind == "gamma":
        return rng.gamma(spec[1], spec[2], m)
    if kind == "one_plus_poisson":
        return 1.0 + rng.poisson(spec[1], m)
    raise ValueError(f"unknown distribution {kind!r}")


def _draw_profile(
    rng: np.random.Generator, profile: Mapping[str, Spec], m: int
) -> dict[str, np.ndarray]:
    return {name: _draw(rng, spec, m) for name, spec in profile.items()}


def _mix(
    rng: np.random.Generator,
    own: dict[str, np.ndarray],
    other: Mapping[str, Spec],
    prob: np.ndarray,
    core: frozenset[str] = frozenset(),
) -> dict[str, np.ndarray]:
    """Per feature and record, replace ``own``'s value by a draw from ``other`` with
    probability ``prob`` (one probability per record; a quarter of it for ``core`` features).

    Only the replaced entries are drawn: mixing probabilities are small, so this is much
    cheaper than drawing a full second profile.
    """
    m = prob.shape[0]
    core_prob = prob * _CORE_STEALTH_FACTOR
    for name, values in own.items():
        take = np.flatnonzero(rng.random(m) < (core_prob if name in core else prob))
        if take.size:
            values[take] = _draw(rng, other[name], take.size)
    return own


# --------------------------------------------------------------------------------------------
# Time
# --------------------------------------------------------------------------------------------


def _epoch(value: datetime | float | int) -> float:
    if isinstance(value, datetime):
        if value.tzinfo is None:  # naive datetimes are taken as UTC, like the contract's times
            value = value.replace(tzinfo=timezone.utc)
        return value.timestamp()
    return float(value)


def _iso(epoch: int) -> str:
    return datetime.fromtimestamp(epoch, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _now() -> float:
    return datetime.now(tz=timezone.utc).timestamp()


# --------------------------------------------------------------------------------------------
# Simulator
# --------------------------------------------------------------------------------------------

_LOGIN_WORDS = ("login", "auth", "account", "signin", "sso", "id.")
_API_WORDS = ("api",)
_SHOP_WORDS = ("shop", "store", "catalog", "product")


def _host_weights(hosts: Sequence[str], cls: str) -> np.ndarray:
    """Which hosts a class visits: humans the main site, stuffers the login host, and so on."""
    w = np.ones(len(hosts))
    w[0] = 3.0  # the first host is taken as the main site
    for i, host in enumerate(hosts):
        h = host.lower()
        login = any(x in h for x in _LOGIN_WORDS)
        api = any(x in h for x in _API_WORDS)
        shop = any(x in h for x in _SHOP_WORDS)
        if cls == "credential_stuffer":
            w[i] *= 20.0 if login else 0.2
        elif cls == "scraper":
            w[i] *= 3.0 if shop else (0.2 if login else 1.0)
        elif cls == "naive_script":
            w[i] *= 3.0 if api else 1.0
        elif cls == "known_crawler":
            w[i] *= 0.1 if (login or api) else 1.0
        elif cls == HUMAN:
            w[i] *= 0.5 if (login or api) else 1.0
    return w / w.sum()


@dataclass(frozen=True)
class _Campaign:
    """Infrastructure of one campaign: fixed by seed and campaign id, not by call order."""

    kind: str
    fp: int
    host_idx: np.ndarray
    base: int
    host_bits: int
    asn: int
    cc: str
    bot_name: str


class TrafficSimulator:
    """Labelled per-window feature records for humans and bots, reproducible from ``seed``.

    Successive calls continue one random stream, so a simulator replays the same sequence of
    outputs for the same seed and the same calls (pass ``start``/``end`` to pin the clock).

    :param seed: seed of every random draw, including the address pools.
    :param bot_share: expected share of bot records in :meth:`records` and :meth:`history`.
    :param kinds: bot kinds to mix (subset of :data:`BOT_KINDS`).
    :param n_ips: size of the human address pool.
    :param hosts: hostnames visited; defaults to :data:`DEFAULT_HOSTS`.
    """

    def __init__(
        self,
        *,
        seed: int = 0,
        bot_share: float = 0.1,
        kinds: Sequence[str] = BOT_KINDS,
        n_ips: int = 5000,
        hosts: Sequence[str] | None = None,
    ) -> None:
        kinds = tuple(kinds)
        for kind in kinds:
            _check_kind(kind)
        if not 0.0 <= bot_share <= 1.0:
            raise ValueError(f"bot_share must be in [0, 1], got {bot_share!r}")
        if bot_share > 0 and not kinds:
            raise ValueError("kinds must name at least one bot kind when bot_share > 0")
        if n_ips < 1:
            raise ValueError(f"n_ips must be >= 1, got {n_ips!r}")
        hosts = tuple(hosts) if hosts is not None else DEFAULT_HOSTS
        if not hosts or any(not isinstance(h, str) or not h for h in hosts):
            raise ValueError(f"hosts must be non-empty strings, got {hosts!r}")
        self.seed = seed
        self.bot_share = float(bot_share)
        self.kinds = kinds
        self.n_ips = n_ips
        self.hosts = hosts

        # Separate streams: the pools depend on the seed only, never on which calls came first.
        pool_seq, draw_seq = np.random.SeedSequence(seed).spawn(2)
        self._rng = np.random.default_rng(draw_seq)
        self._fps = _fingerprints()
        ja4s = sorted({fp.ja4 for fp in self._fps})
        self._ja4_strings = np.array(ja4s, dtype=object)
        self._fp_ja4 = np.array([ja4s.index(fp.ja4) for fp in self._fps], dtype=np.int64)
        self._fp_family = np.array([fp.family for fp in self._fps], dtype=object)
        self._fp_browser = np.array(
            [_BROWSER_FAMILY.get(fp.family, "") for fp in self._fps], dtype=object
        )
        self._fp_header_offset = np.array([_HEADER_OFFSET[fp.family] for fp in self._fps])
        # JA4 part a ends with the ALPN: "h2"/"h3" speak HTTP/2 or 3, "h1"/"00" do not.
        self._fp_h2 = np.array([fp.ja4.split("_")[0][-2:] in ("h2", "h3") for fp in self._fps])
        no_sni = np.array([fp.ja4[3] == "i" for fp in self._fps])
        self._fp_rarity = np.array([_RARITY[fp.family] for fp in self._fps]) + 0.3 * no_sni
        self._fp_weights = {cls: self._family_weights(cls, no_sni) for cls in _CLASSES}
        self._host_weights = {cls: _host_weights(hosts, cls) for cls in _CLASSES}
        self._pools = self._build_pools(np.random.default_rng(pool_seq))
        kind_w = np.array([_KIND_WEIGHTS[k] for k in kinds]) if kinds else np.ones(0)
        self._kind_codes = np.array([_CODE[k] for k in kinds], dtype=np.int64)
        self._kind_p = kind_w / kind_w.sum() if kinds else kind_w

    # -- public API --------------------------------------------------------------------------

    def records(
        self,
        n: int,
        *,
        start: datetime | float | None = None,
        window_s: int = 3600,
        span_s: float | None = None,
    ) -> list[dict]:
        """``n`` labelled records, humans and bots mixed with ``bot_share``.

        Windows are aligned to ``window_s`` and spread uniformly over ``[start, start+span_s)``
        (default: one window starting at the current window).
        """
        windows = self._windows(n, start, window_s, span_s)
        return self._make(self._classes(n), windows)

    def campaign(
        self,
        n: int,
        *,
        kind: str = "headless_impersonator",
        start: datetime | float | None = None,
        window_s: int = 3600,
        span_s: float | None = None,
        campaign_id: str = "campaign-1",
    ) -> list[dict]:
        """``n`` bot records of one coordinated campaign of ``kind``.

        One JA4 (a real browser JA4 for impersonators, ``browser_family`` set accordingly), one
        ASN and a narrow address range, hosts and a shared header order: fixed by the seed and
        ``campaign_id``.  Most features look human; a few signature features (cadence, bursts,
        coherence, UA/client-hint mismatch, header-order sharing, ASN concentration) do not, so
        an unsupervised detector catches part of it and labels separate it.
        """
        _check_kind(kind)
        windows = self._windows(n, start, window_s, span_s)
        per_window = int(np.unique(windows, return_counts=True)[1].max()) if n else 1
        camp = self._campaign_infra(kind, campaign_id, per_window)
        classes = np.full(n, _CODE[kind], dtype=np.int64)
        return self._make(classes, windows, camp)

    def history(
        self,
        days: float,
        records_per_hour: int,
        *,
        end: datetime | float | None = None,
    ) -> list[dict]:
        """A labelled history: ``round(days*24)`` complete hourly windows ending at ``end``.

        The last window is the last full hour before ``end`` (default: now); each window holds
        ``records_per_hour`` records mixed with ``bot_share``.
        """
        if days <= 0:
            raise ValueError(f"days must be > 0, got {days!r}")
        if records_per_hour < 0:
            raise ValueError(f"records_per_hour must be >= 0, got {records_per_hour!r}")
        end_e = _now() if end is None else _epoch(end)
        n_windows = max(1, int(round(days * 24)))
        last = int(math.floor(end_e / 3600)) * 3600 - 3600
        firsts = last - 3600 * np.arange(n_windows - 1, -1, -1, dtype=np.int64)
        windows = np.repeat(firsts, records_per_hour)
        return self._make(self._classes(windows.shape[0]), windows)

    # -- set-up --------------------------------------------------------------------------------

    def _family_weights(self, cls: str, no_sni: np.ndarray) -> np.ndarray:
        """Weight of each fingerprint for a class: family mix, then SNI vs direct-IP variants."""
        mix = _FAMILY_MIX[cls]
        fam = self._fp_family
        w = np.zeros(len(self._fps))
        for family, share in mix.items():
            members = fam == family
            if cls == HUMAN and family == "library":
                # Humans' non-browser clients are desktop apps on the OS HTTP stack.
                apps = np.array([fp.application.lower() for fp in self._fps])
                wininet = members & (np.char.find(apps, "wininet") >= 0)
                members = wininet if wininet.any() else members
            if not members.any():
                continue
            sni_p = 0.97 if cls in (HUMAN, "known_crawler") else 0.8
            per = np.where(no_sni, 1.0 - sni_p, sni_p) * members
            if per.sum() > 0:
                w += share * per / per.sum()
        if w.sum() == 0:  # a CSV without the expected families: any JA4 will do
            w[:] = 1.0
        return w / w.sum()

    def _build_pools(self, rng: np.random.Generator) -> dict[int, _Pool]:
        res, dc = _blocks(_RESIDENTIAL), _blocks(_DATACENTER)
        pools: dict[int, _Pool] = {}
        n_vpn = int(round(self.n_ips * _HUMAN_VPN_SHARE))
        human = _concat_pools(
            [_pool_from_blocks(rng, res, self.n_ips - n_vpn), _pool_from_blocks(rng, dc, n_vpn)],
            [1.0 - _HUMAN_VPN_SHARE, _HUMAN_VPN_SHARE],
        )
        # A few addresses (shared NAT, heavy users) send much more than others: Zipf weights.
        zipf = 1.0 / np.arange(1, human.ip.size + 1) ** 0.6
        pools[_CODE[HUMAN]] = _Pool(
            human.ip, human.asn, human.cc, human.bot_name, human.host_bits,
            rng.permutation(zipf / zipf.sum()),
        )
        n_bot = max(32, self.n_ips // 20)
        for kind, share in _PROXY_SHARE.items():
            n_proxy = int(round(n_bot * share))
            subnets = int(rng.integers(4, 11))
            pools[_CODE[kind]] = _concat_pools(
                [
                    _pool_from_blocks(rng, dc, n_bot - n_proxy, subnets=subnets),
                    _pool_from_blocks(rng, res, n_proxy),
                ],
                [1.0 - share, share],
            )
        crawl_parts, crawl_w = [], []
        for name, cidr, asn, cc, weight in _CRAWLERS:
            part = _pool_from_blocks(rng, _blocks([(cidr, asn, cc, 1.0)]), max(8, n_bot // 4))
            crawl_parts.append(
                _Pool(part.ip, part.asn, part.cc, np.full(part.ip.size, name, dtype=object),
                      part.host_bits, part.weight)
            )
            crawl_w.append(weight)
        pools[_CODE["known_crawler"]] = _concat_pools(crawl_parts, crawl_w)
        return pools

    def _campaign_infra(self, kind: str, campaign_id: str, per_window: int) -> _Campaign:
        # crc32, not hash(): str hashes are salted per process and would break reproducibility.
        rng = np.random.default_rng([self.seed & 0xFFFFFFFF, zlib.crc32(campaign_id.encode())])
        w = self._fp_weights[kind].copy()
        if kind == "headless_impersonator":
            # Impersonate the dominant browser's most common (SNI) fingerprint family.
            sni = np.array([fp.ja4[3] == "d" for fp in self._fps])
            chrome = (self._fp_family == "chromium") & sni
            if chrome.any():
                w = chrome / chrome.sum()
        fp = int(rng.choice(len(self._fps), p=w))
        n_targets = int(rng.integers(1, min(2, len(self.hosts)) + 1))
        host_idx = rng.choice(
            len(self.hosts), size=n_targets, replace=False, p=self._host_weights[kind]
        )
        # Enough addresses for every (address, host) key of the busiest window to be distinct.
        needed = math.ceil(math.log2(max(2.0, 2.0 * per_window / n_targets)))
        host_bits = int(np.clip(needed, 8, 16))
        if kind == "known_crawler":
            name, cidr, asn, cc, _ = _CRAWLERS[int(rng.integers(len(_CRAWLERS)))]
            blocks, bot_name = _blocks([(cidr, asn, cc, 1.0)]), name
        else:
            blocks, bot_name = _blocks(_DATACENTER), ""
        b = int(rng.choice(len(blocks.cc), p=blocks.weight))
        bits = min(host_bits, 32 - int(blocks.plen[b]))
        offset = int(rng.integers(0, 1 << (32 - int(blocks.plen[b]) - bits))) << bits
        return _Campaign(
            kind=kind, fp=fp, host_idx=host_idx, base=int(blocks.base[b]) + offset,
            host_bits=bits, asn=int(blocks.asn[b]), cc=blocks.cc[b], bot_name=bot_name,
        )

    # -- generation ----------------------------------------------------------------------------

    def _classes(self, n: int) -> np.ndarray:
        if n < 0:
            raise ValueError(f"n must be >= 0, got {n!r}")
        classes = np.zeros(n, dtype=np.int64)
        if self.kinds and self.bot_share > 0:
            is_bot = self._rng.random(n) < self.bot_share
            classes[is_bot] = self._rng.choice(
                self._kind_codes, size=int(is_bot.sum()), p=self._kind_p
            )
        return classes

    def _windows(
        self, n: int, start: datetime | float | None, window_s: int, span_s: float | None
    ) -> np.ndarray:
        if n < 0:
            raise ValueError(f"n must be >= 0, got {n!r}")
        if int(window_s) != window_s or window_s <= 0:
            raise ValueError(f"window_s must be a positive integer, got {window_s!r}")
        window_s = int(window_s)
        span = float(window_s if span_s is None else span_s)
        if span <= 0:
            raise ValueError(f"span_s must be > 0, got {span_s!r}")
        t0 = math.floor(_now() / window_s) * window_s if start is None else _epoch(start)
        t = t0 + self._rng.random(n) * span
        return (np.floor(t / window_s) * window_s).astype(np.int64)

    def _make(
        self, classes: np.ndarray, windows: np.ndarray, camp: _Campaign | None = None
    ) -> list[dict]:
        n = classes.shape[0]
        rng = self._rng
        cols: dict[str, np.ndarray] = {f: np.empty(n) for f in DEFAULT_FEATURES}
        fp = np.empty(n, dtype=np.int64)
        host = np.empty(n, dtype=np.int64)
        ip = np.empty(n, dtype=np.uint32)
        bits = np.empty(n, dtype=np.int64)
        asn = np.empty(n, dtype=np.int64)
        cc = np.empty(n, dtype=object)
        bot_name = np.empty(n, dtype=object)
        for code, cls in enumerate(_CLASSES):  # fixed order keeps the draws reproducible
            idx = np.flatnonzero(classes == code)
            m = idx.size
            if m == 0:
                continue
            if camp is None:
                fp[idx] = rng.choice(len(self._fps), size=m, p=self._fp_weights[cls])
                host[idx] = rng.choice(len(self.hosts), size=m, p=self._host_weights[cls])
                pool = self._pools[code]
                pick = rng.choice(pool.ip.size, size=m, p=pool.weight)
                ip[idx], bits[idx], asn[idx] = pool.ip[pick], pool.host_bits[pick], pool.asn[pick]
                cc[idx], bot_name[idx] = pool.cc[pick], pool.bot_name[pick]
            else:
                fp[idx] = camp.fp
                host[idx] = rng.choice(camp.host_idx, size=m)
                ip[idx] = _campaign_ips(rng, camp, m)
                bits[idx], asn[idx] = camp.host_bits, camp.asn
                cc[idx], bot_name[idx] = camp.cc, camp.bot_name
            block = self._features(
                cls, m, fp[idx], windows[idx], cc[idx], campaign=camp is not None
            )
            for name in DEFAULT_FEATURES:
                cols[name][idx] = block[name]

        ip = _dedupe(rng, windows, ip, bits, self._fp_ja4[fp], host)
        if camp is not None and n:
            # Everyone in the campaign sends the same header order: count the others per window.
            pairs = np.unique(np.stack([windows, ip.astype(np.int64)]), axis=1)
            w_u, per_w = np.unique(pairs[0], return_counts=True)
            others = per_w[np.searchsorted(w_u, windows)] - 1
            base = cols["header_order_shared_count"]
            cols["header_order_shared_count"] = np.maximum(
                base, np.floor(others * rng.uniform(0.85, 1.0, n) + rng.poisson(20, n))
            )
        return self._to_dicts(classes, windows, ip, fp, host, asn, cc, bot_name, cols)

    def _features(
        self,
        cls: str,
        m: int,
        fp: np.ndarray,
        windows: np.ndarray,
        cc: np.ndarray,
        *,
        campaign: bool = False,
    ) -> dict[str, np.ndarray]:
        rng = self._rng
        if cls == HUMAN:
            own = _draw_profile(rng, _HUMAN_PROFILE, m)
            feats = _mix(rng, own, _ATYPICAL_HUMAN_PROFILE, rng.beta(*_HUMAN_ATYPICALITY, m))
        else:
            own = _draw_profile(rng, _BOT_PROFILES[cls], m)
            stealth = rng.beta(*(_CAMPAIGN_STEALTH if campaign else _STEALTH[cls]), m)
            feats = _mix(rng, own, _HUMAN_PROFILE, stealth, _CORE[cls])
            if campaign:
                feats.update(_draw_profile(rng, _CAMPAIGN_SIGNATURE, m))
        return self._cohere(cls, feats, fp, windows, cc)

    def _cohere(
        self,
        cls: str,
        f: dict[str, np.ndarray],
        fp: np.ndarray,
        windows: np.ndarray,
        cc: np.ndarray,
    ) -> dict[str, np.ndarray]:
        """Make features agree with each other, with the JA4 and with the time of day."""
        rng = self._rng
        m = fp.shape[0]
        human = cls == HUMAN
        family = self._fp_family[fp]
        chromium = family == "chromium"
        h2 = self._fp_h2[fp]

        hits = f["hits"]
        if human:
            cc_u, cc_inv = np.unique(cc.astype(str), return_inverse=True)
            offset = np.array([_UTC_OFFSET.get(c, 0.0) for c in cc_u])[cc_inv.reshape(-1)]
            local = (windows % 86400) / 3600.0 + offset
            # Day/night cycle: lowest around 04:00 local time, highest around 16:00.
            hits = hits * (0.35 + 0.5 * (1.0 - np.cos(2 * np.pi * (local - 4.0) / 24.0)))
            f["header_count"] = f["header_count"] + self._fp_header_offset[fp]
        hits = np.clip(np.round(hits), 1, 50000)
        f["hits"] = hits
        f["hit_velocity"] = np.round(np.maximum(hits * f.pop("_busy"), 1.0) / 60.0, 4)

        # Client hints are a Chromium feature; other clients only have them when spoofing.
        spoof = (rng.random(m) < 0.3) if not human else np.zeros(m, dtype=bool)
        f["has_sec_ch_ua"] = f["has_sec_ch_ua"] * (chromium | spoof)
        f["ua_ch_mismatch"] = f["ua_ch_mismatch"] * f["has_sec_ch_ua"]
        # No ALPN h2/h3 in the JA4, no HTTP/2 traits to compare.
        for name in ("h2_settings_known", "h2_pseudo_order_match", "tls_h2_family_mismatch"):
            f[name] = f[name] * h2
        f["is_rare_ja4"] = (rng.random(m) < self._fp_rarity[fp]).astype(float)

        for name in _RATIO_FEATURES:
            f[name] = np.clip(f[name], 0.0, 1.0)
        for name in _COUNT_FEATURES:
            f[name] = np.maximum(np.round(f[name]), 0.0)
        f["header_count"] = np.clip(f["header_count"], 2, 40)
        f["max_keepalives"] = np.clip(f["max_keepalives"], 1, hits)
        f["distinct_ja4_count"] = np.clip(f["distinct_ja4_count"], 1, hits)
        f["multiplexing_efficiency"] = np.round(np.clip(f["multiplexing_efficiency"], 1.0, hits), 3)
        f["request_size_variance"] = np.round(f["request_size_variance"], 1)
        f["fuzzing_index"] = np.round(f["fuzzing_index"], 4)
        # Few requests, few transitions and gaps: entropy and gap statistics collapse.
        f["path_transition_entropy"] = np.clip(f["path_transition_entropy"], 0.0, np.log2(hits))
        few = hits < 3
        f["cadence_cv"] = np.where(few, 0.0, np.clip(f["cadence_cv"], 0.0, 20.0))
        lag1 = np.clip(f["lag1_autocorrelation"], -1.0, 1.0)
        f["lag1_autocorrelation"] = np.where(few, 0.0, lag1)
        return f

    def _to_dicts(
        self,
        classes: np.ndarray,
        windows: np.ndarray,
        ip: np.ndarray,
        fp: np.ndarray,
        host: np.ndarray,
        asn: np.ndarray,
        cc: np.ndarray,
        bot_name: np.ndarray,
        cols: dict[str, np.ndarray],
    ) -> list[dict]:
        # Strings are built once per distinct value and fanned out by index: the per-record
        # work is only the final dict construction.
        w_u, w_inv = np.unique(windows, return_inverse=True)
        ws = np.array([_iso(int(t)) for t in w_u], dtype=object)[w_inv]
        ip_u, ip_inv = np.unique(ip, return_inverse=True)
        a, b, c, d = ip_u >> 24, (ip_u >> 16) & 255, (ip_u >> 8) & 255, ip_u & 255
        ip_s = np.array(
            [f"{p}.{q}.{r}.{s}" for p, q, r, s in zip(*(x.tolist() for x in (a, b, c, d)))],
            dtype=object,
        )[ip_inv]
        hosts = np.array(self.hosts, dtype=object)[host]
        ja4 = self._ja4_strings[self._fp_ja4[fp]]
        browser = self._fp_browser[fp]
        labels = np.where(classes == 0, HUMAN, "bot").astype(object)
        kinds = np.array(_CLASSES, dtype=object)[classes]

        keys = (*KEY_FIELDS, *DEFAULT_FEATURES, *CONTEXT_FIELDS, *TRUTH_FIELDS)
        context = {
            "asn_number": asn.tolist(),
            "country_code": cc.tolist(),
            "browser_family": browser.tolist(),
            "bot_name": bot_name.tolist(),
        }
        columns = [
            ws.tolist(), ip_s.tolist(), ja4.tolist(), hosts.tolist(),
            *(cols[name].astype(float).tolist() for name in DEFAULT_FEATURES),
            *(context[name] for name in CONTEXT_FIELDS),
            labels.tolist(), kinds.tolist(),
        ]
        return [dict(zip(keys, row)) for row in zip(*columns)]


def analyst_label(record: Mapping[str, Any], source: str = "simulator") -> dict[str, Any]:
    """The label a perfect analyst gives a simulated record (a :mod:`ja4_core.label_record`
    label): its key, its true ``label`` and, on a bot, its true ``bot_kind`` as ``kind``, so
    the trainer can report recall per bot kind. ``bot_kind`` may be absent (a record whose
    truth was popped): then the label names no kind.

    >>> analyst_label({"window_start": 0, "src_ip": "a", "ja4": "j", "host": "h", "label": "bot",
    ...                "bot_kind": "scraper"})["kind"]
    'scraper'
    """
    label = {**{k: record[k] for k in KEY_FIELDS}, "label": record["label"], "source": source}
    kind = record.get("bot_kind")
    if record["label"] == "bot" and kind and kind != HUMAN:
        label["kind"] = str(kind)
    return label


def _check_kind(kind: str) -> None:
    if kind not in BOT_KINDS:
        raise ValueError(E_UNKNOWN_KIND.format(kind=kind, allowed=", ".join(BOT_KINDS)))


def _campaign_ips(rng: np.random.Generator, camp: _Campaign, m: int) -> np.ndarray:
    size = 1 << camp.host_bits
    ip = np.uint32(camp.base) + rng.integers(0, size, size=m).astype(np.uint32)
    return (ip & np.uint32(0xFFFFFF00)) | rng.integers(1, 255, size=m).astype(np.uint32)


def _dedupe(
    rng: np.random.Generator,
    windows: np.ndarray,
    ip: np.ndarray,
    bits: np.ndarray,
    ja4: np.ndarray,
    host: np.ndarray,
) -> np.ndarray:
    """Give a fresh address (in the same range) to records whose key repeats an earlier one.

    The contract has one record per (window, src_ip, JA4, host); pools are finite, so random
    draws collide.  A replacement keeps the address's network (only the low ``bits`` change),
    so its ASN and country stay true.  Only when a range is exhausted (more records for one
    window than it has addresses) does it widen, up to a /16, trading that for unique keys.
    """
    ip = ip.copy()
    bits = bits.copy()
    low = (ja4.astype(np.int64) << 8) | host.astype(np.int64)
    for attempt in range(64):
        order = np.lexsort((low, ip, windows))
        same = (
            (windows[order][1:] == windows[order][:-1])
            & (ip[order][1:] == ip[order][:-1])
            & (low[order][1:] == low[order][:-1])
        )
        dup = order[1:][same]
        if dup.size == 0:
            break
        if attempt and attempt % 8 == 0:
            bits[dup] = np.minimum(bits[dup] + 1, 16)
        size = (np.int64(1) << bits[dup]).astype(np.int64)
        mask = ~((size - 1).astype(np.uint32))
        fresh = (rng.random(dup.size) * size).astype(np.uint32)
        new = (ip[dup] & mask) | fresh
        # Keep clear of network (.0) and broadcast (.255) last octets.
        last = new & np.uint32(255)
        bad = (last == 0) | (last == 255)
        octet = rng.integers(1, 255, size=int(bad.sum())).astype(np.uint32)
        new[bad] = (new[bad] & np.uint32(0xFFFFFF00)) | octet
        ip[dup] = new
    return ip
