"""Field names of the feature record: the contract's schema in one place.

The scorer never hard-codes which features a model uses (the bundle's manifest says so);
this module only names the key and context fields every record shares and the default
feature set (the original bot-detector's ``view_ai_features_1h`` columns) that the trainer
starts from when ``FEATURES`` is not set.
"""

from __future__ import annotations

#: Fields that identify a record; a record missing any of them goes to the DLQ.
KEY_FIELDS: tuple[str, ...] = ("window_start", "src_ip", "ja4", "host")

#: Optional context fields, passed through unchanged to the score record.
CONTEXT_FIELDS: tuple[str, ...] = ("asn_number", "country_code", "browser_family", "bot_name")

#: The original's feature columns, grouped as in the contract.
DEFAULT_FEATURES: tuple[str, ...] = (
    # volume
    "hits", "hit_velocity",
    # headers
    "header_count", "has_accept_language", "has_cookie", "has_referer", "has_sec_ch_ua",
    "modern_browser_score", "ua_ch_mismatch", "header_order_shared_count",
    # request mix
    "post_ratio", "fuzzing_index", "orphan_ratio", "asset_ratio", "direct_access_ratio",
    # transport
    "ip_id_zero_ratio", "multiplexing_efficiency", "mss_mobile_mismatch",
    "request_size_variance", "port_exhaustion_ratio", "max_keepalives", "src_port_density",
    "tcp_shared_count",
    # TLS / HTTP2 coherence
    "h2_settings_known", "h2_pseudo_order_match", "fingerprint_coherence_score",
    "tls_h2_family_mismatch",
    # fingerprint population
    "is_ua_rotating", "distinct_ja4_count", "is_rare_ja4", "ja4_asn_concentration",
    "ja4_country_concentration",
    # behaviour
    "path_transition_entropy", "cadence_cv", "burst_ratio", "pause_ratio", "host_diversity",
    "lag1_autocorrelation", "benford_deviation",
)

#: Threat levels in increasing order of the combined score.
SCORE_LEVELS: tuple[str, ...] = ("NORMAL", "LOW", "MEDIUM", "HIGH", "CRITICAL")
KNOWN_BOT = "KNOWN_BOT"
LEGITIMATE_BROWSER = "LEGITIMATE_BROWSER"
