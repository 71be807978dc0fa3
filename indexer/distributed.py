"""Indexing on a Ray cluster: the driver plans and writes, Ray Data runs the face model.

The driver (the `faceidx index --ray` process) scans, reads and hashes files, and handles
unchanged, moved, copied, deleted and unreadable files exactly as local indexing does
(`indexer.pipeline.Indexer`). Only the files that need the model become rows of a Ray Data
dataset, which `map_batches` sends through a pool of actors. Each actor builds and loads the face
model once, from the weights shipped inside the installed Python packages on its node (Ray's
docs recommend preparing a fixed environment on every node; nothing is downloaded). Results
stream back in whatever order they finish, and the driver commits them in batches as they
arrive: the catalog has one writer, with local indexing's transactions and crash safety.

Workers get each photo in one of two ways (`read`):
- "driver" (the default): the bytes go from the driver's node through Ray's object store (works
  with no shared storage). The driver has just read and hashed the files, so up to INLINE_BYTES
  in all it puts them in the dataset's blocks itself; a larger run reads them again in a small
  Ray Data stage pinned to the driver's node;
- "shared": the actor reads the path itself (every node mounts the photos at the same path).
Either way the worker hashes what it read; a file that changed since the driver hashed it is
left for the next run rather than stored under the wrong hash.

Ray is imported only inside this module's functions: it is the optional extra `ray`.
"""

from __future__ import annotations

import hashlib
import logging
import os
import pickle
import re
import socket
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from .errors import FaceidxError, UnreadableImage
from .imageio import Photo, RawFile, read_raw
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
INLINE_BYTES = 256 * 2**20
"""--ray-read driver: when the files that need the model hold at most this many bytes in all,
the driver, which has just read and hashed them, puts them in the dataset's own blocks (no read
stage, no extra Ray processes); a larger run reads them again in a Ray Data stage pinned to the
driver's node, so the driver never holds more than this in memory."""
LOCAL_START_ATTEMPTS = 3
AGENT_WAIT_MS = 180_000
"""How long a local raylet waits for its agents to start (Ray's default gave up after ~15 s on a
2-core machine shared with other jobs)."""
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


class FaceActor:
    """A Ray Data actor: loads the face model once, then analyses one row at a time."""

    def __init__(self, model_name: str, settings: Settings, threads: int = 1) -> None:
        from .models import create_model

        if settings.model_threads is None:  # as a local worker process: the CPUs it reserved
            settings = replace(settings, model_threads=threads)
        self.settings = settings
        self.worker = f"{socket.gethostname()}:{os.getpid()}"
        self.model = create_model(model_name, settings)
        self.model.load()  # from the weights installed on this node; raises if they are missing
        log.info("model %s loaded in Ray actor %s", model_name, self.worker)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        out = []
        for i in range(len(batch["key"])):  # bytes from the driver, or (shared) the path only
            data = batch["data"][i] if "data" in batch else None
            outcome = self._one(str(batch["path"][i]), str(batch["hash"][i]), data,
                                str(batch["note"][i]) if "note" in batch else "")
            out.append(pickle.dumps(outcome))
        return {"key": batch["key"], "worker": np.array([self.worker] * len(out), dtype=object),
                "outcome": np.array(out, dtype=object)}

    def _one(self, path_text: str, content_hash: str, data: bytes | None,
             note: str) -> tuple[str, Any]:
        """("ok", (faces, (w, h))), ("failed", reason) or ("skip", why): never an exception."""
        path = Path(path_text)
        if note:
            return _read_note(note)
        if data is None:
            try:
                raw = read_raw(path, max_bytes=self.settings.max_file_bytes)
            except FileNotFoundError:
                return "skip", "vanished before a worker could read it"
            except UnreadableImage as exc:
                return "failed", exc.reason
            data = raw.data
        if _hash(data) != content_hash:
            return "skip", "changed while it was being indexed"
        raw = RawFile(path=path, data=data, size=len(data), mtime=0.0, content_hash=content_hash)
        try:  # as Indexer._decode_one: the detection copy now, full resolution where a face needs
            photo = Photo(raw, max_pixels=self.settings.max_image_pixels)
            photo.detection_copy(self.settings.detect_max_side)
        except UnreadableImage as exc:
            return "failed", exc.reason
        except Exception as exc:  # one strange file must never stop a run
            return "failed", f"cannot decode image ({type(exc).__name__}: {exc})"
        try:
            faces = self.model.analyze([photo])[0]
        except UnreadableImage as exc:
            return "failed", exc.reason
        except Exception as exc:
            log.debug("model failed on %s", path, exc_info=True)
            return "failed", f"model failed on Ray worker {self.worker} " \
                             f"({type(exc).__name__}: {exc})"
        return "ok", (faces, photo.size)


