-- ja4-stream: scores into ClickHouse with the Kafka table engine (no sink process).
--
-- TESTED IN CI ON THE EMBEDDED CLICKHOUSE, NOT AGAINST A BROKER.
-- tests/integration/test_kafka_engine_sql.py runs every statement of this file on ClickHouse
-- (chdb) with each Kafka table replaced by a Null-engine stand-in carrying the _error /
-- _raw_message / _topic / _partition / _offset columns, and inserts JSONEachRow messages into
-- the stand-ins (ISO and epoch window_start, a record missing a field into the errors table,
-- a replayed shadow score collapsing under FINAL); tests/unit/project/test_deploy_files.py
-- checks that the target tables have the columns of ja4_core/clickhouse_io.py. The Kafka
-- engine's own consumption (broker list, SASL/SSL, group) is not tested: check it against
-- your server and broker before relying on it.
-- Apply it to a ClickHouse *server* that can reach Kafka:
--
--   clickhouse-client --multiquery < deploy/clickhouse/kafka_engine.sql
--   docker compose -f docker-compose.kafka.yml exec -T clickhouse clickhouse-client --multiquery < deploy/clickhouse/kafka_engine.sql
--
-- Names to adapt: database `ja4`, broker list 'kafka:9092' (the compose network),
-- topic 'ja4.scores' (TOPIC_SCORES), consumer group 'ja4-clickhouse-scores'.
--
-- WHICH ONE TO CHOOSE
--
--   `stream-scorer sink` (the default; also what the embedded `stream-scorer demo` runs):
--     + works with any ClickHouse, including the embedded chdb and ClickHouse Cloud, with no
--       network path from ClickHouse to Kafka (the sink connects to both);
--     + batching (SINK_BATCH_MAX / SINK_BATCH_WAIT_MS), back-pressure (a ClickHouse outage
--       pauses the sink, Kafka keeps the backlog, nothing is skipped) and rows ClickHouse
--       refuses go to the DLQ with a reason, visible in our logs and metrics;
--     - one more process to run and watch.
--   Kafka table engine (this file):
--     + no extra process: ClickHouse consumes `ja4.scores` itself;
--     - ClickHouse must reach Kafka (network, SASL/SSL settings on the engine), which
--       ClickHouse Cloud and locked-down networks may not allow (Cloud offers ClickPipes);
--     - errors stay inside ClickHouse: with kafka_handle_error_mode = 'stream' an unparsable
--       message does not stop consumption, it lands in `ml_all_scores_kafka_errors` below;
--       watch that table and system.kafka_consumers, not our DLQ metrics.
--   Do not run both on the same data: duplicates collapse (ReplacingMergeTree, see below) but
--   the work is done twice. Stop the sink before creating the view, or drop the view to go
--   back to the sink.
--
-- Idempotence is the same for both: `ml_all_scores` is a ReplacingMergeTree keyed by
-- (window_start, src_ip, ja4, host, model_version); a replayed score collapses with the
-- original on merge, and queries use FINAL (or GROUP BY the key) to see one row per key.

CREATE DATABASE IF NOT EXISTS ja4;

-- 1. The target table, exactly as `stream-trainer init-db` creates it (ja4_core/clickhouse_io.py).
CREATE TABLE IF NOT EXISTS ja4.ml_all_scores
(
    `window_start` DateTime('UTC'),
    `src_ip` String,
    `ja4` String,
    `host` String,
    `anomaly_score` Float64,
    `eif_score` Float64,
    `ae_score` Nullable(Float64),
    `xgb_prob` Nullable(Float64),
    `threat_level` LowCardinality(String),
    `model_name` String,
    `model_version` String,
    `scored_at` DateTime64(3, 'UTC'),
    `imputed` Array(String),
    `asn_number` Nullable(Int64),
    `country_code` String,
    `browser_family` String,
    `bot_name` String,
    `reasons` String
)
ENGINE = ReplacingMergeTree(scored_at)
ORDER BY (window_start, src_ip, ja4, host, model_version);
-- A table created before the reasons (issue 18) gets the column; its old rows read '[]'.
ALTER TABLE ja4.ml_all_scores ADD COLUMN IF NOT EXISTS reasons String DEFAULT '[]';

