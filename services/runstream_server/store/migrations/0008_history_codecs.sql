-- History codecs. Measured on 2M float32-origin points (100 runs × 10 keys × 2,000 steps,
-- steps 250 ms ± 20 ms apart) after OPTIMIZE FINAL, bytes per point:
--   ts    DoubleDelta+ZSTD 3.10 → Delta+ZSTD 0.86: client times of consecutive steps
--         differ by the step time plus jitter; DoubleDelta doubles the jitter's entropy.
--   step  Delta+ZSTD 0.15 → DoubleDelta+ZSTD 0.013: a series' steps are mostly
--         consecutive, so the delta is constant and its delta zero.
--   seq   the same as step (one seq per event, events of a run in step order).
-- Values stay Gorilla+ZSTD (better than ZSTD alone or FPC on float32-origin values).
-- A codec change is metadata: parts written or merged from now on use the new codecs.
ALTER TABLE {db}.history_numeric
    MODIFY COLUMN step UInt64 CODEC(DoubleDelta, ZSTD(1)),
    MODIFY COLUMN ts DateTime64(6, 'UTC') CODEC(Delta, ZSTD(1)),
    MODIFY COLUMN seq UInt64 CODEC(DoubleDelta, ZSTD(1))
;

ALTER TABLE {db}.history_other
    MODIFY COLUMN step UInt64 CODEC(DoubleDelta, ZSTD(1)),
    MODIFY COLUMN ts DateTime64(6, 'UTC') CODEC(Delta, ZSTD(1)),
    MODIFY COLUMN seq UInt64 CODEC(DoubleDelta, ZSTD(1))
;
