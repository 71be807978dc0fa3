"""A face model spread over worker processes, so ingest uses every core.

dlib's descriptor runs on one core and holds the GIL, so threads do not help. `ParallelModel`
is a FaceModel like any other: each worker process loads its own copy of the model once, and
`analyze` sends it one decoded photo at a time, in order. `analyze_stream` is what the pipeline
uses: it sends each file's bytes (the worker decodes them, so decoding runs on every core too)
and keeps a few photos in flight, so the workers never wait for a batch, the store or the reads.
"""

from __future__ import annotations

import itertools
import logging
import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import replace

from .errors import UnreadableImage
from .imageio import Photo, RawFile
from .models import FaceModel, create_model
from .models.base import Image
from .settings import Settings
from .types import FaceResult, ModelInfo

log = logging.getLogger(__name__)

RawAnalysis = tuple[list[FaceResult] | str, tuple[int, int] | None]
"""The faces of one file and its upright (width, height), or why it cannot be used."""

# The model of *this worker process*: set once by the pool's initializer, never in the parent.
_worker_model: FaceModel | None = None


def _exit_with_parent(parent: int) -> None:
    """A worker whose parent was killed (even with SIGKILL) must not live on as an orphan."""
    while True:
        time.sleep(1.0)
        if os.getppid() != parent:
            os._exit(0)


def _init_worker(model_name: str, settings: Settings) -> None:
    global _worker_model
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when to stop
    threading.Thread(target=_exit_with_parent, args=(os.getppid(),), daemon=True,
                     name="faceidx-parent-watch").start()
    if settings.model_threads is None:  # the processes share the cores: one thread each
        settings = replace(settings, model_threads=1)
    _worker_model = create_model(model_name, settings)
    _worker_model.load()


def _ready() -> int:
    time.sleep(0.2)  # hold this worker, so the next warm-up task starts (and loads) another
    return os.getpid()


def _analyze_in_worker(image: Image) -> list[FaceResult]:
    assert _worker_model is not None
    return _worker_model.analyze([image])[0]


def analyze_raw(model: FaceModel, raw: RawFile, *, max_pixels: int,
                detect_max_side: int) -> RawAnalysis:
    """Decode one file's detection copy (full resolution only where a face needs it) and find
    its faces; a file that cannot be used gives the reason, never an exception."""
    try:
        photo = Photo(raw, max_pixels=max_pixels)
        photo.detection_copy(detect_max_side)
    except UnreadableImage as exc:
        return exc.reason, None
    except Exception as exc:  # one strange file must never stop a run
        log.debug("unexpected error decoding %s", raw.path, exc_info=True)
        return f"cannot decode image ({type(exc).__name__}: {exc})", None
    return model.analyze([photo])[0], photo.size


def _analyze_raw_in_worker(raw: RawFile, max_pixels: int, detect_max_side: int) -> RawAnalysis:
    assert _worker_model is not None
    return analyze_raw(_worker_model, raw, max_pixels=max_pixels,
                       detect_max_side=detect_max_side)


def default_workers(model_name: str) -> int:
    """dlib and sface: one process per core (up to 8); facenet: one (torch uses every core
    itself). sface runs one OpenCV thread per process: OpenCV's threads barely help its small
    networks (SFace on a 112x112 crop: as slow with 2 threads as with 1), processes do (see
    scripts/bench_ingest.py --workers and docs/models.md, "Ingest speed")."""
    if model_name == "facenet":
        return 1
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") \
        else (os.cpu_count() or 1)
    return max(1, min(8, cores))


class ParallelModel:
    """`workers` processes, each with its own copy of the named model."""

    def __init__(self, model_name: str, settings: Settings, workers: int) -> None:
        self._local = create_model(model_name, settings)
        self._args = (model_name, settings)
        self.workers = workers
        self._pool: ProcessPoolExecutor | None = None

    @property
    def info(self) -> ModelInfo:
        return self._local.info

    def load(self) -> None:
        """Load (and so check) the weights here; workers load theirs when first needed."""
        self._local.load()

    def start(self) -> None:
        """Start the worker processes now and wait until each has loaded its model (else the
        first photos that need them do)."""
        pool = self._executor()
        for future in [pool.submit(_ready) for _ in range(self.workers)]:
            future.result()

    def _executor(self) -> ProcessPoolExecutor:
        if self._pool is None:
            log.info("starting %d model worker processes", self.workers)
            self._pool = ProcessPoolExecutor(
                max_workers=self.workers, mp_context=multiprocessing.get_context("spawn"),
                initializer=_init_worker, initargs=self._args)
        return self._pool

    def analyze(self, images: Sequence[Image]) -> list[list[FaceResult]]:
        if len(images) < 2:
            return self._local.analyze(images)
        try:
            return list(self._executor().map(_analyze_in_worker, images))
        except BrokenProcessPool:
            log.warning("a model worker process died; analysing this batch in the main process")
            self.close()
            return self._local.analyze(images)

    def analyze_stream(self, raws: Iterable[RawFile], *, max_pixels: int, detect_max_side: int,
                       ahead: int = 0) -> Iterator[tuple[RawFile, RawAnalysis]]:
        """Each file with its analysis, as soon as a worker has it (in any order). Files are
        pulled from `raws` lazily, keeping two per worker in flight, plus `ahead` more (the
        pipeline passes its batch size, so the workers stay busy while it commits a batch)."""
        raws = iter(raws)
        window = 2 * self.workers + max(0, ahead)
        if self._pool is None:  # one file alone (a watched folder's usual event): no processes
            first = list(itertools.islice(raws, 2))
            if len(first) < 2:
                for raw in first:
                    yield raw, analyze_raw(self._local, raw, max_pixels=max_pixels,
                                           detect_max_side=detect_max_side)
                return
            raws = itertools.chain(first, raws)
        pending: dict[Future[RawAnalysis], RawFile] = {}
        try:
            while True:
                pool = self._executor()
                while len(pending) < window:
                    raw = next(raws, None)
                    if raw is None:
                        break
                    pending[pool.submit(_analyze_raw_in_worker, raw, max_pixels,
                                        detect_max_side)] = raw
                if not pending:
                    return
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                results = [(pending[f], f.result()) for f in done]
                for f in done:
                    del pending[f]
                yield from results
        except BrokenProcessPool:
            log.warning("a model worker process died; analysing the rest in the main process")
            self.close()
            for raw in [*pending.values(), *raws]:
                yield raw, analyze_raw(self._local, raw, max_pixels=max_pixels,
                                       detect_max_side=detect_max_side)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
