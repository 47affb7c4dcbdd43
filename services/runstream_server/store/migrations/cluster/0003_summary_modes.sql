-- Cluster twin of ../0003_summary_modes.sql: each column is added to the shards' tables
-- (runs_local) and to the Distributed table (runs), so that it is written and read
-- through runs.
ALTER TABLE {db}.runs_local ON CLUSTER '{cluster}' ADD COLUMN IF NOT EXISTS summary_modes Map(String, String)
;
ALTER TABLE {db}.runs_local ON CLUSTER '{cluster}' ADD COLUMN IF NOT EXISTS step_metrics Map(String, String)
;
ALTER TABLE {db}.runs_local ON CLUSTER '{cluster}' ADD COLUMN IF NOT EXISTS summary_count Map(String, UInt64)
;
ALTER TABLE {db}.runs_local ON CLUSTER '{cluster}' ADD COLUMN IF NOT EXISTS summary_agg Map(String, Float64)
;
ALTER TABLE {db}.runs_local ON CLUSTER '{cluster}' ADD COLUMN IF NOT EXISTS last_step Int64 DEFAULT -1
;
ALTER TABLE {db}.runs ON CLUSTER '{cluster}' ADD COLUMN IF NOT EXISTS summary_modes Map(String, String)
;
ALTER TABLE {db}.runs ON CLUSTER '{cluster}' ADD COLUMN IF NOT EXISTS step_metrics Map(String, String)
;
ALTER TABLE {db}.runs ON CLUSTER '{cluster}' ADD COLUMN IF NOT EXISTS summary_count Map(String, UInt64)
;
ALTER TABLE {db}.runs ON CLUSTER '{cluster}' ADD COLUMN IF NOT EXISTS summary_agg Map(String, Float64)
;
ALTER TABLE {db}.runs ON CLUSTER '{cluster}' ADD COLUMN IF NOT EXISTS last_step Int64 DEFAULT -1
;
