"""Serialised access to the store from asyncio code.

The in-process ClickHouse engine (chDB) is one engine per process; every store call
of the process (projector writes, API reads) goes through one worker thread, so the
event loop never blocks on the store and calls never overlap.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")


class StoreAccess:
    def __init__(self, client: Any, database: str) -> None:
        self.client = client
        self.database = database
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="runstream-store")

    async def call(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(*args)`` on the store thread and await its result."""
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    def close(self) -> None:
        self._pool.shutdown(wait=True)
