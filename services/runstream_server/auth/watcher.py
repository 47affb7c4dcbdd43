"""Keeps a process's ``IdentityTable`` in step with the identity log.

``start()`` reads the log from the beginning to its end before returning, so a process
serves only once it knows every user and key written before it started. ``run()`` then
tails the log (a new key works, a revoked key stops working, within about one poll).
``append()`` writes a change and returns once this process has folded it, so the caller
reads its own write. The watcher never commits (its group is its own, random).
"""

from __future__ import annotations

import asyncio
import logging
import uuid

from ..common.clock import now_us
from ..common.errors import RetryableError
from ..eventlog import EventLog, LogConsumer
from . import identity
from .identity import IdentityTable

log = logging.getLogger(__name__)

POLL_S = 0.2            # how soon a revoked key stops working, at most (plus the log's)
RETRY_S = 1.0
KEY = b"identity"       # one partition, one key: changes apply in the order written


class IdentityWatcher:
    def __init__(self, identity_log: EventLog, instance: str) -> None:
        self.log = identity_log
        self.table = IdentityTable()
        safe = "".join(c if c.isalnum() or c in "._-" else "-" for c in instance)[:100]
        self._group = f"runstream-identity-{safe}-{uuid.uuid4().hex[:8]}"
        self._consumer: LogConsumer | None = None
        self._next = 0                       # the next offset to fold
        self._advanced = asyncio.Condition()
        self._stopping = asyncio.Event()

    async def start(self) -> None:
        """Fold the whole log as it is now. Raises ``RetryableError`` if unreachable."""
        self._consumer = self.log.consumer(self._group, from_beginning_if_new=True)
        await self._consumer.start()
        end = (await self.log.end_offsets()).get(0, 0)
        while self._next < end:
            await self._poll(1.0)

    def stop(self) -> None:
        self._stopping.set()

    async def _poll(self, timeout_s: float) -> None:
        records = await self._consumer.poll(timeout_s, 1000)
        for r in records:
            self.table.apply(r.value)
            self._next = r.offset + 1
        if records:
            async with self._advanced:
                self._advanced.notify_all()

    async def run(self) -> None:
        try:
            while not self._stopping.is_set():
                try:
                    await self._poll(POLL_S)
                except RetryableError as e:
                    log.warning("identity log: poll failed (%s); retrying", e)
                    try:
                        await asyncio.wait_for(self._stopping.wait(), RETRY_S)
                    except TimeoutError:
                        pass
        finally:
            if self._consumer is not None:
                await self._consumer.close()
                self._consumer = None

    async def append(self, *values: bytes, timeout_s: float = 10.0) -> None:
        """Write changes; return once this process's table has them (``run`` must be
        running). Raises ``RetryableError`` if the log or the fold does not get there."""
        placed = await self.log.append([(KEY, v) for v in values])
        last = max(offset for _, offset in placed)

        async def folded():
            async with self._advanced:
                await self._advanced.wait_for(lambda: self._next > last)
        try:
            await asyncio.wait_for(folded(), timeout_s)
        except TimeoutError:
            raise RetryableError("the identity change was written but not read back "
                                 f"within {timeout_s} s") from None

    async def bootstrap(self, key: str, user: str = "admin") -> bool:
        """Make ``key`` an admin key of ``user`` unless it already authenticates.
        Idempotent, also across processes bootstrapping at once. True if it wrote."""
        if self.table.has_key(key) or identity.key_id_of(key) in self.table.revoked:
            return False                 # already there, or revoked by an admin for good
        t = now_us()
        await self.append(identity.user_created(user, True, t),
                          identity.key_created(user, key, t, description="bootstrap"))
        return True
