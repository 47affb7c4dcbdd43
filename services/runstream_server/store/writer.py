"""Writes folded batches to ClickHouse: one Arrow insert per table, history first.

Blocking; callers run it in a worker thread. Idempotence (invariant 2): ClickHouse
drops a retried identical block by its content hash; beyond that, the ReplacingMergeTree
keys make repeated rows collapse and readers use FINAL. ``dedup_token`` names the
block instead (token ``<dedup_token>:<table>``): a token must only ever name one content.
The projector passes none, because the same log positions fold into different rows under
different run states (docs/architecture.md, projector).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ..projector.processor import TABLES, RowBatch, RunKey, RunState
from .client import classify, validate_database

# Columns read back to rebuild a RunState (times as µs so no timezone is involved).
_STATE_COLUMNS = (
    "entity, project, run_id, name, state, state_cause, notes, tags, `group`, job_type, "
    "sweep_id, privacy, config, summary, summary_other, metadata_json, "
    "toUnixTimestamp64Micro(start_time) AS start_time_us, "
    "toUnixTimestamp64Micro(last_event_time) AS last_event_time_us, "
    "toUnixTimestamp64Micro(end_time) AS end_time_us, exit_code, hidden, color, last_seq, "
    "dropped_points, seq_gaps, deleted, applied_partition, applied_offset, version"
    ", stop_requested_by, toUnixTimestamp64Micro(stop_requested_time) AS stop_requested_time_us"
    ", summary_modes, step_metrics, summary_count, summary_agg, last_step"
)
_LOAD_CHUNK = 10_000


class StoreWriter:
    def __init__(self, client: Any, database: str) -> None:
        self.client = client
        self.database = validate_database(database)

    def write(self, batch: RowBatch, dedup_token: str | None) -> dict[str, int]:
        """Insert every non-empty table of ``batch``; return the rows sent per table.

        Raises ``RetryableError`` (store unavailable: retry the same batch) or
        ``PermanentError`` (the store refuses the data).
        """
        counts = batch.rows()
        sent = {}
        for table in TABLES:       # history tables first, run states last
            if not counts[table]:
                continue
            settings: dict[str, Any] = {"async_insert": 0}
            if dedup_token:
                settings["insert_deduplication_token"] = f"{dedup_token}:{table}"
            try:
                data = batch.to_arrow(table)
                self.client.insert_arrow(f"{self.database}.{table}", data, settings=settings)
            except Exception as e:
                raise classify(e, f"insert into {self.database}.{table}") from e
            sent[table] = counts[table]
        return sent

    def load_states(self, run_ids: Iterable[str]) -> dict[RunKey, RunState]:
        """The stored state of each run with one of ``run_ids`` (deleted runs included)."""
        ids = sorted(set(run_ids))
        out: dict[RunKey, RunState] = {}
        for i in range(0, len(ids), _LOAD_CHUNK):
            chunk = ids[i:i + _LOAD_CHUNK]
            try:
                res = self.client.query(
                    f"SELECT {_STATE_COLUMNS} FROM {self.database}.runs FINAL "
                    "WHERE run_id IN {ids:Array(String)}",
                    parameters={"ids": chunk})
            except Exception as e:
                raise classify(e, f"loading run states from {self.database}.runs") from e
            for row in res.named_results():
                st = RunState.from_row(row)
                out[st.key] = st
        return out
