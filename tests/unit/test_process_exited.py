"""``ProcessExited`` (the client's upload helper saw the training process die): the
fold's rule, the reaper's view of it, and the gateway accepting it from clients."""

from __future__ import annotations

from runstream.v1 import events_pb2 as E
from runstream.v1 import ingest_pb2
from runstream_server.gateway.validation import validate_request
from runstream_server.projector.processor import RunState
from runstream_server.reaper.liveness import CRASHED, FINISHED, RUNNING, LivenessTable

from tests.fixtures.fold import KEY, T0, ev, fold, rec, start

CAUSE = "process exited without finish (pid 4242 on host gpu-7), seen by the uploader"


def log(seq: int, step: int) -> E.Event:
    return ev(seq, log=E.Log(step=step, numbers={"x": float(step)}))


def exited(seq: int, reason: str = "") -> E.Event:
    return ev(seq, process_exited=E.ProcessExited(pid=4242, hostname="gpu-7", reason=reason,
                                                  after_seq=seq - 1))


def finish(seq: int, code: int = 0) -> E.Event:
    return ev(seq, finish=E.Finish(exit_code=code))


def test_a_running_run_is_crashed_at_once_with_the_cause():
    states, batch = fold([rec(start(1)), rec(log(2, 0)), rec(exited(3), server_us=T0 + 99)])
    s = states[KEY]
    assert (s.state, s.state_cause) == ("crashed", CAUSE)
    assert s.end_time == T0 + 99 and s.last_seq == 3 and s.seq_gaps == 0
    assert batch.runs[KEY] is s and batch.stats.applied == 3
    s = fold([rec(start(1)), rec(exited(2, reason="its parent process changed"))])[0][KEY]
    assert s.state_cause == CAUSE + ": its parent process changed"


def test_ignored_for_runs_that_ended_and_a_reaper_crash_keeps_its_cause():
    for end, state in ((finish(2, 0), "finished"), (finish(2, 3), "failed")):
        s = fold([rec(start(1)), rec(end), rec(exited(3))])[0][KEY]
        assert s.state == state and s.last_seq == 3 and s.end_time == T0 + 5
    crashed = ev(0, crashed=E.Crashed(detector="reaper-0", after_seq=1, last_seen_us=T0))
    s = fold([rec(start(1)), rec(crashed), rec(exited(2))])[0][KEY]
    assert s.state == "crashed" and s.state_cause.endswith("detected by reaper-0")
    assert s.last_seq == 2                      # still a client event: liveness, seq


def test_a_later_client_event_revives_and_a_resume_reopens():
    states, _ = fold([rec(start(1)), rec(exited(2))])
    fold([rec(log(3, 1))], states, first_offset=2)
    s = states[KEY]
    assert s.state == "running" and s.state_cause == "sent log seq 3 after crash"
    fold([rec(exited(4)), rec(start(5, resumed=True))], states, first_offset=3)
    assert s.state == "running" and s.state_cause == "resumed"


def test_with_a_pending_stop_the_run_is_killed():
    stop = ev(0, stop_requested=E.StopRequested(requested_by="carol"))
    s = fold([rec(start(1)), rec(stop), rec(exited(2))])[0][KEY]
    assert s.state == "killed" and s.state_cause.startswith("stopped by carol at ")
    assert s.state_cause.endswith(f"; the process ended without finishing ({CAUSE})")


def test_replay_changes_nothing():
    records = [rec(start(1)), rec(log(2, 0)), rec(exited(3))]
    states, _ = fold(records)
    again, b = fold(records, {KEY: RunState.from_row(states[KEY].to_row())})
    assert b.total_rows() == 0 and again[KEY] == states[KEY]


def test_the_reaper_takes_it_as_a_crash_and_never_emits_another():
    t = LivenessTable()
    t.observe(rec(start(1), log(2, 0)), 0)
    t.observe(rec(exited(3), server_us=T0 + 10), 0)
    lv = t.runs[KEY]
    assert (lv.state, lv.last_seq) == (CRASHED, 3)
    assert t.due({0: T0 + 3600 * 10**6}, 60 * 10**6) == []
    t.observe(rec(log(4, 1)), 0)                # any later client event revives it
    assert lv.state == RUNNING
    t.observe(rec(finish(5)), 0)
    t.observe(rec(exited(6)), 0)                # after a finish: stays finished
    assert lv.state == FINISHED


def test_the_gateway_accepts_it_from_clients():
    [s] = validate_request(ingest_pb2.IngestRequest(events=[start(1), exited(2)], batch_id=1))
    assert s.indexes == (0, 1) and s.max_seq == 2
