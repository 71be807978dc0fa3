"""The indexing pipeline: scan, read and hash, decode, detect and embed, store (and assign).

`Indexer(store, model, settings)` receives its dependencies. `index(roots)` brings the catalog in
line with folders on disk; `process(paths)` does the same for a list of files (the watch daemon
uses it). Work is committed one batch at a time, so a run killed at any point leaves a
consistent index and the next run completes the rest without duplicating faces.
"""

from __future__ import annotations

import itertools
import logging
import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import duckdb
import numpy as np

from .errors import FaceidxError, UnreadableImage
from .imageio import Photo, RawFile, is_image_path, read_raw
from .models import FaceModel
from .settings import Settings
from .store import NewImage, Store
from .types import FaceResult, ImageRecord, IndexSummary

log = logging.getLogger(__name__)


class Progress(Protocol):
    def start(self, total: int, description: str) -> None: ...

    def advance(self, n: int = 1) -> None: ...


class _NoProgress:
    def start(self, total: int, description: str) -> None:
        pass

    def advance(self, n: int = 1) -> None:
        pass


Analysis = tuple[list[FaceResult] | UnreadableImage, tuple[int, int] | None]
"""The faces of one file (or why it could not be read) and its upright (width, height)."""

FacesAdded = Callable[[duckdb.DuckDBPyConnection, list[int], np.ndarray], None]
"""Called inside the batch's transaction with new face ids and their vectors (assignment)."""

Analyzer = Callable[[Iterable[RawFile]], Iterator[tuple[RawFile, Analysis]]]
"""Turns the files that need the model into analyses. It pulls files lazily and yields each one
back with its analysis as soon as it is ready, in any order; the pipeline commits what it yields
in batches. The default runs `Indexer.model` here; indexer.distributed runs it on Ray."""


@dataclass(frozen=True)
class DiskFile:
    path: Path
    size: int
    mtime: float


def scan(roots: Sequence[Path], *, skip: Sequence[Path] = ()) -> dict[str, DiskFile]:
    """Every image file under `roots` (recursively; hidden folders and `skip` left out)."""
    skip_set = {str(s) for s in skip}
    found: dict[str, DiskFile] = {}
    for root in roots:
        if root.is_file():
            if is_image_path(root):
                st = root.stat()
                found[str(root)] = DiskFile(root, st.st_size, st.st_mtime)
            continue
        for dirpath, dirnames, filenames in os.walk(root, onerror=_log_walk_error):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith(".")
                                 and os.path.join(dirpath, d) not in skip_set)
            for name in sorted(filenames):
                path = Path(dirpath, name)
                if not is_image_path(path):
                    continue
                try:
                    st = path.stat()
                except OSError as exc:
                    log.warning("skipping %s: cannot stat (%s)", path, exc.strerror or exc)
                    continue
                found[str(path)] = DiskFile(path, st.st_size, st.st_mtime)
    return found


def _log_walk_error(exc: OSError) -> None:
    log.warning("skipping %s: cannot list folder (%s)", exc.filename, exc.strerror or exc)


def resolve_roots(paths: Iterable[Path | str]) -> list[Path]:
    roots = []
    for p in paths:
        path = Path(p).expanduser()
        if not path.exists():
            raise FaceidxError(f"{path}: no such file or folder")
        roots.append(path.resolve())
    return roots


@dataclass
class _Run:
    """What one `process` call tracks across batches."""

    in_flight: set[str] = field(default_factory=set)
    """Content hashes of files handed to the analyzer whose results are not committed yet."""
    deferred: list[Path] = field(default_factory=list)
    """Files with the same bytes as one in flight: indexed (as copies) once it is committed."""


class _AtMost:
    """Files for the analyzer, with a hint at most how many (`operator.length_hint`): Ray sizes
    its dataset from it before the driver has hashed them all."""

    def __init__(self, files: Iterator[RawFile], most: int) -> None:
        self._files, self._most = files, most

    def __iter__(self) -> Iterator[RawFile]:
        return self._files

    def __length_hint__(self) -> int:
        return self._most


