"""Pure liveness tracking: which running runs have been silent too long.

Silence is measured on each partition's *up clock*, only while the partition is caught
up (the reaper had read everything appended to it): a reaper that is behind (a
backlog) cannot mistake the backlog for silence (invariant 5). The up clock advances
with the append times of the partition's records, and every gateway appends a beacon
to every partition every few seconds (``gateway/beacon.py``), so records keep coming
while any gateway is up. A gap between two records, or since the last one, counts for
at most ``BEACON_GAP_FACTOR`` beacon intervals: when no gateway is up, or none reaches
the log, the silence of the runs it cut off stops growing, and a 60 s outage does not
crash every run. A partition that never carried a beacon (records appended by other
writers) counts every gap in full. Only server times are compared, never client clocks.

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
# A gap up to this many beacon intervals is time a gateway was up: a beacon may be late
# by an interval or two under load; a longer gap is an outage.
BEACON_GAP_FACTOR = 3


@dataclass(slots=True)
class UpClock:
    """One partition's up clock (µs): time with records coming, each gap capped."""
    up_us: int = 0
    last_us: int | None = None          # append time of the last record
    cap_us: int | None = None           # from the last beacon; None: no beacon seen

    def advance(self, t_us: int) -> None:
        if self.last_us is None:
            self.last_us = t_us
        elif t_us > self.last_us:
            gap = t_us - self.last_us
            self.up_us += gap if self.cap_us is None else min(gap, self.cap_us)
            self.last_us = t_us

    def at(self, now_us: int) -> int:
        """The up clock at wall time ``now_us`` (the gap since the last record capped)."""
        if self.last_us is None:
            return self.up_us
        gap = max(0, now_us - self.last_us)
        return self.up_us + (gap if self.cap_us is None else min(gap, self.cap_us))


@dataclass(slots=True)
class Liveness:
    run_id: str
    project: str
    entity: str
    partition: int
    last_seen_us: int = 0
    last_seen_up: int = 0          # the partition's up clock at the last client event
    last_seq: int = 0
    state: str = RUNNING
    # The last_seq a Crashed event was already emitted for; avoids emitting twice.
    crash_sent_for_seq: int = -1


class LivenessTable:
    def __init__(self) -> None:
        # Keyed (entity, project, run id): a run id is unique within its project only.
        self.runs: dict[tuple[str, str, str], Liveness] = {}
        self.clocks: dict[int, UpClock] = {}

    def observe(self, value: bytes, partition: int, appended_ms: int = 0) -> None:
        """Apply one log record (a serialized LogRecord, read through its lean view:
        the reaper reads every record and needs no event's contents) that the log
        accepted at ``appended_ms`` (0: unknown, the record's server time is used)."""
        rec = views_pb2.LogRecordView.FromString(value)
        clock = self.clocks.get(partition)
        if clock is None:
            clock = self.clocks[partition] = UpClock()
        t_us = appended_ms * 1000 or rec.server_time_us or max(
            (ev.server_time_us for ev in rec.events), default=0)
        if t_us:
            clock.advance(t_us)
        if rec.beacon_interval_ms:
            clock.cap_us = BEACON_GAP_FACTOR * rec.beacon_interval_ms * 1000
        for ev in rec.events:
            self._apply(ev, partition, ev.server_time_us or rec.server_time_us, clock.up_us)

    def _apply(self, ev: views_pb2.EventView, partition: int, server_us: int,
               up_us: int) -> None:
        kind = ev.WhichOneof("body")
        if kind == "workspace_saved":
            return   # not a run's event (whatever its run id says)
        key = (ev.entity, ev.project, ev.run_id)
        lv = self.runs.get(key)
        if kind == "delete":
            self.runs.pop(key, None)
            return
        if lv is None:
            if ev.seq == 0:
                return   # a server event for a run never seen: nothing to track
            lv = Liveness(ev.run_id, ev.project, ev.entity, partition)
            self.runs[key] = lv
        if ev.seq == 0:
            if kind == "crashed" and lv.state == RUNNING and ev.crashed.after_seq == lv.last_seq:
                lv.state = CRASHED
            return
        if ev.seq <= lv.last_seq:
            return   # duplicate or late
        lv.last_seq = ev.seq
        lv.last_seen_us = max(lv.last_seen_us, server_us)
        lv.last_seen_up = max(lv.last_seen_up, up_us)
        if kind == "finish":
            lv.state = FINISHED
        elif kind == "process_exited":
            if lv.state == RUNNING:
                lv.state = CRASHED
        elif kind == "run_start" or lv.state == CRASHED:
            lv.state = RUNNING

    def due(self, caught_up_us: dict[int, int], timeout_us: int) -> list[Liveness]:
        """Running runs silent for more than ``timeout_us`` of their partition's up clock,
        read at the partition's caught-up time (``caught_up_us``: partition → wall µs).

        Partitions missing from ``caught_up_us`` (behind, or not ours) are never judged.
        Each returned run is marked so that it is not returned again for the same seq.
        """
        now = {p: self.clocks[p].at(t) for p, t in caught_up_us.items() if p in self.clocks}
        out = []
        for lv in self.runs.values():
            if lv.state != RUNNING or lv.crash_sent_for_seq == lv.last_seq:
                continue
            clock = now.get(lv.partition)
            if clock is not None and clock - lv.last_seen_up > timeout_us:
                lv.crash_sent_for_seq = lv.last_seq
                out.append(lv)
        return out

    def forget_partitions(self, partitions: set[int]) -> None:
        """Drop the runs of ``partitions`` (no longer ours after a rebalance)."""
        self.runs = {k: lv for k, lv in self.runs.items() if lv.partition not in partitions}
        for p in partitions:
            self.clocks.pop(p, None)

    def retry(self, runs: list[Liveness]) -> None:
        """The Crashed events for ``runs`` could not be appended: judge them again."""
        for lv in runs:
            lv.crash_sent_for_seq = -1
