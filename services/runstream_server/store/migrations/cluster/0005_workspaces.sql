-- Cluster twin of ../0005_workspaces.sql (read it for the table design). Workspaces have
-- no run_id: they are sharded by cityHash64(project, `user`), a function of their
-- ReplacingMergeTree key (entity, project, user), so every save of one workspace is on
-- one shard and FINAL there keeps the latest. Insert deduplication as in
-- 0001_history.sql.
CREATE TABLE IF NOT EXISTS {db}.workspaces_local ON CLUSTER '{cluster}'
(
    entity        LowCardinality(String),
    project       LowCardinality(String),
    `user`        String,
    state_json    String CODEC(ZSTD(1)),
    updated_time  DateTime64(6, 'UTC'),
    log_partition Int32,
    log_offset    UInt64
)
ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/{db}/workspaces_local', '{replica}', log_offset)
ORDER BY (entity, project, `user`)
SETTINGS replicated_deduplication_window = 10000, replicated_deduplication_window_seconds = 3600
;

CREATE TABLE IF NOT EXISTS {db}.workspaces ON CLUSTER '{cluster}'
(
    entity        LowCardinality(String),
    project       LowCardinality(String),
    `user`        String,
    state_json    String,
    updated_time  DateTime64(6, 'UTC'),
    log_partition Int32,
    log_offset    UInt64
)
ENGINE = Distributed('{cluster}', {db}, workspaces_local, cityHash64(project, `user`))
;
