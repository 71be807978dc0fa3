"""Indexing on a Ray cluster: the driver plans and writes, Ray Data runs the face model.

The driver (the `faceidx index --ray` process) scans, reads and hashes files, and handles
unchanged, moved, copied, deleted and unreadable files exactly as local indexing does
(`indexer.pipeline.Indexer`). Only the files that need the model become rows of a Ray Data
dataset, which `map_batches` sends through a pool of actors. Each actor builds and loads the face
model once, from the weights shipped inside the installed Python packages on its node (Ray's
docs recommend preparing a fixed environment on every node; nothing is downloaded). Results
stream back in whatever order they finish, and the driver commits them in batches as they
arrive: the catalog has one writer, with local indexing's transactions and crash safety.

The dataset does not wait for the driver to hash every file: it is a row of numbered slots, sized
from how many files the run may send (guided blocks, see GUIDED_SHARE), and the actor that takes
slot i fetches block i from a small feed actor on the driver's node (one per node, kept by the
cluster between runs: `ray_feed.py`) as soon as the driver has hashed and planned its files.
So Ray starts its actors and they load the model while the driver still reads and hashes, and
the driver keeps only a few blocks ahead of the results (its memory and the object store stay
bounded however large the run).

Workers get each photo in one of two ways (`read`):
- "driver" (the default): the bytes the driver has just read and hashed go in the block, through
  Ray's object store (works with no shared storage);
- "shared": the actor reads the path itself (every node mounts the photos at the same path).
Either way the worker hashes what it read; a file that changed since the driver hashed it is
left for the next run rather than stored under the wrong hash.

The actors themselves (what runs in Ray's worker processes) are in `ray_workers.py` and
`ray_feed.py`. Ray is imported only inside this module's functions: it is the optional extra
`ray`.
"""

from __future__ import annotations

import itertools
import logging
import operator
import os
import pickle
import queue
import re
import threading
import uuid
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any

from .errors import FaceidxError, UnreadableImage
from .imageio import RawFile
from .ray_feed import FEED_NAME, FEED_NAMESPACE, Feed
from .ray_workers import STARTUP, FaceActor
from .settings import Settings

log = logging.getLogger(__name__)

READ_MODES = ("driver", "shared")
LOCAL = "local"
"""`--ray` without an ADDRESS: start a Ray instance on this machine for this run."""
LOOPBACK = "127.0.0.1"
"""A local instance listens on the loopback address only."""
ROWS_PER_BLOCK = 16
"""Most files per Ray Data block: results come back a block at a time."""
GUIDED_SHARE = 4
"""Guided blocks: each block holds at most 1/(GUIDED_SHARE x actors) of the files not yet in a
block, so blocks shrink to one file towards the end of a run. Ray Data queues two blocks on each
actor, so the last blocks decide how long the other actors wait idle at the end; large blocks
earlier cost fewer Ray tasks (each one costs CPU in the driver, the raylet and the actor)."""
AHEAD_PER_ACTOR = 3
"""Blocks the driver puts ahead of the results it has back, per actor: Ray Data queues two on
each actor, one more keeps them busy while the driver commits. It bounds the bytes in flight."""
LOCAL_START_ATTEMPTS = 3
AGENT_WAIT_MS = 180_000
"""How long a local raylet waits for its agents to start (Ray's default gave up after ~15 s on a
2-core machine shared with other jobs)."""
STARTUP_CONCURRENCY = max(4, 2 * (os.cpu_count() or 1))
"""Worker processes a local raylet may start at once. Ray's default, its CPUs, made the second of
two actors wait until the feed actor's or the first actor's process had started."""
_Analysis = tuple[Any, tuple[int, int] | None]