class Indexer:
    """Brings the catalog in line with photos on disk, one committed batch at a time."""

    def __init__(self, store: Store, model: FaceModel, settings: Settings, *,
                 on_faces_added: FacesAdded | None = None,
                 analyzer: Analyzer | None = None) -> None:
        self.store = store
        self.model = model
        self.settings = settings
        self.on_faces_added = on_faces_added
        self.analyzer: Analyzer = analyzer or self._analyze_batches
        self._pool = ThreadPoolExecutor(max_workers=max(1, settings.decode_workers),
                                        thread_name_prefix="faceidx-read")

    def close(self) -> None:
        self._pool.shutdown(wait=True)

    def __enter__(self) -> Indexer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ whole folders
    def index(self, roots: Sequence[Path], progress: Progress | None = None) -> IndexSummary:
        """Scan `roots` and index what is new or changed; forget what is gone."""
        progress = progress or _NoProgress()
        roots = resolve_roots(roots)
        disk = scan(roots, skip=[self.settings.home.resolve()])
        known = self.store.images_under(roots)
        summary = IndexSummary()
        todo = []
        for key, f in disk.items():
            rec = known.get(key)
            if rec is not None and rec.size == f.size and rec.mtime == f.mtime:
                summary.unchanged += 1
            else:
                todo.append(f.path)
        log.info("%d files under %s: %d unchanged, %d to look at", len(disk),
                 ", ".join(map(str, roots)), summary.unchanged, len(todo))
        progress.start(len(todo), "indexing")
        self.process(todo, summary, progress, known=known)
        gone = [p for p in known if p not in disk]
        if gone:
            self.remove(gone, summary)
        return summary

    # ------------------------------------------------------------------ files
    def remove(self, paths: Sequence[str | Path], summary: IndexSummary | None = None) -> int:
        """Forget images at `paths` (gone from disk); returns the number of faces removed."""
        summary = summary if summary is not None else IndexSummary()
        wanted = [str(p) for p in paths]
        with self.store.transaction() as con:
            ids = self.store.image_ids_at(con, wanted)
            removed = self.store.remove_images(con, list(ids.values()))
        summary.removed += len(ids)
        summary.faces_removed += removed
        return removed

    def process(self, paths: Sequence[Path], summary: IndexSummary | None = None,
                progress: Progress | None = None, *,
                known: dict[str, ImageRecord] | None = None) -> IndexSummary:
        """Index these files (new, changed, moved or copied), one committed batch at a time.

        Touches, moves, copies and unreadable files are committed as each batch is read; the
        files that need the model go to `self.analyzer`, and its results are committed in
        batches as they arrive.
        """
        summary = summary if summary is not None else IndexSummary()
        progress = progress or _NoProgress()
        size = max(1, self.settings.batch_size)
        chunks = [list(paths[i:i + size]) for i in range(0, len(paths), size)]
        run = _Run()

        def needing_model() -> Iterator[RawFile]:
            for chunk, raws in self._read_ahead(chunks):
                waiting = len(run.deferred)
                embed = self._plan_chunk(chunk, raws, summary, known, run)
                progress.advance(len(chunk) - len(embed) - (len(run.deferred) - waiting))
                yield from embed

        batch: list[tuple[RawFile, Analysis]] = []
        for result in self.analyzer(_AtMost(needing_model(), len(paths))):
            batch.append(result)
            if len(batch) >= size:
                self._commit_results(batch, summary, run)
                progress.advance(len(batch))
                batch = []
        if batch:
            self._commit_results(batch, summary, run)
            progress.advance(len(batch))
        if run.in_flight:
            log.warning("%d files got no result from the model; the next run indexes them",
                        len(run.in_flight))
        if run.deferred:  # same bytes as a file embedded above: now they are copies of it
            self.process(run.deferred, summary, progress)
        return summary

    def _read_ahead(self, chunks: list[list[Path]]
                    ) -> Iterator[tuple[list[Path], list[RawFile | UnreadableImage | None]]]:
        """Read and hash the next batch on worker threads while this one is embedded."""
        def submit(chunk: list[Path]) -> list[Future[RawFile | UnreadableImage | None]]:
            return [self._pool.submit(self._read_one, p) for p in chunk]

        pending = submit(chunks[0]) if chunks else []
        for i, chunk in enumerate(chunks):
            current = pending
            pending = submit(chunks[i + 1]) if i + 1 < len(chunks) else []
            yield chunk, [f.result() for f in current]

    def _read_one(self, path: Path) -> RawFile | UnreadableImage | None:
        try:
            return read_raw(path, max_bytes=self.settings.max_file_bytes)
        except FileNotFoundError:
            log.debug("%s vanished before it could be read", path)
            return None
        except UnreadableImage as exc:
            return exc

    def _analyze_batches(self, raws: Iterable[RawFile]) -> Iterator[tuple[RawFile, Analysis]]:
        """The local analyzer. A model in worker processes gets the files' bytes as a stream
        (the workers decode). Any other model gets `batch_size` files at a time on a model
        thread, their detection copies decoded on the read threads, with the next batch
        decoding while this one is analysed: reads, decodes, the model and the store's commits
        overlap instead of waiting on each other."""
        stream = getattr(self.model, "analyze_stream", None)
        if stream is not None:
            for raw, (outcome, size) in stream(raws, max_pixels=self.settings.max_image_pixels,
                                               detect_max_side=self.settings.detect_max_side,
                                               ahead=self.settings.batch_size):
                yield raw, ((UnreadableImage(raw.path, outcome), None)
                            if isinstance(outcome, str) else (outcome, size))
            return
        size = max(1, self.settings.batch_size)
        in_flight: deque[tuple[list[RawFile], Future[list[Analysis]]]] = deque()
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="faceidx-model") as model:
            batch: list[RawFile] = []
            for raw in itertools.chain(raws, [None]):
                if raw is not None:
                    batch.append(raw)
                if batch and (len(batch) >= size or raw is None):
                    decoding = [self._pool.submit(self._decode_one, r) for r in batch]
                    in_flight.append((batch, model.submit(self._analyze, decoding)))
                    batch = []
                while in_flight and (len(in_flight) > 1 or raw is None):
                    done, future = in_flight.popleft()
                    yield from zip(done, future.result(), strict=True)

    def _analyze(self, decoding: list[Future[Photo | UnreadableImage]]) -> list[Analysis]:
        """Detect and embed a batch at once, once its detection copies are decoded."""
        decoded = [f.result() for f in decoding]
        images = [d for d in decoded if not isinstance(d, UnreadableImage)]
        found = iter(self.model.analyze(images) if images else [])
        return [(d, None) if isinstance(d, UnreadableImage) else (next(found), d.size)
                for d in decoded]

    def _decode_one(self, raw: RawFile) -> Photo | UnreadableImage:
        """The photo with its detection copy decoded (JPEGs at reduced size; the model decodes
        more only where a face needs it), or why it cannot be used (never an exception)."""
        try:
            photo = Photo(raw, max_pixels=self.settings.max_image_pixels)
            photo.detection_copy(self.settings.detect_max_side)
            return photo
        except UnreadableImage as exc:
            return exc
        except Exception as exc:  # one strange file must never stop a run
            log.debug("unexpected error decoding %s", raw.path, exc_info=True)
            return UnreadableImage(raw.path, f"cannot decode image ({type(exc).__name__}: {exc})")

    def _plan_chunk(self, chunk: list[Path], raws: list[RawFile | UnreadableImage | None],
                    summary: IndexSummary, known: dict[str, ImageRecord] | None,
                    run: _Run) -> list[RawFile]:
        """Commit what needs no model (touches, moves, copies, unreadable files); return the
        files that do."""
        store = self.store
        present = [r for r in raws if isinstance(r, RawFile)]
        at_path = known if known is not None else store.images_at([str(r.path) for r in present])
        by_hash = store.images_by_hash([r.content_hash for r in present])
        to_embed: list[RawFile] = []
        moves: list[tuple[RawFile, ImageRecord]] = []
        copies: list[tuple[RawFile, ImageRecord]] = []
        touches: list[tuple[RawFile, ImageRecord]] = []
        claimed: set[int] = set()
        for raw in present:
            rec = at_path.get(str(raw.path))
            if rec is not None and rec.status == "ok" and rec.content_hash == raw.content_hash:
                touches.append((raw, rec))  # same bytes, new mtime
                continue
            sources = [s for s in by_hash.get(raw.content_hash, []) if s.path != str(raw.path)]
            gone = [s for s in sources if s.image_id not in claimed and not Path(s.path).exists()]
            if gone:
                moves.append((raw, gone[0]))
                claimed.add(gone[0].image_id)
            elif sources:
                copies.append((raw, sources[0]))
            elif raw.content_hash in run.in_flight:
                run.deferred.append(raw.path)  # a copy of a file still with the model
            else:
                to_embed.append(raw)
                run.in_flight.add(raw.content_hash)
        failed_reads = [(p, r) for p, r in zip(chunk, raws, strict=True)
                        if isinstance(r, UnreadableImage)]
        if not (touches or moves or copies or failed_reads):
            return to_embed

        with store.transaction() as con:
            for raw, rec in touches:
                store.touch_image(con, rec.image_id, size=raw.size, mtime=raw.mtime)
                summary.unchanged += 1
            for raw, source in moves:
                log.info("moved: %s -> %s", source.path, raw.path)
                store.move_image(con, source.image_id, str(raw.path), size=raw.size,
                                 mtime=raw.mtime)
                summary.moved += 1
            for raw, source in copies:
                image_id = self._replace_image(con, raw, status="ok")
                ids = store.copy_faces(con, source.image_id, image_id)
                summary.copied += 1
                summary.faces_added += len(ids)
            for path, err in failed_reads:
                assert isinstance(err, UnreadableImage)
                try:
                    st = path.stat()
                except OSError:
                    continue
                self._record_failure(con, path, st.st_size, st.st_mtime, None, err, summary)
        log.debug("committed %d files that need no model", len(chunk) - len(to_embed))
        return to_embed

    def _commit_results(self, results: list[tuple[RawFile, Analysis]], summary: IndexSummary,
                        run: _Run) -> None:
        """Write the model's results for a batch of files in one transaction."""
        store = self.store
        with store.transaction() as con:
            # New paths go in with one bulk insert, their faces with another; a path the
            # catalog holds already (changed content) has its row replaced.
            held = store.image_ids_at(con, [str(raw.path) for raw, _ in results])
            per_image: list[tuple[int, list[FaceResult]]] = []
            fresh: list[tuple[NewImage, list[FaceResult]]] = []
            for raw, (outcome, size) in results:
                run.in_flight.discard(raw.content_hash)
                if isinstance(outcome, UnreadableImage):
                    self._record_failure(con, raw.path, raw.size, raw.mtime, raw.content_hash,
                                         outcome, summary)
                    continue
                assert size is not None
                if str(raw.path) in held:
                    image_id = self._replace_image(con, raw, status="ok", width=size[0],
                                                   height=size[1])
                    per_image.append((image_id, outcome))
                    summary.changed += 1
                else:
                    fresh.append((NewImage(path=str(raw.path), size=raw.size, mtime=raw.mtime,
                                           content_hash=raw.content_hash, status="ok",
                                           width=size[0], height=size[1]), outcome))
                    summary.new += 1
            fresh_ids = store.add_images(con, [row for row, _ in fresh])
            per_image += [(image_id, faces) for image_id, (_, faces)
                          in zip(fresh_ids, fresh, strict=True)]
            new_ids = store.add_faces_many(con, per_image)
            new_vectors = [f.embedding for _, faces in per_image for f in faces]
            summary.faces_added += len(new_ids)
            if new_ids and self.on_faces_added is not None:
                self.on_faces_added(con, new_ids, np.stack(new_vectors))
        log.debug("committed a batch of %d files (%d new faces)", len(results), len(new_ids))

    def _replace_image(self, con: duckdb.DuckDBPyConnection, raw: RawFile, *, status: str,
                       width: int | None = None, height: int | None = None) -> int:
        """Upsert the image row for raw.path (the store drops faces of older content)."""
        return self.store.upsert_image(con, path=str(raw.path), size=raw.size, mtime=raw.mtime,
                                       content_hash=raw.content_hash, status=status,
                                       width=width, height=height)

    def _record_failure(self, con: duckdb.DuckDBPyConnection, path: Path, size: int,
                        mtime: float, content_hash: str | None, err: UnreadableImage,
                        summary: IndexSummary) -> None:
        log.warning("skipping %s: %s", path, err.reason)
        self.store.upsert_image(con, path=str(path), size=size, mtime=mtime,
                                content_hash=content_hash, status="failed", error=err.reason)
        summary.failed += 1
        summary.failures.append((str(path), err.reason))
