"""Detection and embedding in worker processes, so ingest uses every core.

dlib's descriptor runs on one core and holds the GIL, so threads do not help; each worker
process loads its own copy of the model once and then decodes, detects and embeds the files it
is sent (only a file's bytes cross the process boundary, never decoded pixels).
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

import numpy as np
import numpy.typing as npt

from .errors import UnreadableImage
from .imageio import RawFile, decode_raw
from .models import FaceModel, create_model
from .settings import Settings
from .types import FaceResult

log = logging.getLogger(__name__)

Analysis = tuple[list[FaceResult] | UnreadableImage, tuple[int, int] | None]
"""The faces of one file (or why it could not be read) and its upright (width, height)."""

# The model of *this worker process*: set once by the pool's initializer, never in the parent.
_worker_model: FaceModel | None = None
_worker_settings: Settings | None = None


def decode_safely(raw: RawFile, settings: Settings) -> npt.NDArray[np.uint8] | UnreadableImage:
    """The upright RGB pixels of a file, or why it cannot be used (never an exception)."""
    try:
        return decode_raw(raw, max_pixels=settings.max_image_pixels)
    except UnreadableImage as exc:
        return exc
    except Exception as exc:  # one strange file must never stop a run
        log.debug("unexpected error decoding %s", raw.path, exc_info=True)
        return UnreadableImage(raw.path, f"cannot decode image ({type(exc).__name__}: {exc})")


def analyze_file(model: FaceModel, settings: Settings, raw: RawFile) -> Analysis:
    """Decode one file and find its faces; a file that cannot be decoded is an answer too."""
    rgb = decode_safely(raw, settings)
    if isinstance(rgb, UnreadableImage):
        return rgb, None
    return model.analyze([rgb])[0], (int(rgb.shape[1]), int(rgb.shape[0]))


def _exit_with_parent(parent: int) -> None:
    """A worker whose parent was killed (even with SIGKILL) must not live on as an orphan."""
    while True:
        time.sleep(1.0)
        if os.getppid() != parent:
            os._exit(0)


def _init_worker(model_name: str, settings: Settings) -> None:
    global _worker_model, _worker_settings
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when to stop
    threading.Thread(target=_exit_with_parent, args=(os.getppid(),), daemon=True,
                     name="faceidx-parent-watch").start()
    _worker_settings = settings
    _worker_model = create_model(model_name, settings)
    _worker_model.load()


def _analyze_in_worker(raw: RawFile) -> Analysis:
    assert _worker_model is not None and _worker_settings is not None
    return analyze_file(_worker_model, _worker_settings, raw)


def default_workers(model_name: str) -> int:
    """dlib: one process per core (up to 8); facenet: one (torch uses every core itself)."""
    if model_name != "dlib":
        return 1
    return max(1, min(8, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                      else (os.cpu_count() or 1)))


class WorkerPool:
    """A pool of processes, each with its own model, analysing files in order."""

    def __init__(self, model_name: str, settings: Settings, workers: int) -> None:
        self._args = (model_name, settings)
        self.workers = workers
        self._pool: ProcessPoolExecutor | None = None

    def _executor(self) -> ProcessPoolExecutor:
        if self._pool is None:
            log.info("starting %d model worker processes", self.workers)
            self._pool = ProcessPoolExecutor(
                max_workers=self.workers, mp_context=multiprocessing.get_context("spawn"),
                initializer=_init_worker, initargs=self._args)
        return self._pool

    def analyze(self, raws: list[RawFile]) -> list[Analysis] | None:
        """Results in the order of `raws`, or None when a worker died (the caller falls back)."""
        try:
            return list(self._executor().map(_analyze_in_worker, raws))
        except BrokenProcessPool:
            log.warning("a model worker process died; analysing this batch in the main process")
            self.close()
            return None

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