-- 2. The Kafka consumer. One score record (JSON object) per message, as the scorer writes
--    them. Times and numbers that the contract allows in several spellings (window_start:
--    ISO-8601 or epoch seconds) are read as text and converted in the view.
CREATE TABLE IF NOT EXISTS ja4.ml_all_scores_kafka
(
    `window_start` String,
    `src_ip` String,
    `ja4` String,
    `host` String,
    `anomaly_score` Nullable(Float64),
    `eif_score` Nullable(Float64),
    `ae_score` Nullable(Float64),
    `xgb_prob` Nullable(Float64),
    `threat_level` String,
    `model_name` String,
    `model_version` String,
    `scored_at` String,
    `imputed` Array(String),
    `asn_number` Nullable(String),
    `country_code` Nullable(String),
    `browser_family` Nullable(String),
    `bot_name` Nullable(String),
    `reasons` String                          -- the JSON array, kept as its text
)
ENGINE = Kafka
SETTINGS
    kafka_broker_list = 'kafka:9092',
    kafka_topic_list = 'ja4.scores',
    kafka_group_name = 'ja4-clickhouse-scores',
    kafka_format = 'JSONEachRow',
    kafka_num_consumers = 1,                 -- up to the partition count of ja4.scores
    kafka_max_block_size = 65536,            -- rows per insert into ml_all_scores
    kafka_flush_interval_ms = 1000,          -- or after this long
    kafka_handle_error_mode = 'stream',      -- bad messages -> _error/_raw_message, not a stall
    input_format_skip_unknown_fields = 1,    -- context fields we do not store are ignored
    input_format_json_read_numbers_as_strings = 1,
    input_format_json_read_arrays_as_strings = 1,  -- reasons: the array's JSON text
    input_format_null_as_default = 1;

-- 3. Good messages into ml_all_scores. Rules follow ClickHouseIO.insert_scores:
--    window_start as epoch seconds (number or digits) or ISO-8601 (no zone = UTC);
--    eif_score defaults to anomaly_score; scored_at defaults to now; missing text = ''.
CREATE MATERIALIZED VIEW IF NOT EXISTS ja4.ml_all_scores_kafka_mv TO ja4.ml_all_scores AS
SELECT
    toDateTime(assumeNotNull(ws_epoch), 'UTC') AS window_start,
    src_ip,
    ja4,
    host,
    assumeNotNull(anomaly_score) AS anomaly_score,
    ifNull(eif_score, assumeNotNull(anomaly_score)) AS eif_score,
    ae_score,
    xgb_prob,
    threat_level,
    model_name,
    model_version,
    ifNull(parseDateTime64BestEffortOrNull(scored_at, 3, 'UTC'), now64(3, 'UTC')) AS scored_at,
    imputed,
    toInt64OrNull(asn_number) AS asn_number,
    ifNull(country_code, '') AS country_code,
    ifNull(browser_family, '') AS browser_family,
    ifNull(bot_name, '') AS bot_name,
    if(reasons = '', '[]', reasons) AS reasons
FROM
(
    SELECT
        *,
        if(match(trimBoth(window_start), '^[0-9]+(\\.[0-9]*)?$'),
           toInt64OrNull(splitByChar('.', trimBoth(window_start))[1]),
           toInt64(toUnixTimestamp(parseDateTimeBestEffortOrNull(window_start, 'UTC')))) AS ws_epoch
    FROM ja4.ml_all_scores_kafka
    WHERE length(_error) = 0
)
WHERE ws_epoch IS NOT NULL
  AND src_ip != '' AND ja4 != '' AND host != ''
  AND anomaly_score IS NOT NULL AND threat_level != '' AND model_version != '';

-- 4. What the sink would have sent to the DLQ: unparsable messages and records missing a
--    field the table needs. Check it like the DLQ (alert when it grows).
CREATE TABLE IF NOT EXISTS ja4.ml_all_scores_kafka_errors
(
    `received_at` DateTime64(3, 'UTC'),
    `topic` String,
    `partition` UInt64,
    `offset` UInt64,
    `error` String,
    `raw_message` String
)
ENGINE = MergeTree
ORDER BY (received_at, topic, partition, offset)
TTL toDateTime(received_at) + INTERVAL 30 DAY;

CREATE MATERIALIZED VIEW IF NOT EXISTS ja4.ml_all_scores_kafka_errors_mv TO ja4.ml_all_scores_kafka_errors AS
SELECT
    now64(3, 'UTC') AS received_at,
    _topic AS topic,
    _partition AS partition,
    _offset AS offset,
    if(length(_error) > 0, _error,
       'record does not fit ml_all_scores: window_start, src_ip, ja4, host, anomaly_score, threat_level or model_version missing or invalid') AS error,
    if(length(_error) > 0, _raw_message,
       formatRowNoNewline('JSONEachRow', window_start, src_ip, ja4, host, anomaly_score, threat_level, model_version)) AS raw_message
