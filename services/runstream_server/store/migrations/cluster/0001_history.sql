-- Cluster twin of ../0001_history.sql (read it for the table design: keys, engine,
-- codecs). Each shard stores its runs' points in history_*_local, replicated within the
-- shard; history_* (Distributed) keep the single-node names, so writers and readers are
-- unchanged. Sharding by cityHash64(project, run_id) keeps every point of a run on one
-- shard: FINAL, run on each shard, then collapses all copies of a point.
--
-- Insert deduplication (replicated_deduplication_window*), set explicitly because the
-- server defaults differ between ClickHouse versions. The projector inserts without a
-- deduplication token, so a retried identical block is dropped by its content hash (a
-- writer that passes insert_deduplication_token is deduplicated by the token instead).
-- Retries come when a write or its acknowledgement failed: the projector rewinds and
-- writes the same records again (backoff up to 5 s), and a Distributed table's queue
-- sends a block to its shard again (backoff up to 30 s). The first copy's hash must
-- still be in the window then. Up to 12 projectors insert into each table, each about
-- one block per shard per batch (a batch is sealed every 0.5 s under load): about 24
-- blocks per second per shard, so 10,000 blocks cover about 7 minutes, well beyond both
-- backoffs. The time bound (1 hour) counts from the newest block, so hashes do not
-- expire while nothing is inserted (an outage). A duplicate beyond the window changes
-- no answer: the ReplacingMergeTree key collapses it under FINAL.
CREATE TABLE IF NOT EXISTS {db}.history_numeric_local ON CLUSTER '{cluster}'
(
    entity  LowCardinality(String),
    project LowCardinality(String),
    run_id  String,
    key     LowCardinality(String),
    step    UInt64 CODEC(Delta, ZSTD(1)),
    ts      DateTime64(6, 'UTC') CODEC(DoubleDelta, ZSTD(1)),
    value   Float64 CODEC(Gorilla, ZSTD(1)),
    seq     UInt64 CODEC(Delta, ZSTD(1))
)
ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/{db}/history_numeric_local', '{replica}', seq)
ORDER BY (entity, project, run_id, key, step)
SETTINGS replicated_deduplication_window = 10000, replicated_deduplication_window_seconds = 3600
;

CREATE TABLE IF NOT EXISTS {db}.history_numeric ON CLUSTER '{cluster}'
(
    entity  LowCardinality(String),
    project LowCardinality(String),
    run_id  String,
    key     LowCardinality(String),
    step    UInt64,
    ts      DateTime64(6, 'UTC'),
    value   Float64,
    seq     UInt64
)
ENGINE = Distributed('{cluster}', {db}, history_numeric_local, cityHash64(project, run_id))
;

CREATE TABLE IF NOT EXISTS {db}.history_other_local ON CLUSTER '{cluster}'
(
    entity     LowCardinality(String),
    project    LowCardinality(String),
    run_id     String,
    key        LowCardinality(String),
    step       UInt64 CODEC(Delta, ZSTD(1)),
    ts         DateTime64(6, 'UTC') CODEC(DoubleDelta, ZSTD(1)),
    value_json String CODEC(ZSTD(1)),
    seq        UInt64 CODEC(Delta, ZSTD(1))
)
ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/{db}/history_other_local', '{replica}', seq)
ORDER BY (entity, project, run_id, key, step)
SETTINGS replicated_deduplication_window = 10000, replicated_deduplication_window_seconds = 3600
;

CREATE TABLE IF NOT EXISTS {db}.history_other ON CLUSTER '{cluster}'
(
    entity     LowCardinality(String),
    project    LowCardinality(String),
    run_id     String,
    key        LowCardinality(String),
    step       UInt64,
    ts         DateTime64(6, 'UTC'),
    value_json String,
    seq        UInt64
)
ENGINE = Distributed('{cluster}', {db}, history_other_local, cityHash64(project, run_id))
;
