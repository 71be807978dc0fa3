"""A face model spread over worker processes, so ingest uses every core.

dlib's descriptor runs on one core and holds the GIL, so threads do not help. `ParallelModel`
is a FaceModel like any other: each worker process loads its own copy of the model once, and
`analyze` sends it one decoded photo at a time, in order.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

from .models import FaceModel, create_model
from .models.base import Image
from .settings import Settings
from .types import FaceResult, ModelInfo

log = logging.getLogger(__name__)

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
    _worker_model = create_model(model_name, settings)
    _worker_model.load()


def _analyze_in_worker(image: Image) -> list[FaceResult]:
    assert _worker_model is not None
    return _worker_model.analyze([image])[0]


def default_workers(model_name: str) -> int:
    """dlib: one process per core (up to 8); facenet: one (torch uses every core itself);
    sface: one, with OpenCV's threads. Measured with scripts/bench_ingest.py --models sface
    --lfw 10 (75 photos, on a shared 2-core machine): `faceidx index` 0.64 photos/s with one
    process and OpenCV's 2 threads, 0.62 with 2 processes of one thread each (whose bare model
    loop is faster, 0.98 against 0.62, but the pipeline waits on each batch); so one process."""
    if model_name != "dlib":
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

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
