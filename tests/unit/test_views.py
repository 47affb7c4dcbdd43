"""The lean views (views.proto) read the same wire format as the messages they view."""

from __future__ import annotations

from google.protobuf.descriptor import FieldDescriptor
from runstream.v1 import events_pb2, views_pb2
from runstream_server.reaper.liveness import LivenessTable

_LENGTH_DELIMITED = {FieldDescriptor.TYPE_MESSAGE, FieldDescriptor.TYPE_BYTES,
                     FieldDescriptor.TYPE_STRING}


def _wire(f: FieldDescriptor):
    return "ldelim" if f.type in _LENGTH_DELIMITED else f.type


def _check_view(view, full) -> None:
    for f in view.fields:
        g = full.fields_by_number.get(f.number)
        assert g is not None and g.name == f.name, f"{view.name}.{f.name}"
        assert _wire(f) == _wire(g), f"{view.name}.{f.name}: wire type differs"
        assert f.is_repeated == g.is_repeated, f.name


def test_views_match_the_full_messages():
    _check_view(views_pb2.LogRecordView.DESCRIPTOR, events_pb2.LogRecord.DESCRIPTOR)
    _check_view(views_pb2.EventView.DESCRIPTOR, events_pb2.Event.DESCRIPTOR)
    _check_view(views_pb2.CrashedView.DESCRIPTOR, events_pb2.Crashed.DESCRIPTOR)


def test_every_event_body_is_in_the_view():
    full = {f.name: f.number for f in events_pb2.Event.DESCRIPTOR.oneofs_by_name["body"].fields}
    view = {f.name: f.number for f in views_pb2.EventView.DESCRIPTOR.oneofs_by_name["body"].fields}
    assert view == full


def test_a_record_reads_the_same_through_the_view():
    rec = events_pb2.LogRecord(server_time_us=77, gateway="g")
    a = rec.events.add(run_id="r1", project="p", entity="e", seq=3)
    a.log.step = 9
    a.log.numbers["loss"] = 0.5
    b = rec.events.add(run_id="r1", project="p", entity="e", seq=0, server_time_us=80)
    b.crashed.after_seq = 3
    b.crashed.detector = "reaper x"
    view = views_pb2.LogRecordView.FromString(rec.SerializeToString())
    assert view.server_time_us == 77
    assert [(v.run_id, v.project, v.entity, v.seq, v.server_time_us, v.WhichOneof("body"))
            for v in view.events] == [("r1", "p", "e", 3, 0, "log"),
                                      ("r1", "p", "e", 0, 80, "crashed")]
    assert view.events[1].crashed.after_seq == 3
    table = LivenessTable()
    table.observe(rec.SerializeToString(), partition=0)
    lv = table.runs[("e", "p", "r1")]
    assert lv.state == "crashed" and lv.last_seen_us == 77


def test_the_views_hold_every_field_outside_the_bodies():
    """The projector folds Log-only records through the views (projector/log_layout.py):
    a field the view lacks would be skipped there but read by the full parse."""
    body = {f.name for f in events_pb2.Event.DESCRIPTOR.oneofs_by_name["body"].fields}
    for view, full in ((views_pb2.LogRecordView, events_pb2.LogRecord),
                       (views_pb2.EventView, events_pb2.Event)):
        missing = {f.name for f in full.DESCRIPTOR.fields} - body \
            - {f.name for f in view.DESCRIPTOR.fields}
        assert not missing, f"{view.DESCRIPTOR.name} lacks {missing}"
