"""The reaper: turns silence into ``Crashed`` events.

It reads the event log itself (never the store) and appends ``Crashed`` events to it;
the projector stays the only writer of run state. ``liveness`` is the pure part.
"""