@dataclass(frozen=True)
class RayOptions:
    """How `faceidx index --ray` uses Ray."""

    address: str = LOCAL
    """`local` (start Ray here), `auto` (the cluster this node belongs to), ray://HOST:PORT or
    HOST:PORT."""
    read: str = "driver"
    """How workers get the photos: "driver" (bytes from the driver's node; the default: it needs
    no shared storage, and on one machine it was as fast as "shared" or faster in most runs, see
    README) or "shared" (each worker reads the path)."""
    actors: int | None = None
    """Actors holding the model; None: the cluster's CPUs (or GPUs) divided by what one needs."""
    cpus_per_actor: float = 1.0
    gpus_per_actor: float = 0.0
    object_store_memory: int | None = None
    """Object store size for a local instance (bytes); None: Ray's default."""

    def check(self) -> None:
        if self.read not in READ_MODES:
            raise FaceidxError(f"--ray-read {self.read!r}: choose one of {', '.join(READ_MODES)}")
        if self.actors is not None and self.actors < 1:
            raise FaceidxError(f"--ray-actors {self.actors}: needs at least 1")
        if self.cpus_per_actor <= 0 or self.gpus_per_actor < 0:
            raise FaceidxError("--ray-cpus-per-actor must be > 0 and --ray-gpus-per-actor >= 0")
        if not is_ray_address(self.address):
            raise FaceidxError(f"--ray {self.address!r} is not a Ray address (auto, "
                               "ray://HOST:PORT or HOST:PORT; --ray alone starts a local Ray)")


_HOST_PORT = re.compile(r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+):[0-9]+")


def is_ray_address(text: str) -> bool:
    """local, auto, ray://HOST:PORT or HOST:PORT (a HOST has no slash, so a PATH is never one)."""
    return text in (LOCAL, "auto") or text.startswith("ray://") or \
        _HOST_PORT.fullmatch(text) is not None


def ray_value_optional(args: Sequence[str]) -> list[str]:
    """`faceidx index` arguments with a bare `--ray` written `--ray=local`, so that `--ray` takes
    an optional ADDRESS: `--ray` (a local Ray), `--ray auto`, `--ray ray://HOST:PORT`. The word
    after `--ray` is its ADDRESS only if it is one; otherwise it stays a PATH or an option."""
    out = list(args)
    for i, arg in enumerate(out):
        if arg == "--":
            break
        if arg == "--ray" and (i + 1 == len(out) or not is_ray_address(out[i + 1])):
            out[i] = f"--ray={LOCAL}"
    return out


def _import_ray() -> Any:
    # Workers use the environment installed on their node (faceidx with its model packages), not
    # one rebuilt from the driver's `uv run` in a temporary folder (Ray's uv hook, on by default).
    os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")
    try:
        import ray
        import ray.data  # noqa: F401  (the extra installs ray[data])
    except ImportError as exc:
        raise FaceidxError(
            "--ray needs the optional extra `ray`: uv sync --extra ray "
            "(or pip install 'faceidx[ray]')") from exc
    return ray


