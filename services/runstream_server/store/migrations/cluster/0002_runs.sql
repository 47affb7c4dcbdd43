-- Cluster twin of ../0002_runs.sql (read it for the table design). Sharded by
-- cityHash64(project, run_id), like the history tables: every state version of a run is
-- on one shard, where FINAL keeps the latest, and the projector's state lookup by run id
-- (bloom filter of runs_local) is answered by that shard. The Distributed table has no
-- index: it stores nothing. Insert deduplication as in 0001_history.sql.
CREATE TABLE IF NOT EXISTS {db}.runs_local ON CLUSTER '{cluster}'
(
    entity            LowCardinality(String),
    project           LowCardinality(String),
    run_id            String,
    name              String,
    state             LowCardinality(String),
    state_cause       String,
    notes             String,
    tags              Array(String),
    `group`           String,
    job_type          String,
    sweep_id          String,
    privacy           LowCardinality(String),
    config            Map(String, String),
    summary           Map(String, Float64),
    summary_other     Map(String, String),
    metadata_json     String,
    start_time        DateTime64(6, 'UTC'),
    last_event_time   DateTime64(6, 'UTC'),
    end_time          DateTime64(6, 'UTC'),
    exit_code         Int32,
    hidden            Bool,
    color             String,
    last_seq          UInt64,
    dropped_points    UInt64,
    seq_gaps          UInt64,
    deleted           UInt8,
    applied_partition Int32,
    applied_offset    Int64,
    version           UInt64,
    INDEX idx_run_id run_id TYPE bloom_filter GRANULARITY 1
)
ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/{db}/runs_local', '{replica}', version)
ORDER BY (entity, project, run_id)
SETTINGS replicated_deduplication_window = 10000, replicated_deduplication_window_seconds = 3600
;

CREATE TABLE IF NOT EXISTS {db}.runs ON CLUSTER '{cluster}'
(
    entity            LowCardinality(String),
    project           LowCardinality(String),
    run_id            String,
    name              String,
    state             LowCardinality(String),
    state_cause       String,
    notes             String,
    tags              Array(String),
    `group`           String,
    job_type          String,
    sweep_id          String,
    privacy           LowCardinality(String),
    config            Map(String, String),
    summary           Map(String, Float64),
    summary_other     Map(String, String),
    metadata_json     String,
    start_time        DateTime64(6, 'UTC'),
    last_event_time   DateTime64(6, 'UTC'),
    end_time          DateTime64(6, 'UTC'),
    exit_code         Int32,
    hidden            Bool,
    color             String,
    last_seq          UInt64,
    dropped_points    UInt64,
    seq_gaps          UInt64,
    deleted           UInt8,
    applied_partition Int32,
    applied_offset    Int64,
    version           UInt64
)
ENGINE = Distributed('{cluster}', {db}, runs_local, cityHash64(project, run_id))
;
