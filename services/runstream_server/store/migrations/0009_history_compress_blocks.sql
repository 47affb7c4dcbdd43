-- Compression blocks of at least 1 MiB in the history tables. The keys of one `log()`
-- call share its client time, so within a run the `ts` column of every key repeats the
-- same sequence of deltas; ZSTD removes the repeats only when they fall into one
-- compressed block. With the default 64 KiB minimum a block holds less than one merged
-- series of 10,000 steps (80 KB of `ts`), so each key paid for its own jitter again.
-- Measured by `bench storage` (50 runs × 10 keys × 10,000 steps, float32-origin values,
-- client times 250 ms ± 20 ms apart), bytes per point after OPTIMIZE FINAL:
--   noisy curves   6.16 → 4.15 (ts 2.62 → 0.44, value 3.42 → 3.62)
--   typical keys   5.19 → 3.16
-- Cost: reading one granule decompresses up to 1 MiB (about a millisecond) instead of
-- 64 KiB; history reads are whole series or many runs, which read those blocks anyway.
-- A setting change is metadata: parts written or merged from now on use it.
ALTER TABLE {db}.history_numeric
    MODIFY SETTING min_compress_block_size = 1048576
;

ALTER TABLE {db}.history_other
    MODIFY SETTING min_compress_block_size = 1048576
;
