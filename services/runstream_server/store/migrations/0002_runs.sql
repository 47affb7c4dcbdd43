-- Run state: one row per state version of a run, written by the projector only.
--
-- ReplacingMergeTree(version) keyed by (entity, project, run_id); read with FINAL.
-- `version` strictly increases per run (one step per applied event). `deleted` is a
-- plain column, not the engine's is_deleted: a deleted run's state must stay loadable
-- so that a later event neither resurrects nor re-creates it. Queries filter deleted = 0.
-- applied_partition/applied_offset is the log position of the last applied record:
-- the projector skips records at or before it, so replaying the log changes nothing.
-- Times are UTC microseconds; end_time is the epoch (0) while the run has not ended.
-- The bloom filter on run_id serves the projector's state lookup by run id alone.
CREATE TABLE IF NOT EXISTS {db}.runs
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
ENGINE = ReplacingMergeTree(version)
ORDER BY (entity, project, run_id)
SETTINGS non_replicated_deduplication_window = 1000
;
