-- Cluster twin of ../0007_history_rollup.sql (read it for the rollup's design). The new
-- column goes to history_numeric_local and to history_numeric (Distributed, without a
-- codec: it stores nothing); the step index and its materialization concern the shards'
-- tables only. Each shard's view reads its history_numeric_local and writes its
-- history_rollup_local, so a block is on the shard of its run's points. Insert
-- deduplication as in 0001_history.sql: a duplicate block here only repeats idempotent
-- aggregate inputs.
ALTER TABLE {db}.history_numeric_local ON CLUSTER '{cluster}' ADD COLUMN IF NOT EXISTS rewrite UInt8 DEFAULT 0 CODEC(ZSTD(1))
;

ALTER TABLE {db}.history_numeric ON CLUSTER '{cluster}' ADD COLUMN IF NOT EXISTS rewrite UInt8 DEFAULT 0
;

ALTER TABLE {db}.history_numeric_local ON CLUSTER '{cluster}' ADD INDEX IF NOT EXISTS step_minmax step TYPE minmax GRANULARITY 1
;

ALTER TABLE {db}.history_numeric_local ON CLUSTER '{cluster}' MATERIALIZE INDEX step_minmax
;

CREATE TABLE IF NOT EXISTS {db}.history_rollup_local ON CLUSTER '{cluster}'
(
    entity    LowCardinality(String),
    project   LowCardinality(String),
    run_id    String,
    key       LowCardinality(String),
    block     UInt64,
    steps     SimpleAggregateFunction(groupBitOr, UInt16),
    min_value SimpleAggregateFunction(min, Float64),
    max_value SimpleAggregateFunction(max, Float64),
    last      SimpleAggregateFunction(max, UInt256),
    rewrite   SimpleAggregateFunction(max, UInt8)
)
ENGINE = ReplicatedAggregatingMergeTree('/clickhouse/tables/{shard}/{db}/history_rollup_local', '{replica}')
ORDER BY (entity, project, run_id, key, block)
SETTINGS replicated_deduplication_window = 10000, replicated_deduplication_window_seconds = 3600
;

CREATE TABLE IF NOT EXISTS {db}.history_rollup ON CLUSTER '{cluster}'
(
    entity    LowCardinality(String),
    project   LowCardinality(String),
    run_id    String,
    key       LowCardinality(String),
    block     UInt64,
    steps     SimpleAggregateFunction(groupBitOr, UInt16),
    min_value SimpleAggregateFunction(min, Float64),
    max_value SimpleAggregateFunction(max, Float64),
    last      SimpleAggregateFunction(max, UInt256),
    rewrite   SimpleAggregateFunction(max, UInt8)
)
ENGINE = Distributed('{cluster}', {db}, history_rollup_local, cityHash64(project, run_id))
;

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.history_rollup_mv ON CLUSTER '{cluster}' TO {db}.history_rollup_local AS
SELECT entity, project, run_id, key, intDiv(step, 16) AS block,
       groupBitOr(bitShiftLeft(toUInt16(1), toUInt8(step % 16))) AS steps,
       min(value) AS min_value, max(value) AS max_value,
       max(bitOr(bitOr(bitShiftLeft(toUInt256(step), 192), bitShiftLeft(toUInt256(seq), 128)),
                 bitOr(bitShiftLeft(toUInt256(reinterpretAsUInt64(value)), 64),
                       toUInt256(reinterpretAsUInt64(toUnixTimestamp64Micro(ts)))))) AS last, max(rewrite) AS rewrite
FROM {db}.history_numeric_local
GROUP BY entity, project, run_id, key, block
;

-- The copy of existing rows goes through the Distributed tables, as in
-- 0006_history_series.sql. Every point of a block is on one shard, so count() and
-- uniqExact(step) see the same rows as on a single node.
INSERT INTO {db}.history_rollup
SETTINGS insert_distributed_sync = 1
SELECT entity, project, run_id, key, intDiv(step, 16) AS block,
       groupBitOr(bitShiftLeft(toUInt16(1), toUInt8(step % 16))),
       min(value), max(value),
       max(bitOr(bitOr(bitShiftLeft(toUInt256(step), 192), bitShiftLeft(toUInt256(seq), 128)),
                 bitOr(bitShiftLeft(toUInt256(reinterpretAsUInt64(value)), 64),
                       toUInt256(reinterpretAsUInt64(toUnixTimestamp64Micro(ts)))))),
       if(count() > uniqExact(step), 1, max(rewrite))
FROM {db}.history_numeric
GROUP BY entity, project, run_id, key, block
;
