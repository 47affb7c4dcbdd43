"""Reaper: the pure liveness table, the Crashed record, and the loop over a real local log."""

from __future__ import annotations

import asyncio
import time

from runstream.v1 import events_pb2
from runstream_server.common.clock import now_us
from runstream_server.common.partitioning import partition_for
from runstream_server.config import ReaperConfig
from runstream_server.eventlog.local import LocalEventLog
from runstream_server.reaper.liveness import CRASHED, FINISHED, RUNNING, LivenessTable
from runstream_server.reaper.service import Reaper, crashed_record

S = 1_000_000           # one second in microseconds
T0 = 1_700_000_000 * S  # a server time
TIMEOUT = 60 * S
P = 3                   # the partition used for the run under test


def event(kind: str, seq: int, run_id: str = "r", **body) -> events_pb2.Event:
    e = events_pb2.Event(run_id=run_id, project="proj", entity="ent", seq=seq,
                         client_time_us=42)
    msg = getattr(e, kind)
    msg.SetInParent()
    for k, v in body.items():
        setattr(msg, k, v)
    return e


def record(server_us: int, *events: events_pb2.Event) -> bytes:
    return events_pb2.LogRecord(events=list(events), server_time_us=server_us,
                                gateway="gw").SerializeToString()


def crashed(after_seq: int, run_id: str = "r") -> events_pb2.Event:
    return event("crashed", 0, run_id, detector="reaper-x", after_seq=after_seq)


def started(table: LivenessTable, at: int = T0, run_id: str = "r", partition: int = P) -> None:
    table.observe(record(at, event("run_start", 1, run_id)), partition)


def due_ids(table: LivenessTable, clock: int, partition: int = P) -> list[str]:
    return [lv.run_id for lv in table.due({partition: clock}, TIMEOUT)]


# ---------------------------------------------------------------------------- LivenessTable


def test_new_run_is_tracked_with_its_server_time_and_partition():
    t = LivenessTable()
    started(t)
    lv = t.runs[("ent", "proj", "r")]
    assert (lv.project, lv.entity, lv.partition) == ("proj", "ent", P)
    assert (lv.last_seen_us, lv.last_seq, lv.state) == (T0, 1, RUNNING)


def test_silent_run_is_due_exactly_once_after_the_timeout():
    t = LivenessTable()
    started(t)
    assert due_ids(t, T0 + TIMEOUT) == []          # exactly the timeout: not yet
    [lv] = t.due({P: T0 + TIMEOUT + 1}, TIMEOUT)
    assert lv.run_id == "r" and lv.last_seq == 1
    assert due_ids(t, T0 + TIMEOUT + 1) == []      # not twice
    assert due_ids(t, T0 + 10 * TIMEOUT) == []


def test_only_the_runs_partition_clock_counts():
    t = LivenessTable()
    started(t)
    assert t.due({P + 1: T0 + 100 * TIMEOUT}, TIMEOUT) == []


def test_a_partition_that_is_behind_is_never_judged():
    # The backlog rule: a partition missing from the clocks is behind (or not ours);
    # however old the last event, its runs are not judged.
    t = LivenessTable()
    started(t, at=1)
    for _ in range(3):
        assert t.due({}, TIMEOUT) == []
        assert t.due({p: T0 for p in range(8) if p != P}, TIMEOUT) == []
    assert due_ids(t, T0) == ["r"]                 # once caught up, it is judged


def test_server_time_of_the_event_wins_over_the_records():
    t = LivenessTable()
    e = event("run_start", 1)
    e.server_time_us = T0 + 5 * S
    t.observe(record(T0, e), P)
    assert t.runs[("ent", "proj", "r")].last_seen_us == T0 + 5 * S


def test_events_refresh_last_seen():
    t = LivenessTable()
    started(t)
    t.observe(record(T0 + 50 * S, event("heartbeat", 2)), P)
    assert due_ids(t, T0 + TIMEOUT + 1) == []
    assert due_ids(t, T0 + 50 * S + TIMEOUT + 1) == ["r"]


def test_finished_runs_are_never_due():
    t = LivenessTable()
    started(t)
    t.observe(record(T0 + S, event("finish", 2, exit_code=3)), P)
    assert t.runs[("ent", "proj", "r")].state == FINISHED
    assert due_ids(t, T0 + 1000 * TIMEOUT) == []


def test_duplicates_do_not_refresh_last_seen():
    t = LivenessTable()
    started(t)
    t.observe(record(T0 + 10 * S, event("heartbeat", 2)), P)
    t.observe(record(T0 + 50 * S, event("heartbeat", 2), event("run_start", 1)), P)
    lv = t.runs[("ent", "proj", "r")]
    assert (lv.last_seq, lv.last_seen_us) == (2, T0 + 10 * S)
    assert due_ids(t, T0 + 10 * S + TIMEOUT + 1) == ["r"]


