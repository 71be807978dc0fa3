"""The feed actor of `faceidx index --ray`: a small async actor from which the face actors
(`ray_workers.py`) fetch their blocks of files as the driver puts them.

One feed serves every run on a node: it is a named, detached actor (`FEED_NAME` plus the node's
id), started by the first run that needs it and kept by the cluster between runs, as Ray Data
keeps its own helper actors. So a run does not boot a Ray worker process for it (on a 2-core
machine that boot was about 1 to 2 s of CPU taken from the model, every run). Runs are told
apart by a run id; a run that ends forgets its blocks (`close`), one that was killed leaves at
most a few entries (its blocks' objects go with their owner, its driver). This module imports
nothing beyond the standard library, so the feed's process does not load faceidx's image code.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

FEED_NAME = "faceidx-feed-1"
"""The feed's actor name (plus the node's id), in the namespace FEED_NAMESPACE; the number
changes with the feed's methods, so that a newer faceidx never talks to an older feed."""
FEED_NAMESPACE = "faceidx"
CLOSED_KEPT = 1000
"""Closed runs remembered (so that a late duplicate of a retried task finds nothing to wait for)."""


@dataclass
class _Run:
    refs: dict[int, Any] = field(default_factory=dict)
    ready: dict[int, asyncio.Event] = field(default_factory=dict)
    end: int | None = None
    done: set[int] = field(default_factory=set)

    def event(self, slot: int) -> asyncio.Event:
        return self.ready.setdefault(slot, asyncio.Event())


class Feed:
    """Where each actor finds its block: block i of a run is its ObjectRef once the driver has
    put it; None for a slot that holds no files (after `finish`), whose results the driver has
    (a late duplicate of a retried task), or of a run that is closed."""

    def __init__(self) -> None:
        self._runs: dict[str, _Run] = {}
        self._closed: dict[str, None] = {}  # (ordered: the oldest is forgotten first)

    def _run(self, run: str) -> _Run | None:
        if run in self._closed:
            return None
        return self._runs.setdefault(run, _Run())

    async def put(self, run: str, slot: int, boxed: list[Any]) -> None:
        if (state := self._run(run)) is not None:
            state.refs[slot] = boxed[0]  # (boxed: Ray passes the ref itself, not its value)
            state.event(slot).set()

    async def finish(self, run: str, end: int) -> None:
        """The run's slots from `end` on hold nothing."""
        if (state := self._run(run)) is not None:
            state.end = end
            for slot, event in state.ready.items():
                if slot >= end:
                    event.set()

    async def get(self, run: str, slot: int) -> list[Any] | None:
        state = self._run(run)
        if state is None:
            return None
        if slot not in state.done and (state.end is None or slot < state.end):
            await state.event(slot).wait()
        ref = state.refs.get(slot)
        return None if ref is None else [ref]

    async def drop(self, run: str, slot: int) -> None:
        if (state := self._run(run)) is not None:
            state.done.add(slot)
            state.refs.pop(slot, None)
            state.ready.pop(slot, None)

    async def close(self, run: str) -> None:
        """The run has ended (or failed): its waiting and later `get`s find nothing."""
        state = self._runs.pop(run, None)
        self._closed[run] = None
        while len(self._closed) > CLOSED_KEPT:
            del self._closed[next(iter(self._closed))]
        if state is not None:
            for event in state.ready.values():
                event.set()
            state.refs.clear()
