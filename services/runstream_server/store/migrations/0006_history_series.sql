-- History series: one row per (run, numeric key) with the key's step range, kept by a
-- materialized view on every insert into history_numeric.
--
-- The workspace reads need, per line, where its steps begin and end (to cut the range
-- into equal-width buckets) and the project's metric names (the chart and column
-- choosers). Reading them from history_numeric costs a scan of every point of the
-- selected runs (5M points: ~150 ms); this table answers from one row per series.
--
-- AggregatingMergeTree with min/max only: both are idempotent, so a duplicate or
-- replayed insert never changes a row's meaning (invariant 2), whatever merged or not;
-- readers aggregate again (GROUP BY with min/max) instead of relying on merges. Deleted
-- runs keep their rows, as in history_numeric; readers join the runs table.
--
-- Existing history is copied in once (the INSERT below). Running it again, or rows the
-- view also wrote meanwhile, only repeat min/max inputs. Replay (drop + migrate +
-- re-fold) rebuilds the table through the view, like every projection.
CREATE TABLE IF NOT EXISTS {db}.history_series
(
    entity   LowCardinality(String),
    project  LowCardinality(String),
    run_id   String,
    key      LowCardinality(String),
    min_step SimpleAggregateFunction(min, UInt64),
    max_step SimpleAggregateFunction(max, UInt64)
)
ENGINE = AggregatingMergeTree
ORDER BY (entity, project, run_id, key)
;

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.history_series_mv TO {db}.history_series AS
SELECT entity, project, run_id, key, min(step) AS min_step, max(step) AS max_step
FROM {db}.history_numeric
GROUP BY entity, project, run_id, key
;

INSERT INTO {db}.history_series (entity, project, run_id, key, min_step, max_step)
SELECT entity, project, run_id, key, min(step), max(step)
FROM {db}.history_numeric
GROUP BY entity, project, run_id, key
;
