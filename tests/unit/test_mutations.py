"""Run changes (api/mutations.py) and the control log tail (gateway/control.py), in-process
over real LocalEventLogs; the store is a stand-in that knows a few runs."""

from __future__ import annotations

import asyncio

import pytest
from runstream.v1 import events_pb2 as E
from runstream_server.api.mutations import (
    Mutations,
    patch_from_json,
    validate_identity,
    validate_patch,
)
from runstream_server.common.errors import ConflictError, NotFoundError, PermanentError
from runstream_server.eventlog.local import LocalEventLog
from runstream_server.gateway.control import ControlTail, stop_controls

from tests.fixtures.identity import admin


def arun(coro):
    return asyncio.run(asyncio.wait_for(coro, 15))


class _Store:
    """StoreAccess stand-in: ``call(fn, *args)`` runs fn inline."""

    async def call(self, fn, *args):
        return fn(*args)


class _Queries:
    def __init__(self, runs: dict[tuple[str, str, str], str]) -> None:
        self.runs = runs

    def get_run(self, entity, project, run_id):
        state = self.runs.get((entity, project, run_id))
        if state is None:
            raise NotFoundError(f"run {entity}/{project}/{run_id} not found")
        return {"state": state}


async def _records(log: LocalEventLog) -> list[E.LogRecord]:
    c = log.consumer("reader")
    await c.start()
    out = []
    while batch := await c.poll(0.05, 1000):
        out += [E.LogRecord.FromString(r.value) for r in batch]
    await c.close()
    return out


def test_validate_patch_normalises_and_refuses():
    p = validate_patch(E.RunPatch(name="n", tags=["a", "b", "a"], set_tags=True,
                                  color="#ABCDEF", hidden=False))
    assert list(p.tags) == ["a", "b"] and p.color == "#abcdef" and p.HasField("hidden")
    assert validate_patch(E.RunPatch(color="")).HasField("color")      # back to default
    assert validate_patch(E.RunPatch(set_tags=True)).set_tags         # clear the tags
    assert validate_patch(E.RunPatch(notes="line 1\nline 2\ttab")).notes.startswith("line")
    for bad in (E.RunPatch(), E.RunPatch(name=""), E.RunPatch(name=" "),
                E.RunPatch(name="x" * 129), E.RunPatch(name="a\nb"),
                E.RunPatch(notes="x" * (64 * 1024 + 1)), E.RunPatch(notes="\x00"),
                E.RunPatch(tags=["a"]), E.RunPatch(tags=[""], set_tags=True),
                E.RunPatch(tags=["t"] * 101, set_tags=True),
                E.RunPatch(tags=["x" * 65], set_tags=True), E.RunPatch(color="red"),
                E.RunPatch(color="#12345"), E.RunPatch(privacy=7)):
        with pytest.raises(PermanentError):
            validate_patch(bad)


def test_patch_from_json():
    p = patch_from_json({"name": "n", "notes": None, "tags": ["x"], "privacy": "public",
                         "hidden": True, "color": "#fff"})
    assert p.name == "n" and not p.HasField("notes") and list(p.tags) == ["x"] and p.set_tags
    assert p.privacy == E.PRIVACY_PUBLIC and p.hidden and p.color == "#fff"
    for bad in ([], "x", {"nope": 1}, {"name": 1}, {"tags": "a"}, {"tags": [1]},
                {"privacy": "secret"}, {"hidden": "yes"}):
        with pytest.raises(PermanentError):
            patch_from_json(bad)


P = admin()


def test_validate_identity():
    validate_identity("ent", "proj", "run-1.a_b")
    for args in (("ent", "proj", ""), ("ent", "proj", "a/b"), ("", "proj", "r"),
                 ("ent", "p:q", "r"), ("e" * 129, "proj", "r")):
        with pytest.raises(PermanentError):
            validate_identity(*args)


def test_changes_are_server_events_in_the_log_and_stops_also_in_the_control_log(tmp_path):
    async def main():
        log = LocalEventLog(tmp_path / "log", partitions=4)
        control = LocalEventLog(tmp_path / "control", partitions=1, fsync="never")
        await log.start()
        await control.start()
        q = _Queries({("ent", "proj", "run"): "running", ("ent", "proj", "done"): "finished"})
        m = Mutations(log, control, _Store(), q, "inst-1")
        try:
            await m.update(P, "ent", "proj", "run", E.RunPatch(name="new", color="#ABC"))
            await m.stop(P, "ent", "proj", "run", "")
            await m.delete(P, "ent", "proj", "run")
            with pytest.raises(NotFoundError):
                await m.update(P, "ent", "proj", "nope", E.RunPatch(name="x"))
            with pytest.raises(NotFoundError):
                await m.stop(P, "ent", "proj", "nope", "me")
            with pytest.raises(ConflictError):
                await m.stop(P, "ent", "proj", "done", "me")
            with pytest.raises(PermanentError):      # input is checked before the store
                await m.update(P, "ent", "proj", "nope", E.RunPatch())
            with pytest.raises(PermanentError):
                await m.stop(P, "ent", "proj", "run", "a\nb")
            return await _records(log), await _records(control)
        finally:
            await log.close()
            await control.close()

    main_recs, control_recs = arun(main())
    events = [r.events[0] for r in main_recs]
    assert [e.WhichOneof("body") for e in events] == ["run_patch", "stop_requested", "delete"]
    assert all(e.seq == 0 and e.server_time_us > 0 and e.run_id == "run" for e in events)
    assert all(r.gateway == "api:inst-1" and r.server_time_us > 0 for r in main_recs)
    assert events[0].run_patch.color == "#abc"
    assert events[1].stop_requested.requested_by == "admin"    # the caller, by default
    (stop_rec,) = control_recs
    assert stop_rec.events[0] == events[1]


class _Ingest:
    def __init__(self) -> None:
        self.pushed: list[tuple[str, str]] = []

    async def push_control(self, run_id, control):
        self.pushed.append((run_id, control.stop_run.requested_by))
        return 1


def _stop_record(run_id: str, who: str) -> tuple[bytes, bytes]:
    ev = E.Event(run_id=run_id, project="p", entity="e", server_time_us=1,
                 stop_requested=E.StopRequested(requested_by=who))
    return run_id.encode(), E.LogRecord(events=[ev]).SerializeToString()


def test_control_tail_delivers_only_what_comes_after_it_joined(tmp_path):
    async def main():
        control = LocalEventLog(tmp_path / "control", partitions=1, fsync="never")
        await control.start()
        await control.append([_stop_record("old", "x")])
        ingest = _Ingest()
        tail = ControlTail(control, ingest, "gw 1/a")
        await tail.start()
        task = asyncio.create_task(tail.run())
        try:
            await control.append([_stop_record("r1", "alice"), (b"junk", b"\xff\xff")])
            for _ in range(100):
                if ingest.pushed:
                    break
                await asyncio.sleep(0.02)
        finally:
            tail.stop()
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await control.close()
        return ingest.pushed, tail

    pushed, tail = arun(main())
    assert pushed == [("r1", "alice")] and tail.delivered == 1
    assert tail.group.startswith("runstream-control-gw-1-a-")
    assert stop_controls(b"\xff\xff") == []