def test_duplicate_finish_does_not_end_a_run_that_continued():
    t = LivenessTable()
    started(t)
    t.observe(record(T0, event("heartbeat", 2)), P)
    t.observe(record(T0, event("finish", 2)), P)    # seq 2 again: a duplicate
    assert t.runs[("ent", "proj", "r")].state == RUNNING


def test_crashed_for_the_current_last_seq_marks_crashed():
    t = LivenessTable()
    started(t)
    t.observe(record(T0 + 2 * S, event("log", 2)), P)
    t.observe(record(T0 + 70 * S, crashed(after_seq=2)), P)
    lv = t.runs[("ent", "proj", "r")]
    assert lv.state == CRASHED
    assert (lv.last_seq, lv.last_seen_us) == (2, T0 + 2 * S)   # a server event is no sign of life
    assert due_ids(t, T0 + 1000 * TIMEOUT) == []


def test_stale_crashed_does_not_mark_crashed():
    t = LivenessTable()
    started(t)
    t.observe(record(T0 + S, event("heartbeat", 2)), P)
    t.observe(record(T0 + 2 * S, crashed(after_seq=1)), P)   # the run sent seq 2 meanwhile
    assert t.runs[("ent", "proj", "r")].state == RUNNING


def test_crashed_for_a_finished_run_is_ignored():
    t = LivenessTable()
    started(t)
    t.observe(record(T0, event("finish", 2)), P)
    t.observe(record(T0, crashed(after_seq=2)), P)
    assert t.runs[("ent", "proj", "r")].state == FINISHED


def test_crashed_for_an_unknown_run_is_ignored():
    t = LivenessTable()
    t.observe(record(T0, crashed(after_seq=4, run_id="ghost")), P)
    assert t.runs == {}


def test_client_event_after_crash_revives_the_run_and_it_can_be_due_again():
    t = LivenessTable()
    started(t)
    assert due_ids(t, T0 + TIMEOUT + 1) == ["r"]
    t.observe(record(T0 + TIMEOUT + 2, crashed(after_seq=1)), P)
    assert t.runs[("ent", "proj", "r")].state == CRASHED
    back = T0 + 2 * TIMEOUT
    t.observe(record(back, event("heartbeat", 2)), P)
    lv = t.runs[("ent", "proj", "r")]
    assert (lv.state, lv.last_seq, lv.last_seen_us) == (RUNNING, 2, back)
    assert due_ids(t, back + TIMEOUT) == []
    [lv] = t.due({P: back + TIMEOUT + 1}, TIMEOUT)
    assert lv.last_seq == 2
    assert due_ids(t, back + TIMEOUT + 1) == []


def test_retry_rearms():
    t = LivenessTable()
    started(t)
    due = t.due({P: T0 + TIMEOUT + 1}, TIMEOUT)
    assert [lv.run_id for lv in due] == ["r"]
    assert due_ids(t, T0 + TIMEOUT + 1) == []
    t.retry(due)
    assert due_ids(t, T0 + TIMEOUT + 1) == ["r"]
    assert due_ids(t, T0 + TIMEOUT + 1) == []


def test_delete_forgets_the_run():
    t = LivenessTable()
    started(t)
    started(t, run_id="other")
    t.observe(record(T0 + S, event("delete", 2)), P)
    assert set(t.runs) == {("ent", "proj", "other")}
    assert due_ids(t, T0 + 100 * TIMEOUT) == ["other"]


def test_runs_with_one_id_in_two_projects_are_two_runs():
    # Run ids are unique within a project only: one project's live run must not keep
    # another project's run of the same id alive.
    t = LivenessTable()
    started(t)
    other = events_pb2.Event(run_id="r", project="other", entity="ent", seq=1)
    other.run_start.SetInParent()
    t.observe(record(T0, other), P)
    beat = events_pb2.Event(run_id="r", project="other", entity="ent", seq=2)
    beat.heartbeat.SetInParent()
    t.observe(record(T0 + TIMEOUT, beat), P)
    due = t.due({P: T0 + TIMEOUT + 1}, TIMEOUT)
    assert [(lv.project, lv.run_id) for lv in due] == [("proj", "r")]


def test_runs_are_judged_independently():
    t = LivenessTable()
    started(t, at=T0, run_id="old")
    started(t, at=T0 + 30 * S, run_id="new")
    assert due_ids(t, T0 + TIMEOUT + 1) == ["old"]
    assert due_ids(t, T0 + 30 * S + TIMEOUT + 1) == ["new"]


# ---------------------------------------------------------------------------- crashed_record


