"""Events not yet acknowledged by the server, in the order they were made.

Thread-safe. ``append`` is called from the user's thread (bounded, local work only);
the sender reads and acknowledges from its own thread. Entries leave the journal only
when the server has acknowledged them (or rejected them for good).

The journal is in memory; a process that dies loses what was not yet acknowledged
(the disk-backed journal is a later step, see docs/architecture.md).
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass


@dataclass(slots=True)
class Entry:
    n: int          # position in the journal, increasing for the life of the process
    run_id: str
    seq: int
    data: bytes     # serialized runstream.v1.Event


class Journal:
    def __init__(self) -> None:
        self._entries: deque[Entry] = deque()
        self._next_n = 0
        self._acked: dict[str, int] = {}
        self._last_seq: dict[str, int] = {}
        self._cond = threading.Condition()
        self.rejected_events = 0

    def append(self, run_id: str, seq: int, data: bytes) -> None:
        with self._cond:
            self._entries.append(Entry(self._next_n, run_id, seq, data))
            self._next_n += 1
            self._last_seq[run_id] = seq

    def pending_from(self, n: int, max_events: int, max_bytes: int) -> list[Entry]:
        """Entries at or after position ``n``, at most ``max_events``/``max_bytes``."""
        with self._cond:
            if not self._entries:
                return []
            start = max(0, n - self._entries[0].n)
            out: list[Entry] = []
            size = 0
            for i in range(start, len(self._entries)):
                e = self._entries[i]
                if out and (len(out) >= max_events or size + len(e.data) > max_bytes):
                    break
                out.append(e)
                size += len(e.data)
            return out

    def first_unacked(self) -> int:
        with self._cond:
            return self._entries[0].n if self._entries else self._next_n

    def next_position(self) -> int:
        with self._cond:
            return self._next_n

    def ack(self, run_id: str, seq: int, rejected: bool = False) -> None:
        """Everything of ``run_id`` up to ``seq`` is durable (or was refused for good)."""
        with self._cond:
            prev = self._acked.get(run_id, 0)
            if seq <= prev:
                return
            self._acked[run_id] = seq
            entries = self._entries
            if rejected:
                # Only entries not acknowledged before: acked ones can still be in the
                # deque, behind an un-acked entry of another run.
                self.rejected_events += sum(1 for e in entries
                                            if e.run_id == run_id and prev < e.seq <= seq)
            while entries and entries[0].seq <= self._acked.get(entries[0].run_id, 0):
                entries.popleft()
            self._cond.notify_all()

    def unacked(self, run_id: str | None = None) -> int:
        with self._cond:
            if run_id is None:
                return len(self._entries)
            acked = self._acked.get(run_id, 0)
            return sum(1 for e in self._entries if e.run_id == run_id and e.seq > acked)

    def wait_acked(self, run_id: str, seq: int, timeout: float) -> bool:
        """Block until ``run_id`` is acknowledged up to ``seq``; False on timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: self._acked.get(run_id, 0) >= seq, timeout)
