-- History rollup: each numeric series pre-aggregated in blocks of 16 steps, kept by a
-- materialized view on every insert into history_numeric.
--
-- A chart line of 100,000 steps cut into ~1,500 buckets reads 6,250 rollup rows instead
-- of 100,000 points, and without FINAL: 50 such lines went from ~700 ms (points read
-- under FINAL, parts as inserted) to tens of milliseconds. Readers use it only for
-- buckets at least 3 blocks wide (docs/api.md, "Chart downsampling").
--
-- Per block (block = intDiv(step, 16)):
--   steps      bit (step % 16) set for every step that has a point: bitCount = the points
--              of the block as history FINAL counts them (one per step);
--   min_value, max_value  over the points (NaN as min/max treat it in history reads);
--   last       the point at the highest step, and among writes of that step the one
--              with the highest seq (the row history FINAL keeps), packed into one
--              UInt256 so that max() picks it: step << 192 | seq << 128 | value's bits
--              << 64 | ts in µs (as UInt64). One wide integer compares ~2x faster than a
--              tuple of four;
--   rewrite    1 when some point was written over an earlier point of its step
--              (history_numeric.rewrite, set by the projector): min/max could then
--              include a replaced value, so readers compute such blocks from
--              history_numeric FINAL instead.
-- Every aggregate is idempotent (min, max, bit-or), so a duplicate or replayed insert
-- never changes a block (invariant 2), merged or not; readers GROUP BY again.
--
-- Rows that existed before this migration are copied in once (the INSERT below); a block
-- there holding more rows than distinct steps (a duplicate or a rewrite) is marked
-- rewrite, which only sends it down the exact path.
ALTER TABLE {db}.history_numeric ADD COLUMN IF NOT EXISTS rewrite UInt8 DEFAULT 0 CODEC(ZSTD(1))
;

-- The step range of each granule. The primary key cannot exclude a granule that holds
-- the start of a run's series for a condition such as "step < 1008" (it only knows the
-- granule's first and last key): reading the edge blocks of a zoomed chart then touched
-- every part's run boundaries (498 of 620 granules for 50 runs). With this index, only
-- the granules holding those steps are read. Existing parts get it in the background.
ALTER TABLE {db}.history_numeric ADD INDEX IF NOT EXISTS step_minmax step TYPE minmax GRANULARITY 1
;

ALTER TABLE {db}.history_numeric MATERIALIZE INDEX step_minmax
;

CREATE TABLE IF NOT EXISTS {db}.history_rollup
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
ENGINE = AggregatingMergeTree
ORDER BY (entity, project, run_id, key, block)
;

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.history_rollup_mv TO {db}.history_rollup AS
SELECT entity, project, run_id, key, intDiv(step, 16) AS block,
       groupBitOr(bitShiftLeft(toUInt16(1), toUInt8(step % 16))) AS steps,
       min(value) AS min_value, max(value) AS max_value,
       max(bitOr(bitOr(bitShiftLeft(toUInt256(step), 192), bitShiftLeft(toUInt256(seq), 128)),
                 bitOr(bitShiftLeft(toUInt256(reinterpretAsUInt64(value)), 64),
                       toUInt256(reinterpretAsUInt64(toUnixTimestamp64Micro(ts)))))) AS last, max(rewrite) AS rewrite
FROM {db}.history_numeric
GROUP BY entity, project, run_id, key, block
;

INSERT INTO {db}.history_rollup
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