def block_sizes(files: int, actors: int) -> list[int]:
    """Files per block, in dataset order: guided (see GUIDED_SHARE), at most ROWS_PER_BLOCK."""
    sizes, left = [], files
    while left:
        size = max(1, min(ROWS_PER_BLOCK, left // (GUIDED_SHARE * max(1, actors))))
        sizes.append(size)
        left -= size
    return sizes


def _hash(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=20).hexdigest()  # as imageio.read_raw


def _read_note(note: str) -> tuple[str, str]:
    kind, _, reason = note.partition(":")
    return kind, reason


def read_on_driver_node(batch: dict[str, np.ndarray], max_bytes: int) -> dict[str, np.ndarray]:
    """The "driver" read stage (a Ray task pinned to the driver's node): each file's bytes,
    or a note saying why there are none."""
    data: list[bytes] = []
    notes: list[str] = []
    for path_text in batch["path"]:
        try:
            data.append(read_raw(Path(str(path_text)), max_bytes=max_bytes).data)
            notes.append("")
        except FileNotFoundError:
            data.append(b"")
            notes.append("skip:vanished before it could be sent to a worker")
        except UnreadableImage as exc:
            data.append(b"")
            notes.append(f"failed:{exc.reason}")
    return {**batch, "data": np.array(data, dtype=object), "note": np.array(notes, dtype=object)}


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
        ray, o = self._ray, self.options
        pending: dict[int, RawFile] = {}
        rows = []
        held: list[bytes] | None = []  # the bytes, while they fit in INLINE_BYTES
        total = 0
        for key, raw in enumerate(raws):  # the driver has planned every file before Ray starts
            pending[key] = replace(raw, data=b"")  # keep the facts, not the bytes
            rows.append({"key": key, "path": str(raw.path), "hash": raw.content_hash})
            total += len(raw.data)
            if held is not None and total <= INLINE_BYTES:
                held.append(raw.data)
            else:
                held = None
        if not rows:
            return
        self.start()
        actors = self.actors()
        read = o.read
        inline = read == "driver" and held is not None
        if inline:
            for row, data in zip(rows, held or [], strict=True):
                row["data"] = data
        held = None
        ds = ray.data.from_arrow(_blocks(rows, block_sizes(len(rows), actors)))
        if read == "driver" and not inline:
            from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

            here = ray.get_runtime_context().get_node_id()
            ds = ds.map_batches(
                read_on_driver_node, fn_kwargs={"max_bytes": self.settings.max_file_bytes},
                batch_size=None, num_cpus=0, compute=ray.data.TaskPoolStrategy(size=2),
                scheduling_strategy=NodeAffinitySchedulingStrategy(here, soft=False))
        ds = ds.map_batches(
            FaceActor, fn_constructor_kwargs={"model_name": self.model_name,
                                              "settings": self.settings,
                                              "threads": max(1, int(o.cpus_per_actor))},
            batch_size=1, compute=ray.data.ActorPoolStrategy(size=actors),
            num_cpus=o.cpus_per_actor,
            num_gpus=o.gpus_per_actor or None)
        log.info("sending %d files (%d MB) to %d Ray actors (read: %s%s)", len(rows),
                 total // 2**20, actors, read, ", bytes in the blocks" if inline else "")
        for row in _rows(ray, ds):
            raw = pending.pop(int(row["key"]), None)
            if raw is None:  # a result Ray delivered twice (a retried task): keep the first
                continue
            self.workers.add(str(row["worker"]))
            kind, value = pickle.loads(row["outcome"])
            if kind == "ok":
                yield raw, value
            elif kind == "failed":
                yield raw, (UnreadableImage(raw.path, value), None)
            else:
                log.warning("skipping %s: %s; the next run indexes it", raw.path, value)
        if pending:
            log.warning("%d files got no result from Ray; the next run indexes them",
                        len(pending))
        log.info("Ray actors that returned results: %s", ", ".join(sorted(self.workers)))


def _blocks(rows: list[dict[str, Any]], sizes: list[int]) -> list[Any]:
    """The rows as Arrow tables of these sizes (one Ray Data block each)."""
    import pyarrow as pa  # (Ray Data's own dependency)

    tables, start = [], 0
    for size in sizes:
        part = rows[start:start + size]
        start += size
        columns = {"key": pa.array([r["key"] for r in part], pa.int64()),
                   "path": pa.array([r["path"] for r in part], pa.string()),
                   "hash": pa.array([r["hash"] for r in part], pa.string())}
        if "data" in part[0]:
            columns["data"] = pa.array([r["data"] for r in part], pa.large_binary())
        tables.append(pa.table(columns))
    return tables


def _rows(ray: Any, ds: Any) -> Iterator[dict[str, Any]]:
    """The dataset's rows as they are ready; a failure of Ray itself is one FaceidxError (what
    was committed before it stays; the next run does the rest)."""
    try:
        yield from ds.iter_rows()
    except ray.exceptions.RayError as exc:
        first = next((line for line in str(exc).splitlines() if line.strip()), type(exc).__name__)
        raise FaceidxError(f"Ray failed: {first}") from exc


@contextmanager
def ray_analyzer(model_name: str, settings: Settings, options: RayOptions
                 ) -> Iterator[RayAnalyzer]:
    """A RayAnalyzer for one run; a Ray instance it started is shut down afterwards."""
    analyzer = RayAnalyzer(model_name, settings, options)
    try:
        yield analyzer
    finally:
        analyzer.close()
