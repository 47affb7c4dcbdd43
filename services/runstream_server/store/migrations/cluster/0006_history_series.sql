-- Cluster twin of ../0006_history_series.sql (read it for the table design). Each shard's
-- view reads that shard's history_numeric_local and writes its history_series_local, so
-- a series' row is on the shard of its run's points; history_series (Distributed, the
-- same sharding key) is what readers query, aggregating again across shards as they
-- already do across parts. Insert deduplication as in 0001_history.sql: a duplicate block
-- here only repeats min/max inputs.
CREATE TABLE IF NOT EXISTS {db}.history_series_local ON CLUSTER '{cluster}'
(
    entity   LowCardinality(String),
    project  LowCardinality(String),
    run_id   String,
    key      LowCardinality(String),
    min_step SimpleAggregateFunction(min, UInt64),
    max_step SimpleAggregateFunction(max, UInt64)
)
ENGINE = ReplicatedAggregatingMergeTree('/clickhouse/tables/{shard}/{db}/history_series_local', '{replica}')
ORDER BY (entity, project, run_id, key)
SETTINGS replicated_deduplication_window = 10000, replicated_deduplication_window_seconds = 3600
;

CREATE TABLE IF NOT EXISTS {db}.history_series ON CLUSTER '{cluster}'
(
    entity   LowCardinality(String),
    project  LowCardinality(String),
    run_id   String,
    key      LowCardinality(String),
    min_step SimpleAggregateFunction(min, UInt64),
    max_step SimpleAggregateFunction(max, UInt64)
)
ENGINE = Distributed('{cluster}', {db}, history_series_local, cityHash64(project, run_id))
;

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.history_series_mv ON CLUSTER '{cluster}' TO {db}.history_series_local AS
SELECT entity, project, run_id, key, min(step) AS min_step, max(step) AS max_step
FROM {db}.history_numeric_local
GROUP BY entity, project, run_id, key
;

-- The copy of existing history goes through the Distributed tables (an INSERT has no ON
-- CLUSTER): it reads every shard, and the sharding key sends each series to the shard
-- of its run. insert_distributed_sync: the statement returns once the shards have the rows.
INSERT INTO {db}.history_series (entity, project, run_id, key, min_step, max_step)
SETTINGS insert_distributed_sync = 1
SELECT entity, project, run_id, key, min(step), max(step)
FROM {db}.history_numeric
GROUP BY entity, project, run_id, key
;
