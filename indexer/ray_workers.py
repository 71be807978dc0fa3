"""What runs inside Ray for `faceidx index --ray` (distributed.py is the driver's side): the
face actors of Ray Data's pool, each holding one loaded model. The small feed actor from which
they fetch their blocks of files is in `ray_feed.py`.

Ray is never imported here at module level: the driver imports it (the optional extra `ray`)
and Ray imports this module in its worker processes.
"""

from __future__ import annotations

import logging
import os
import pickle
import socket
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from .errors import UnreadableImage
from .imageio import Photo, RawFile, hash_bytes, read_raw
from .settings import Settings

log = logging.getLogger(__name__)

STARTUP = ("process_started", "constructed", "model_loaded", "boot_cpu")
"""Result columns: when the actor's process started, its constructor began, its model loaded
(wall-clock seconds), and the CPU seconds its process had used when the constructor began (Ray's
worker boot and the Ray Data import: whether the wait before the constructor was work or
waiting)."""


class FaceActor:
    """A Ray Data actor: loads the face model once, then analyses one row at a time."""

    def __init__(self, model_name: str, settings: Settings, feed: Any, run: str,
                 threads: int = 1) -> None:
        constructed, boot_cpu = time.time(), time.process_time()
        from .models import create_model

        if settings.model_threads is None:  # as a local worker process: the CPUs it reserved
            settings = replace(settings, model_threads=threads)
        self.settings = settings
        self.feed, self.run = feed, run
        self.worker = f"{socket.gethostname()}:{os.getpid()}"
        self.model = create_model(model_name, settings)
        self.model.load()  # from the weights installed on this node; raises if they are missing
        self.startup = (_process_start(), constructed, time.time(), boot_cpu)
        log.info("model %s loaded in Ray actor %s", model_name, self.worker)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The files of the dataset's slots in `batch`, as the driver put them in the feed."""
        import ray

        keys, out = [], []
        for slot in batch["slot"]:
            # (waits until the driver puts it)
            boxed = ray.get(self.feed.get.remote(self.run, int(slot)))
            for key, path, content_hash, data in ray.get(boxed[0]) if boxed else ():
                keys.append(key)  # data: the bytes from the driver, or (shared) None
                out.append(pickle.dumps(self._one(path, content_hash, data)))
        return {"key": np.array(keys, dtype=np.int64),
                "worker": np.array([self.worker] * len(out), dtype=object),
                **{name: np.full(len(out), stamp) for name, stamp in zip(STARTUP, self.startup,
                                                                         strict=True)},
                "outcome": np.array(out, dtype=object)}

    def _one(self, path_text: str, content_hash: str, data: bytes | None) -> tuple[str, Any]:
        """("ok", (faces, (w, h))), ("failed", reason) or ("skip", why): never an exception."""
        path = Path(path_text)
        if data is None:
            try:
                raw = read_raw(path, max_bytes=self.settings.max_file_bytes)
            except FileNotFoundError:
                return "skip", "vanished before a worker could read it"
            except UnreadableImage as exc:
                return "failed", exc.reason
            data = raw.data
        if hash_bytes(data) != content_hash:
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


def _process_start() -> float:
    """When this process started (wall-clock seconds; Linux's /proc), or NaN."""
    try:
        with open("/proc/self/stat") as fh:
            ticks = int(fh.read().rsplit(")", 1)[1].split()[19])
        with open("/proc/uptime") as fh:
            uptime = float(fh.read().split()[0])
        return time.time() - uptime + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, AttributeError):
        return float("nan")