def test_crashed_record():
    t = LivenessTable()
    started(t)
    t.observe(record(T0 + S, event("log", 7)), P)
    [lv] = t.due({P: T0 + S + TIMEOUT + 1}, TIMEOUT)
    now = T0 + 200 * S
    rec = events_pb2.LogRecord.FromString(crashed_record(lv, "reaper-1", 60.0, now))
    assert rec.server_time_us == now
    [e] = rec.events
    assert (e.run_id, e.project, e.entity, e.seq, e.server_time_us) == (
        "r", "proj", "ent", 0, now)
    assert e.WhichOneof("body") == "crashed"
    assert e.crashed.detector == "reaper-1"
    assert e.crashed.after_seq == 7
    assert e.crashed.last_seen_us == T0 + S
    assert "60 s" in e.crashed.reason   # the fold appends ", detected by <detector>"
    # Fed back into a table, it marks the run crashed.
    t.observe(rec.SerializeToString(), P)
    assert t.runs[("ent", "proj", "r")].state == CRASHED


# ---------------------------------------------------------------------------- the loop


def _client_record(run_id: str, seq: int, kind: str) -> tuple[bytes, bytes]:
    return run_id.encode(), record(now_us(), event(kind, seq, run_id))


async def _crashed_in(consumer) -> list[tuple[bytes, events_pb2.Event]]:
    out = []
    for r in await consumer.poll(0, 10_000):
        for e in events_pb2.LogRecord.FromString(r.value).events:
            if e.WhichOneof("body") == "crashed":
                out.append((r.key, e))
    return out


def test_reaper_emits_crashed_once_for_a_silent_run_and_spares_a_live_one(tmp_path):
    async def main():
        log = LocalEventLog(tmp_path / "log", partitions=4)
        await log.start()
        reaper = Reaper(log, ReaperConfig(heartbeat_timeout_s=0.5, tick_s=0.05), "reaper-t")
        task = asyncio.create_task(reaper.run())
        reader = log.consumer("t")
        await reader.start()
        try:
            start = time.monotonic()
            await log.append([_client_record("silent", 1, "run_start"),
                              _client_record("alive", 1, "run_start")])
            found: list[tuple[bytes, events_pb2.Event]] = []
            seq = 1
            next_beat = start + 0.1
            # Keep "alive" beating every 0.1 s until "silent" is found crashed (≤ 1.5 s),
            # then for 0.6 s more (longer than the timeout) to see no second Crashed.
            deadline = None
            while deadline is None or time.monotonic() < deadline:
                now = time.monotonic()
                assert now - start < 1.5 or found, "no Crashed within 1.5 s"
                if now >= next_beat:
                    seq += 1
                    await log.append([_client_record("alive", seq, "heartbeat")])
                    next_beat += 0.1
                found += await _crashed_in(reader)
                if found and deadline is None:
                    deadline = time.monotonic() + 0.6
                await asyncio.sleep(0.02)
        finally:
            reaper.stop()
            await asyncio.wait_for(task, 5)
            await reader.close()
            await log.close()

        assert len(found) == 1, found
        key, e = found[0]
        assert key == b"silent"
        assert (e.run_id, e.project, e.entity, e.seq) == ("silent", "proj", "ent", 0)
        assert e.crashed.after_seq == 1
        assert e.crashed.detector == "reaper-t"
        assert e.crashed.last_seen_us > 0
        assert reaper.crashes_emitted == 1
        assert reaper.table.runs[("ent", "proj", "silent")].state == CRASHED
        assert reaper.table.runs[("ent", "proj", "alive")].state == RUNNING
        assert seq >= 8   # "alive" really outlived the timeout several times over

    asyncio.run(asyncio.wait_for(main(), 15))


# ---------------------------------------------------------------------------- up clock


def beacon(appended_us: int, interval_s: float = 5.0) -> tuple[bytes, int]:
    from runstream_server.gateway.beacon import beacon_record
    return beacon_record("gw", interval_s, appended_us), appended_us // 1000


def beating(t: LivenessTable, start: int, end: int, every: int = 5 * S, partition: int = P):
    for at in range(start, end + 1, every):
        value, ms = beacon(at)
        t.observe(value, partition, ms)


def test_silence_grows_while_beacons_come():
    t = LivenessTable()
    beating(t, T0 - 10 * S, T0)
    started(t, T0)
    beating(t, T0 + 5 * S, T0 + 55 * S)
    assert due_ids(t, T0 + 58 * S) == []
    beating(t, T0 + 60 * S, T0 + 65 * S)
    assert due_ids(t, T0 + 65 * S) == ["r"]        # a true crash: found on time


