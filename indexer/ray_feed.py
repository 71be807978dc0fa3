"""The feed actor of `faceidx index --ray`: a small async actor on the driver's node from which
the face actors (`ray_workers.py`) fetch their blocks of files.

It has a Ray worker process of its own, started with every run: this module imports nothing
beyond the standard library (not numpy, Pillow or the rest of faceidx), so that process only
pays for booting Ray's worker.
"""

from __future__ import annotations

import asyncio
from typing import Any


class Feed:
    """Where each actor finds its block (a small async actor on the driver's node): block i's
    ObjectRef once the driver has put it; None for a slot that holds no files (after `finish`)
    or whose results the driver has (a late duplicate of a retried task)."""

    def __init__(self) -> None:
        self._refs: dict[int, Any] = {}
        self._ready: dict[int, asyncio.Event] = {}
        self._end: int | None = None
        self._done: set[int] = set()

    def _event(self, slot: int) -> asyncio.Event:
        return self._ready.setdefault(slot, asyncio.Event())

    async def put(self, slot: int, boxed: list[Any]) -> None:
        self._refs[slot] = boxed[0]  # (boxed: Ray passes the ref itself, not its value)
        self._event(slot).set()

    async def finish(self, end: int) -> None:
        """Slots from `end` on hold nothing."""
        self._end = end
        for slot, event in self._ready.items():
            if slot >= end:
                event.set()

    async def get(self, slot: int) -> list[Any] | None:
        if slot not in self._done and (self._end is None or slot < self._end):
            await self._event(slot).wait()
        ref = self._refs.get(slot)
        return None if ref is None else [ref]

    async def drop(self, slot: int) -> None:
        self._done.add(slot)
        self._refs.pop(slot, None)
        self._ready.pop(slot, None)
