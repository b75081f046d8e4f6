"""Prometheus metrics of a scorer replica (served at ``/metrics`` by the Faust web server).

Declared once at import (declaring touches nothing outside this registry); the agent and the
model holder only increment them. Label values are bounded: a DLQ entry is counted by the
category its reject carries (:data:`stream_scorer.parsing.RejectCategory`), features come from
the bundle.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info

REGISTRY = CollectorRegistry(auto_describe=True)

RECORDS_IN = Counter("ja4_records_in_total", "Feature records received (envelopes counted per record)", registry=REGISTRY)
MESSAGES_IN = Counter("ja4_messages_in_total", "Kafka messages received on the features topic", registry=REGISTRY)
RECORDS_SCORED = Counter("ja4_records_scored_total", "Score records produced", ["threat_level"], registry=REGISTRY)
DLQ = Counter("ja4_dlq_total", "Inputs dead-lettered, by category (RejectCategory)", ["reason"], registry=REGISTRY)
IMPUTED = Counter("ja4_imputed_features_total", "Feature values imputed with the training median", ["feature"], registry=REGISTRY)
BATCH_SIZE = Histogram("ja4_batch_records", "Records per scoring batch", registry=REGISTRY,
                       buckets=(1, 10, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 50000))
#: The scoring thread's time for one batch: impute, models, threat levels (parsing is the
#: ``parse`` stage of :data:`STAGE_SECONDS`, serialising the ``outputs`` stage).
SCORING_SECONDS = Histogram("ja4_batch_scoring_seconds", "Time to score one parsed batch (impute, models, levels)",
                            registry=REGISTRY,
                            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5))
#: Where a batch's time goes, stage by stage: ``read`` the batch's first message produced ->
#: read by this worker (broker, fetch, Faust's buffers; by the producer's clock). Then, adding
#: up to the time from the batch's oldest message being read to its inputs being acked:
#: ``batch`` oldest message read -> batch closed; ``parse`` closed -> parsed (incl. waiting for the
#: Python thread, which also builds the outputs); ``queued`` parsed -> scoring starts (the scoring thread busy with the batch
#: before); ``score`` the scoring thread (impute, models, threat levels); ``outputs`` the
#: score records' bytes and the records to produce (the Python thread); ``held`` -> sent (the batch before not yet
#: confirmed: acks stay in order); ``confirm`` sent -> every output confirmed by the broker and
#: the inputs acked.
STAGE_SECONDS = Histogram("ja4_stage_seconds", "Seconds a batch spends in each stage of the worker", ["stage"],
                          registry=REGISTRY,
                          buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5))
STAGES = ("read", "batch", "parse", "queued", "score", "outputs", "held", "confirm")
#: One child per stage, bound once (observed several times per batch).
STAGE = {name: STAGE_SECONDS.labels(stage=name) for name in STAGES}
E2E_LAG = Histogram("ja4_end_to_end_lag_seconds", "Now minus the input message's produce timestamp", registry=REGISTRY,
                    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300))
CONSUMER_LAG = Gauge("ja4_consumer_lag_records", "High watermark minus committed offset", ["partition"], registry=REGISTRY)
ASSIGNED_PARTITIONS = Gauge("ja4_assigned_partitions", "Partitions of the features topic assigned to this replica", registry=REGISTRY)
MODEL_INFO = Info("ja4_active_model", "The model version this replica serves", registry=REGISTRY)
RELOADS = Counter("ja4_reloads_total", "Control messages and reloads by outcome", ["outcome"], registry=REGISTRY)
RSS_BYTES = Gauge("ja4_process_rss_bytes", "Resident memory of the worker", registry=REGISTRY)
#: A batch whose outputs were not all confirmed is sent again (only the unconfirmed records),
#: at most OUTPUT_DELIVERY_ATTEMPTS times; then the worker exits (see ``agents.fail_worker``).
DELIVERY_RETRIES = Counter("ja4_delivery_retries_total", "Retries of a batch's unconfirmed output records",
                           registry=REGISTRY)
DELIVERY_FAILURES = Counter("ja4_delivery_failures_total", "Output records the broker did not confirm, by topic",
                            ["topic"], registry=REGISTRY)

#: Champion and challenger (see :mod:`.shadow`).
SHADOW_SCORES = Counter("ja4_shadow_scores_total", "Records scored by the challenger (shadow topic)", registry=REGISTRY)
SHADOW_AGREEMENT = Counter("ja4_shadow_level_agreement_total",
                           "Records scored by both models, by whether their threat levels agree", ["agree"],
                           registry=REGISTRY)
SHADOW_DROPPED = Counter("ja4_shadow_dropped_total", "Challengers dropped or refused, by reason", ["reason"],
                         registry=REGISTRY)
SHADOW_SEND_FAILURES = Counter("ja4_shadow_send_failures_total",
                               "Shadow score records not delivered or not sent (never retried)", registry=REGISTRY)
SHADOW_INFO = Info("ja4_challenger_model", "The challenger version this replica shadows ('' when none)",
                   registry=REGISTRY)

#: Live drift of this replica's input (see :mod:`.live_drift`, :mod:`.drift_watch`); features come from the bundle.
FEATURE_DRIFT = Gauge("ja4_feature_drift", "KS distance of the live window to the baseline digest, per feature",
                      ["feature"], registry=REGISTRY)
DRIFTED_SHARE = Gauge("ja4_feature_drifted_share", "Share of the features drifted in the live window (input faults excluded)",
                      registry=REGISTRY)
FEATURE_IMPUTED_SHARE = Gauge("ja4_feature_imputed_share", "Share of a feature's values imputed in the live window",
                              ["feature"], registry=REGISTRY)
INPUT_FAULT = Gauge("ja4_feature_input_fault", "1 while a feature's live window is an input fault (constant|imputed)",
                    ["feature", "reason"], registry=REGISTRY)
DRIFT_WINDOW_RECORDS = Gauge("ja4_drift_window_records", "Records in the live drift window", registry=REGISTRY)
DRIFT_SUSTAINED = Gauge("ja4_drift_sustained_seconds", "How long the drifted share has stayed at or above DRIFT_THRESHOLD",
                        registry=REGISTRY)
RETRAIN_REQUESTS = Counter("ja4_retrain_requests_total",
                           "Retrain requests: published by this replica, seen on the control topic, refused, failed",
                           ["outcome"], registry=REGISTRY)

#: The features topic reaches the agent a fetched partition batch at a time (:mod:`.bulk_consumer`).
FETCH_MESSAGES = Histogram("ja4_fetch_messages", "Messages handed to the scoring agent at once (one partition of one fetch)",
                           registry=REGISTRY, buckets=(1, 10, 50, 100, 250, 500, 1000, 2500, 5000, 10000))