def block_sizes(files: int, actors: int) -> list[int]:
    """Files per block, in dataset order: guided (see GUIDED_SHARE), at most ROWS_PER_BLOCK."""
    sizes, left = [], files
    while left:
        size = max(1, min(ROWS_PER_BLOCK, left // (GUIDED_SHARE * max(1, actors))))
        sizes.append(size)
        left -= size
    return sizes


class RayAnalyzer:
    """An `indexer.pipeline.Analyzer` that runs the model on Ray actors."""

    def __init__(self, model_name: str, settings: Settings, options: RayOptions) -> None:
        options.check()
        self.model_name = model_name
        self.settings = settings
        self.options = options
        host = options.address.removeprefix("ray://").rpartition(":")[0]
        if options.address == LOCAL or host in ("127.0.0.1", "localhost"):
            # a Ray of this machine only: every Ray process stays on the loopback address
            os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
        self._ray = _import_ray()
        self._started = False
        self.workers: set[str] = set()
        """`host:pid` of every actor that returned a result (for the run's log)."""
        self.startups: dict[str, tuple[float, ...]] = {}
        """The last run's actors (`host:pid`) and their STARTUP stamps: where a start-up goes."""

    def start(self) -> None:
        ray, o = self._ray, self.options
        if ray.is_initialized():
            return
        kwargs: dict[str, Any] = {"log_to_driver": False, "logging_level": logging.WARNING,
                                  "configure_logging": False}
        try:
            if o.address == LOCAL:
                self._start_local(kwargs)
            else:
                ray.init(address=o.address, **kwargs)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise FaceidxError(f"cannot start or reach Ray at {o.address}: {exc}") from exc
        self._started = True
        logging.getLogger("ray.data").setLevel(logging.ERROR)  # no progress chatter on stderr
        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = False
        ctx.print_on_execution_start = False
        resources = ray.cluster_resources()
        log.info("Ray: %d nodes, %s CPUs, %s GPUs", len(ray.nodes()), resources.get("CPU", 0),
                 resources.get("GPU", 0))

    def _start_local(self, kwargs: dict[str, Any]) -> None:
        """A new Ray instance on this machine. On a crowded machine its raylet may give up
        waiting for its agents, or register later than `ray.init`'s fixed 30 s: the raylet is
        told to wait longer, and the start is tried again."""
        ray = self._ray
        os.environ.setdefault("RAY_agent_register_timeout_ms", str(AGENT_WAIT_MS))
        os.environ.setdefault("RAY_worker_maximum_startup_concurrency", str(STARTUP_CONCURRENCY))
        for attempt in range(1, LOCAL_START_ATTEMPTS + 1):
            try:
                ray.init(address="local",  # a new instance even if another Ray runs here
                         include_dashboard=False,
                         object_store_memory=self.options.object_store_memory,
                         _node_ip_address=LOOPBACK, **kwargs)
                return
            except Exception as exc:  # Ray raises a bare Exception when the node times out
                ray.shutdown()
                if attempt == LOCAL_START_ATTEMPTS or "timed out" not in str(exc):
                    raise RuntimeError(str(exc)) from exc
                log.warning("a local Ray did not start (%s); trying again", exc)

    def close(self) -> None:
        if self._started:
            self._ray.shutdown()
            self._started = False

    def actors(self) -> int:
        """The actor count: as asked, or as many as the cluster's resources hold."""
        o = self.options
        if o.actors is not None:
            return o.actors
        resources = self._ray.cluster_resources()
        fits = resources.get("CPU", 1) / o.cpus_per_actor
        if o.gpus_per_actor:
            fits = min(fits, resources.get("GPU", 0) / o.gpus_per_actor)
        return max(1, int(fits))

    def __call__(self, raws: Iterable[RawFile]) -> Iterator[tuple[RawFile, _Analysis]]:
        """Results as they come back, while the driver still reads and hashes what follows:
        `raws` may hint (`__length_hint__`) at most how many files it holds, to size the
        dataset's slots; without a hint the driver plans every file first."""
        most = operator.length_hint(raws, 0)
        files = iter(raws)
        first = next(files, None)
        if first is None:
            return  # nothing needs the model: Ray is not even started
        if most <= 0:
            rest = list(files)
            most, files = 1 + len(rest), iter(rest)
        self.start()
        yield from self._stream(itertools.chain([first], files), most)

    def _stream(self, files: Iterator[RawFile], most: int
                ) -> Iterator[tuple[RawFile, _Analysis]]:
        ray, o = self._ray, self.options
        self.startups = {}
        actors = self.actors()
        slots = block_sizes(most, actors)
        feed, run = feed_actor(ray), uuid.uuid4().hex
        ds = ray.data.from_items([{"slot": i} for i in range(len(slots))],
                                 override_num_blocks=len(slots)).map_batches(
            FaceActor, fn_constructor_kwargs={"model_name": self.model_name,
                                              "settings": self.settings, "feed": feed, "run": run,
                                              "threads": max(1, int(o.cpus_per_actor))},
            batch_size=1, compute=ray.data.ActorPoolStrategy(size=actors),
            num_cpus=o.cpus_per_actor, num_gpus=o.gpus_per_actor or None)
        rows: queue.Queue[Any] = queue.Queue()
        threading.Thread(target=_iterate, args=(ray, ds, rows), daemon=True,
                         name="faceidx-ray-results").start()
        log.info("up to %d files for %d Ray actors (read: %s)", most, actors, o.read)
        pending: dict[int, RawFile] = {}
        slot_of: dict[int, int] = {}
        held: dict[int, tuple[Any, int]] = {}  # slot -> (its ref, files not back yet)
        keys = itertools.count()

        def put(slot: int, part: list[RawFile]) -> None:
            block = []
            for raw in part:
                key = next(keys)
                pending[key] = replace(raw, data=b"")  # keep the facts, not the bytes
                slot_of[key] = slot
                block.append((key, str(raw.path), raw.content_hash,
                              raw.data if o.read == "driver" else None))
            ref = ray.put(block)
            held[slot] = ref, len(part)
            feed.put.remote(run, slot, [ref])

        def take(row: dict[str, Any]) -> Iterator[tuple[RawFile, _Analysis]]:
            key = int(row["key"])
            raw = pending.pop(key, None)
            if raw is None:  # a result Ray delivered twice (a retried task): keep the first
                return
            slot = slot_of.pop(key)
            ref, left = held[slot]
            if left > 1:
                held[slot] = ref, left - 1
            else:  # the block's last result: nobody needs its bytes any more
                del held[slot]
                feed.drop.remote(run, slot)
            self.workers.add(str(row["worker"]))
            self.startups.setdefault(str(row["worker"]),
                                     tuple(float(row[name]) for name in STARTUP))
            kind, value = pickle.loads(row["outcome"])
            if kind == "ok":
                yield raw, value
            elif kind == "failed":
                yield raw, (UnreadableImage(raw.path, value), None)
            else:
                log.warning("skipping %s: %s; the next run indexes it", raw.path, value)

        try:
            slot, part, more = 0, [], True
            while more:
                while more and len(held) < AHEAD_PER_ACTOR * actors:
                    raw = next(files, None)
                    if raw is None:
                        more = False
                        break
                    part.append(raw)
                    if len(part) >= slots[slot] and slot + 1 < len(slots):
                        put(slot, part)
                        slot, part = slot + 1, []
                    while not rows.empty():
                        yield from take(_row(ray, rows.get()))
                if more:  # as many blocks ahead as allowed: wait for a result
                    yield from take(_row(ray, rows.get()))
            for size in _tail(len(part), actors, len(slots) - slot):  # guided, to the end
                put(slot, part[:size])
                slot, part = slot + 1, part[size:]
            feed.finish.remote(run, slot)
            while (row := rows.get()) is not _END:
                yield from take(_row(ray, row))
        finally:
            feed.close.remote(run)  # (after an error: the actors waiting on it get nothing)
        if pending:
            log.warning("%d files got no result from Ray; the next run indexes them",
                        len(pending))
        log.info("Ray actors that returned results: %s", ", ".join(sorted(self.workers)))
        for worker, (process, constructed, loaded, cpu) in sorted(self.startups.items()):
            log.info("Ray actor %s: its constructor began %.1f s after its process started "
                     "(%.1f s of CPU), its model was loaded %.1f s later", worker,
                     constructed - process, cpu, loaded - constructed)


_END = object()


def feed_actor(ray: Any) -> Any:
    """The feed actor of this node (the driver's): the one a run before left on the cluster, or
    a new one. It is detached, so a run does not pay a Ray worker's start for it."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    here = ray.get_runtime_context().get_node_id()
    return ray.remote(Feed).options(
        name=f"{FEED_NAME}-{here}", namespace=FEED_NAMESPACE, lifetime="detached",
        get_if_exists=True, num_cpus=0,
        scheduling_strategy=NodeAffinitySchedulingStrategy(here, soft=False)).remote()


def _tail(files: int, actors: int, slots: int) -> list[int]:
    """The last files' blocks: guided, in at most `slots` blocks."""
    sizes = block_sizes(files, actors) if files else []
    return sizes if len(sizes) <= slots else sizes[:slots - 1] + [sum(sizes[slots - 1:])]


def _iterate(ray: Any, ds: Any, rows: queue.Queue[Any]) -> None:
    """(On a thread of the driver) the dataset's rows as they are ready, then _END; or the
    exception that stopped Ray."""
    try:  # (iter_rows prefetches: it hands a block over only once the next one is done)
        for batch in ds.iter_batches(batch_size=None, batch_format="numpy", prefetch_batches=0):
            columns = list(batch.items())
            for i in range(len(batch["key"])):
                rows.put({name: values[i] for name, values in columns})
        rows.put(_END)
    except Exception as exc:  # handed to the driver's thread, which raises it
        rows.put(exc)


def _row(ray: Any, item: Any) -> dict[str, Any]:
    """A result row; a failure of Ray itself is one FaceidxError (what was committed before it
    stays; the next run does the rest)."""
    if item is _END:
        raise FaceidxError("Ray ended before every block came back")
    if isinstance(item, BaseException):
        first = next((line for line in str(item).splitlines() if line.strip()),
                     type(item).__name__)
        raise FaceidxError(f"Ray failed: {first}") from item
    return item  # type: ignore[no-any-return]


@contextmanager
def ray_analyzer(model_name: str, settings: Settings, options: RayOptions
                 ) -> Iterator[RayAnalyzer]:
    """A RayAnalyzer for one run; a Ray instance it started is shut down afterwards."""
    analyzer = RayAnalyzer(model_name, settings, options)
    try:
        yield analyzer
    finally:
        analyzer.close()
