-- Cluster twin of ../0009_history_compress_blocks.sql (read it for the measurements). A
-- storage setting of the shards' tables; the Distributed tables store nothing.
ALTER TABLE {db}.history_numeric_local ON CLUSTER '{cluster}'
    MODIFY SETTING min_compress_block_size = 1048576
;

ALTER TABLE {db}.history_other_local ON CLUSTER '{cluster}'
    MODIFY SETTING min_compress_block_size = 1048576
;
