-- Cluster twin of ../0004_run_stop.sql: the columns go to runs_local and to runs.
ALTER TABLE {db}.runs_local ON CLUSTER '{cluster}' ADD COLUMN IF NOT EXISTS stop_requested_by String
;
ALTER TABLE {db}.runs_local ON CLUSTER '{cluster}' ADD COLUMN IF NOT EXISTS stop_requested_time DateTime64(6, 'UTC')
;
ALTER TABLE {db}.runs ON CLUSTER '{cluster}' ADD COLUMN IF NOT EXISTS stop_requested_by String
;
ALTER TABLE {db}.runs ON CLUSTER '{cluster}' ADD COLUMN IF NOT EXISTS stop_requested_time DateTime64(6, 'UTC')
;
