-- Summary modes (`define_metric`) and the last logged step, folded by the projector.
--
-- summary_modes: metric name or glob ("val/*") → "last" | "min" | "max" | "mean" |
--   "first" | "none" (as the client defined it; unknown modes count as "last").
-- step_metrics: metric name or glob → the metric used as its x axis.
-- summary_count / summary_agg: the running aggregate of a metric with a mode other than
--   "last": number of values aggregated and min / max / first value or, for "mean",
--   their sum. Kept apart from `summary`, so an explicit `run.summary[k] = v` override
--   does not disturb the aggregate.
-- last_step: the highest step of any applied Log event, -1 when none; a resuming
--   client continues after it. Rows written before this migration read -1 until the
--   log is replayed.
ALTER TABLE {db}.runs ADD COLUMN IF NOT EXISTS summary_modes Map(String, String)
;
ALTER TABLE {db}.runs ADD COLUMN IF NOT EXISTS step_metrics Map(String, String)
;
ALTER TABLE {db}.runs ADD COLUMN IF NOT EXISTS summary_count Map(String, UInt64)
;
ALTER TABLE {db}.runs ADD COLUMN IF NOT EXISTS summary_agg Map(String, Float64)
;
ALTER TABLE {db}.runs ADD COLUMN IF NOT EXISTS last_step Int64 DEFAULT -1
;
