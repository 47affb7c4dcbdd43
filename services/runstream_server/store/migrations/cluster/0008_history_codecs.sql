-- Cluster twin of ../0008_history_codecs.sql (read it for the measurements). Codecs
-- concern stored data, so they change on the shards' tables only; the Distributed tables
-- store nothing and their column types do not change.
ALTER TABLE {db}.history_numeric_local ON CLUSTER '{cluster}'
    MODIFY COLUMN step UInt64 CODEC(DoubleDelta, ZSTD(1)),
    MODIFY COLUMN ts DateTime64(6, 'UTC') CODEC(Delta, ZSTD(1)),
    MODIFY COLUMN seq UInt64 CODEC(DoubleDelta, ZSTD(1))
;

ALTER TABLE {db}.history_other_local ON CLUSTER '{cluster}'
    MODIFY COLUMN step UInt64 CODEC(DoubleDelta, ZSTD(1)),
    MODIFY COLUMN ts DateTime64(6, 'UTC') CODEC(Delta, ZSTD(1)),
    MODIFY COLUMN seq UInt64 CODEC(DoubleDelta, ZSTD(1))
;