FROM ja4.ml_all_scores_kafka
WHERE length(_error) > 0
   OR (if(match(trimBoth(window_start), '^[0-9]+(\\.[0-9]*)?$'),
          toInt64OrNull(splitByChar('.', trimBoth(window_start))[1]),
          toInt64(toUnixTimestamp(parseDateTimeBestEffortOrNull(window_start, 'UTC')))) IS NULL
       OR src_ip = '' OR ja4 = '' OR host = ''
       OR anomaly_score IS NULL OR threat_level = '' OR model_version = '');

-- 5. Champion and challenger (issue 17): the challenger's score records (TOPIC_SHADOW_SCORES,
--    default 'ja4.scores.shadow') into ml_shadow_scores, which the trainer's judge reads. The
--    table exactly as `stream-trainer init-db` creates it; without it the judge has no
--    evidence and a challenger only shadows until SHADOW_MAX_HOURS.
CREATE TABLE IF NOT EXISTS ja4.ml_shadow_scores
(
    `window_start` DateTime('UTC'),
    `src_ip` String,
    `ja4` String,
    `host` String,
    `anomaly_score` Float64,
    `threat_level` LowCardinality(String),
    `model_name` String,
    `model_version` String,
    `champion_version` String,
    `champion_anomaly_score` Float64,
    `champion_threat_level` LowCardinality(String),
    `scored_at` DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree(scored_at)
ORDER BY (model_name, model_version, window_start, src_ip, ja4, host);

CREATE TABLE IF NOT EXISTS ja4.ml_shadow_scores_kafka
(
    `window_start` String,
    `src_ip` String,
    `ja4` String,
    `host` String,
    `anomaly_score` Nullable(Float64),
    `threat_level` String,
    `model_name` String,
    `model_version` String,
    `champion_version` String,
    `champion_anomaly_score` Nullable(Float64),
    `champion_threat_level` String,
    `scored_at` String
)
ENGINE = Kafka
SETTINGS
    kafka_broker_list = 'kafka:9092',
    kafka_topic_list = 'ja4.scores.shadow',
    kafka_group_name = 'ja4-clickhouse-shadow-scores',
    kafka_format = 'JSONEachRow',
    kafka_num_consumers = 1,
    kafka_max_block_size = 65536,
    kafka_flush_interval_ms = 1000,
    kafka_handle_error_mode = 'stream',
    input_format_skip_unknown_fields = 1,
    input_format_json_read_numbers_as_strings = 1,
    input_format_json_read_arrays_as_strings = 1,
    input_format_null_as_default = 1;

CREATE MATERIALIZED VIEW IF NOT EXISTS ja4.ml_shadow_scores_kafka_mv TO ja4.ml_shadow_scores AS
SELECT
    toDateTime(assumeNotNull(ws_epoch), 'UTC') AS window_start,
    src_ip,
    ja4,
    host,
    assumeNotNull(anomaly_score) AS anomaly_score,
    threat_level,
    model_name,
    model_version,
    champion_version,
    assumeNotNull(champion_anomaly_score) AS champion_anomaly_score,
    champion_threat_level,
    ifNull(parseDateTime64BestEffortOrNull(scored_at, 3, 'UTC'), now64(3, 'UTC')) AS scored_at
FROM
(
    SELECT
        *,
        if(match(trimBoth(window_start), '^[0-9]+(\\.[0-9]*)?$'),
           toInt64OrNull(splitByChar('.', trimBoth(window_start))[1]),
           toInt64(toUnixTimestamp(parseDateTimeBestEffortOrNull(window_start, 'UTC')))) AS ws_epoch
    FROM ja4.ml_shadow_scores_kafka
    WHERE length(_error) = 0
)
WHERE ws_epoch IS NOT NULL
  AND src_ip != '' AND ja4 != '' AND host != ''
  AND anomaly_score IS NOT NULL AND champion_anomaly_score IS NOT NULL
  AND threat_level != '' AND model_version != '' AND champion_version != '' AND champion_threat_level != '';

-- Going back to the sink:
--   DROP VIEW ja4.ml_all_scores_kafka_mv; DROP VIEW ja4.ml_all_scores_kafka_errors_mv;
--   DROP VIEW ja4.ml_shadow_scores_kafka_mv;
--   DROP TABLE ja4.ml_all_scores_kafka; DROP TABLE ja4.ml_shadow_scores_kafka;  -- then start `stream-scorer sink`
-- Consumer state: SELECT * FROM system.kafka_consumers WHERE table = 'ml_all_scores_kafka';
