-- Stop requests (Runs.StopRun, the UI's "stop"), folded by the projector.
--
-- stop_requested_by / stop_requested_time: the pending stop request of a running run
-- (who asked, server time of the request), kept after the run ended `killed` as the
-- record of who stopped it; cleared when the run (re)starts. The epoch (0) when none.
ALTER TABLE {db}.runs ADD COLUMN IF NOT EXISTS stop_requested_by String
;
ALTER TABLE {db}.runs ADD COLUMN IF NOT EXISTS stop_requested_time DateTime64(6, 'UTC')
;
