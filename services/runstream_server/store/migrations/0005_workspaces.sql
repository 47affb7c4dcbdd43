-- Workspaces: the web UI's view settings (hidden runs, colours, sort, grouping, filters,
-- runs visualized, columns) per project and user, folded by the projector from the
-- api's WorkspaceSaved events (PUT /api/v1/projects/{entity}/{project}/workspace).
--
-- One row per save; ReplacingMergeTree(log_offset) keyed by (entity, project, user), read
-- with FINAL: the save latest in the log wins. Every save of a project's workspaces has
-- the log key "<entity>/<project>/workspace", so they are all in one partition and their
-- offsets order them; a replay writes the same rows with the same offsets, so it gives
-- the same answer. state_json is a JSON object (at most 256 KiB); updated_time is the
-- server time of the save.
CREATE TABLE IF NOT EXISTS {db}.workspaces
(
    entity        LowCardinality(String),
    project       LowCardinality(String),
    `user`        String,
    state_json    String CODEC(ZSTD(1)),
    updated_time  DateTime64(6, 'UTC'),
    log_partition Int32,
    log_offset    UInt64
)
ENGINE = ReplacingMergeTree(log_offset)
ORDER BY (entity, project, `user`)
SETTINGS non_replicated_deduplication_window = 1000
;