def test_an_outage_without_beacons_counts_for_three_intervals_only():
    t = LivenessTable()
    beating(t, T0 - 10 * S, T0)
    started(t, T0)
    # No gateway for 10 minutes: the clock stops 15 s (3 × 5 s) after the last record.
    assert due_ids(t, T0 + 600 * S) == []
    # The gateways are back; the gap is capped, the client's event comes 5 s later.
    beating(t, T0 + 600 * S, T0 + 605 * S)
    assert due_ids(t, T0 + 605 * S) == []
    t.observe(record(T0 + 606 * S, event("heartbeat", 2)), P, (T0 + 606 * S) // 1000)
    beating(t, T0 + 610 * S, T0 + 660 * S)
    assert due_ids(t, T0 + 660 * S) == []
    # ...and a run that stays silent after the outage is judged on the up time.
    beating(t, T0 + 665 * S, T0 + 700 * S)
    assert due_ids(t, T0 + 700 * S) == ["r"]


def test_append_time_not_gateway_time_drives_the_clock():
    # A beacon created before a network cut but appended after it bridges nothing: it
    # is placed at its append time.
    t = LivenessTable()
    beating(t, T0 - 10 * S, T0)
    started(t, T0)
    stale = beacon(T0 + 5 * S)[0]
    t.observe(stale, P, (T0 + 300 * S) // 1000)
    assert due_ids(t, T0 + 300 * S) == []


def test_without_beacons_every_gap_counts():
    t = LivenessTable()
    started(t, T0)
    assert due_ids(t, T0 + TIMEOUT + 1) == ["r"]


def test_beacon_keys_cover_every_partition_and_are_no_run_ids():
    from runstream_server.common.limits import RUN_ID_RE
    from runstream_server.common.partitioning import beacon_keys, partition_for
    for n in (1, 4, 12, 64):
        keys = beacon_keys(n)
        assert [partition_for(k.decode(), n) for k in keys] == list(range(n))
        assert not any(RUN_ID_RE.match(k.decode()) for k in keys)


def test_reaper_spares_runs_while_no_gateway_beacons_and_judges_again_after(tmp_path):
    # A real local log: beacons every 0.05 s (cap 0.15 s), then none for 1.5 s (an
    # outage three times the 0.5 s timeout), then beacons again: the run, silent
    # throughout the outage, is not crashed by it, and is crashed 0.5 s of beacons later.
    from runstream_server.gateway.beacon import Beacon

    async def main():
        log = LocalEventLog(tmp_path / "log", partitions=4)
        await log.start()
        beacon = Beacon(log, "gw-t", 0.05)
        reaper = Reaper(log, ReaperConfig(heartbeat_timeout_s=0.5, tick_s=0.05), "reaper-t")
        task = asyncio.create_task(reaper.run())
        reader = log.consumer("t")
        await reader.start()
        beats = asyncio.create_task(beacon.run())
        found: list = []
        try:
            await log.append([_client_record("r", 1, "run_start")])
            await asyncio.sleep(0.2)
            beacon.stop()                      # the outage
            await beats
            t_out = time.monotonic()
            while time.monotonic() - t_out < 1.5:
                found += await _crashed_in(reader)
                await asyncio.sleep(0.05)
            assert found == [], "the outage was taken for the run's silence"
            back = Beacon(log, "gw-t", 0.05)
            beats = asyncio.create_task(back.run())
            t_back = time.monotonic()
            while not found and time.monotonic() - t_back < 5:
                found += await _crashed_in(reader)
                await asyncio.sleep(0.02)
            detected_after = time.monotonic() - t_back
            back.stop()
            await beats
        finally:
            reaper.stop()
            await asyncio.wait_for(task, 5)
            await reader.close()
            await log.close()
        assert [k for k, _ in found] == [b"r"]
        # at most 0.5 s of silence counted before the outage began (0.2 s + 0.15 s cap)
        assert 0.05 <= detected_after < 2.0, detected_after
        assert beacon.sent >= 2 and reaper.table.clocks[partition_for("r", 4)].cap_us == 150_000

    asyncio.run(asyncio.wait_for(main(), 20))


def test_beacons_reach_every_partition_and_fold_to_nothing(tmp_path):
    from runstream_server.gateway.beacon import Beacon
    from runstream_server.projector.processor import RowBatch, fold_record

    async def main():
        log = LocalEventLog(tmp_path / "log", partitions=4)
        await log.start()
        await Beacon(log, "gw-t", 5.0).beat()
        reader = log.consumer("t")
        await reader.start()
        records = await reader.poll(1.0, 100)
        await reader.close()
        await log.close()
        return records

    records = asyncio.run(main())
    assert sorted(r.partition for r in records) == [0, 1, 2, 3]
    states: dict = {}
    batch = RowBatch()
    for r in records:
        rec = events_pb2.LogRecord.FromString(r.value)
        assert (rec.gateway, rec.beacon_interval_ms, len(rec.events)) == ("gw-t", 5000, 0)
        fold_record(states, r.value, r.partition, r.offset, batch)
    assert states == {} and batch.total_rows() == 0
