"""Pure liveness tracking: which running runs have been silent too long.

Silence is judged against each partition's *caught-up time*: the latest server time at
which the reaper had read everything appended to that partition. A reaper that is
behind (a backlog) has an old caught-up time, so it cannot mistake the backlog for
silence (invariant 5). Only server receive times are compared, never client clocks.

Event rules mirror the projector's (``projector/processor.py``): a client event with
seq <= the last seen seq is a duplicate and ignored; ``Finish`` ends a run; ``RunStart``
(re)starts it; any client event revives a crashed run; a ``Crashed`` event counts only
if the run was running and it follows the last client seq (else it is stale). A
``ProcessExited`` (the client's upload helper saw the training process die) crashes a
running run like a ``Crashed`` does, so the reaper never emits a second one for it.
``WorkspaceSaved`` (a saved web workspace, no run's event) is ignored: it neither
creates nor touches any run's liveness.
"""

from __future__ import annotations

from dataclasses import dataclass

from runstream.v1 import views_pb2

RUNNING, FINISHED, CRASHED = "running", "finished", "crashed"


@dataclass(slots=True)
class Liveness:
    run_id: str
    project: str
    entity: str
    partition: int
    last_seen_us: int = 0
    last_seq: int = 0
    state: str = RUNNING
    # The last_seq a Crashed event was already emitted for; avoids emitting twice.
    crash_sent_for_seq: int = -1


class LivenessTable:
    def __init__(self) -> None:
        self.runs: dict[str, Liveness] = {}

    def observe(self, value: bytes, partition: int) -> None:
        """Apply one log record (a serialized LogRecord, read through its lean view:
        the reaper reads every record and needs no event's contents)."""
        rec = views_pb2.LogRecordView.FromString(value)
        for ev in rec.events:
            self._apply(ev, partition, ev.server_time_us or rec.server_time_us)

    def _apply(self, ev: views_pb2.EventView, partition: int, server_us: int) -> None:
        kind = ev.WhichOneof("body")
        if kind == "workspace_saved":
            return   # not a run's event (whatever its run id says)
        lv = self.runs.get(ev.run_id)
        if kind == "delete":
            self.runs.pop(ev.run_id, None)
            return
        if lv is None:
            if ev.seq == 0:
                return   # a server event for a run never seen: nothing to track
            lv = Liveness(ev.run_id, ev.project, ev.entity, partition)
            self.runs[ev.run_id] = lv
        if ev.seq == 0:
            if kind == "crashed" and lv.state == RUNNING and ev.crashed.after_seq == lv.last_seq:
                lv.state = CRASHED
            return
        if ev.seq <= lv.last_seq:
            return   # duplicate or late
        lv.last_seq = ev.seq
        lv.last_seen_us = max(lv.last_seen_us, server_us)
        if kind == "finish":
            lv.state = FINISHED
        elif kind == "process_exited":
            if lv.state == RUNNING:
                lv.state = CRASHED
        elif kind == "run_start" or lv.state == CRASHED:
            lv.state = RUNNING

    def due(self, caught_up_us: dict[int, int], timeout_us: int) -> list[Liveness]:
        """Running runs silent for more than ``timeout_us`` by their partition's caught-up time.

        Partitions missing from ``caught_up_us`` (behind, or not ours) are never judged.
        Each returned run is marked so that it is not returned again for the same seq.
        """
        out = []
        for lv in self.runs.values():
            if lv.state != RUNNING or lv.crash_sent_for_seq == lv.last_seq:
                continue
            clock = caught_up_us.get(lv.partition)
            if clock is not None and clock - lv.last_seen_us > timeout_us:
                lv.crash_sent_for_seq = lv.last_seq
                out.append(lv)
        return out

    def forget_partitions(self, partitions: set[int]) -> None:
        """Drop the runs of ``partitions`` (no longer ours after a rebalance)."""
        self.runs = {k: lv for k, lv in self.runs.items() if lv.partition not in partitions}

    def retry(self, runs: list[Liveness]) -> None:
        """The Crashed events for ``runs`` could not be appended: judge them again."""
        for lv in runs:
            lv.crash_sent_for_seq = -1
