"""The fold's stop rules: a Finish (or Crashed) after an applied StopRequested → killed."""

from __future__ import annotations

from runstream.v1 import events_pb2 as E
from runstream_server.projector.processor import RUNS, RunState

from tests.fixtures.fold import KEY, T0, ev, fold, rec, start


def hb(seq: int) -> E.Event:
    return ev(seq, heartbeat=E.Heartbeat())


def crashed(after_seq: int, last_seen_us: int, detector: str) -> E.Event:
    return ev(0, crashed=E.Crashed(after_seq=after_seq, last_seen_us=last_seen_us,
                                   detector=detector))


def stop(by: str = "alice") -> E.Event:
    return ev(0, stop_requested=E.StopRequested(requested_by=by))


def finish(seq: int, code: int = 0) -> E.Event:
    return ev(seq, finish=E.Finish(exit_code=code))


def test_finish_after_stop_is_killed_with_who_and_when():
    states, _ = fold([rec(start(1)), rec(stop("alice"), server_us=T0 + 10_000_000),
                      rec(finish(2, 255), server_us=T0 + 11_000_000)])
    s = states[KEY]
    assert s.state == "killed"
    assert s.state_cause == "stopped by alice at 2023-11-14T22:13:30Z, exit code 255"
    assert s.exit_code == 255 and s.end_time == T0 + 11_000_000
    assert (s.stop_requested_by, s.stop_requested_time) == ("alice", T0 + 10_000_000)


def test_a_graceful_exit_after_stop_is_killed_too():
    s = fold([rec(start(1)), rec(stop("bob")), rec(finish(2, 0))])[0][KEY]
    assert s.state == "killed" and s.state_cause.startswith("stopped by bob at ")
    assert not s.state_cause.endswith("exit code 0")


def test_stop_alone_keeps_the_run_running_and_the_first_request_wins():
    states, b = fold([rec(start(1)), rec(stop("first"), server_us=T0 + 1),
                      rec(stop("second"), server_us=T0 + 2), rec(hb(2))])
    s = states[KEY]
    assert s.state == "running" and s.state_cause == "started"
    assert (s.stop_requested_by, s.stop_requested_time) == ("first", T0 + 1)
    assert s.version == 4 and b.rows()[RUNS] == 1


def test_stop_of_an_ended_run_changes_nothing():
    states, _ = fold([rec(start(1)), rec(finish(2, 0)), rec(stop())])
    s = states[KEY]
    assert s.state == "finished" and s.stop_requested_time == 0 and s.version == 3


def test_crash_after_stop_is_killed():
    states, _ = fold([rec(start(1)), rec(stop("carol")),
                      rec(crashed(1, last_seen_us=T0 + 5, detector="reaper-0"))])
    s = states[KEY]
    assert s.state == "killed" and s.end_time == T0 + 5
    assert s.state_cause.startswith("stopped by carol at ")
    assert "the process ended without finishing (" in s.state_cause
    assert s.state_cause.endswith("detected by reaper-0)")


def test_killed_stays_killed_and_resume_clears_the_request():
    states, _ = fold([rec(start(1)), rec(stop()), rec(finish(2, 1)), rec(hb(3))])
    s = states[KEY]
    assert s.state == "killed" and s.last_seq == 3
    fold([rec(start(4, resumed=True))], states, first_offset=4)
    assert s.state == "running" and s.stop_requested_time == 0 and s.stop_requested_by == ""
    fold([rec(finish(5, 0))], states, first_offset=5)
    assert s.state == "finished"


def test_client_sent_stop_request_counts_too():
    s = fold([rec(start(1)), rec(ev(2, stop_requested=E.StopRequested(requested_by="me"))),
              rec(finish(3, 0))])[0][KEY]
    assert s.state == "killed" and s.state_cause.startswith("stopped by me at ")


def test_stop_request_without_requester_and_replay():
    records = [rec(start(1)), rec(stop("")), rec(finish(2, 0))]
    states, _ = fold(records)
    s = states[KEY]
    assert s.state_cause.startswith("stopped by unknown at ")
    again, b = fold(records, {KEY: RunState.from_row(s.to_row())})
    assert b.total_rows() == 0 and again[KEY] == s


def test_stop_columns_round_trip_through_arrow():
    _, b = fold([rec(start(1)), rec(stop("dave"), server_us=T0 + 7)])
    row = b.to_arrow(RUNS).to_pylist()[0]
    assert row["stop_requested_by"] == "dave"
    assert int(row["stop_requested_time"].timestamp() * 1e6) == T0 + 7
