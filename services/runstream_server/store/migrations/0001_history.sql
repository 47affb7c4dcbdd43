-- History: one row per logged point. Numbers and other (JSON) values in separate tables.
--
-- ReplacingMergeTree(seq) keyed by (entity, project, run_id, key, step): a re-inserted
-- point (consumer replay, retried insert) collapses into one row; when two different
-- events of a run log the same key at the same step, the later one (higher seq) wins.
-- Readers use FINAL, so duplicates never show even before a merge.
--
-- No PARTITION BY: ReplacingMergeTree collapses rows only within a partition, and a
-- partition by time would let the same (run, key, step) with different client times
-- survive twice. Codecs: Delta/DoubleDelta for the monotonic step/time, Gorilla for
-- float values, each chained with ZSTD.
--
-- non_replicated_deduplication_window makes insert_deduplication_token effective on
-- this single-node engine (the writer derives tokens from log offsets).
CREATE TABLE IF NOT EXISTS {db}.history_numeric
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
ENGINE = ReplacingMergeTree(seq)
ORDER BY (entity, project, run_id, key, step)
SETTINGS non_replicated_deduplication_window = 1000
;

CREATE TABLE IF NOT EXISTS {db}.history_other
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
ENGINE = ReplacingMergeTree(seq)
ORDER BY (entity, project, run_id, key, step)
SETTINGS non_replicated_deduplication_window = 1000
;
