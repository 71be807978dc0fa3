"""`faceidx export`: the files people open and look at, written from the index on demand.

Read-only on the catalog: every read happens inside one snapshot, and the catalog is released
before any photo is read. Reproducible: rows by face id, fixed float formats, fixed seeds for
every sample. Memory grows with the faces only by a few numbers per face (and the vectors):
CSV rows stream page by page, grid cells come one grid at a time from the face-crop cache,
plots and silhouette work on fixed-seed samples.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..settings import Settings
from ..store import Store
from . import csvs, folders, metrics, outdir, plots
from .data import OUTLIER, PAGE, ExportData, read
from .folders import BackgroundGrids, LinkMode, PhotoLinks, groups, write_grids
from .images import FaceSources, write_box_crops
from .progress import NoProgress, Progress

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ExportOptions:
    """How to export; the defaults are what `faceidx export` uses."""

    link: LinkMode = LinkMode.symlink
    crops: bool = False
    force: bool = False
    thumb_size: int = 112
    """Pixels per side of a grid cell."""
    grid_cells: int = 64
    """Most faces per grid: the medoid, then a spread from the nearest the centroid to the
    farthest."""
    grid_columns: int = 8
    grid_workers: int | None = None
    """Processes drawing grids; None: one per core, at most 4."""
    legend_clusters: int = 20
    """Clusters with their own colour in the scatter plots; the rest share a grey."""
    size_bars: int = 40
    """Clusters drawn as labelled bars in cluster_sizes.png."""
    tree_max_clusters: int = 80
    """A condensed tree with more branches is drawn as a coarser view (bigger branches only)."""
    plot_max_points: int = 20_000
    tsne_max_points: int = 3_000
    """t-SNE runs on at most this many faces (a uniform fixed-seed sample): its cost is fixed."""
    silhouette_max: int = 10_000
    """Silhouette (quadratic in faces) on at most this many faces, a fixed-seed sample."""
    davies_bouldin_max: int = 2_000
    """Davies-Bouldin averaged over at most this many clusters (each against all of them)."""
    seed: int = 0


@dataclass(frozen=True)
class ExportReport:
    out: str
    faces: int
    images_with_faces: int
    clusters: int
    outliers: int
    folders: int
    links: int
    missing_photos: int
    unreadable_photos: int
    crops: int
    grid_faces: int
    """Cells in all the grids: from the crop cache, made for it now, or placeholders."""
    cells_cached: int
    cells_made: int
    placeholder_cells: int
    """Faces drawn as a "no photo" cell: their photo is gone, changed, unreadable or synthetic."""
    files: list[str]
    seconds: float
    warnings: list[str] = field(default_factory=list)


def _read_and_stream(settings: Settings, out: Path, options: ExportOptions,
                     progress: Progress, warnings: list[str]) -> tuple[
                         ExportData, list[Any], PhotoLinks, FaceSources, FaceSources | None]:
    """Everything that reads the catalog, in one snapshot: the arrays, then one streaming pass
    over the face rows that writes the CSVs and the photo links and keeps the sources of the
    faces drawn later. The catalog is closed when this returns."""
    store = Store.open(settings, read_only=True)
    try:
        with store.snapshot():
            data = read(store, settings, PAGE)
            log.info("export: read %d faces", data.n_faces)
            if not data.clusters:
                warnings.append(f"the index has never been reclustered (no clusters): all "
                                f"{data.n_faces} faces are exported as outliers; run "
                                "`faceidx recluster` and export again")
                log.warning(warnings[-1])
            grid_groups = groups(data, options.grid_cells)
            planned = {g.folder for g in grid_groups} | set(outdir.FIXED) - {"crops",
                                                                                "outliers"}
            planned -= {"condensed_tree.png"} if data.condensed_tree is None else set()
            planned |= {"crops"} if options.crops else set()
            planned |= {"outliers"} if data.outliers else set()
            outdir.prepare(out, planned, force=options.force)
            links = PhotoLinks(data, out, grid_groups, options.link)
            links.make_folders()
            shown = data.face_ids[np.concatenate([g.rows for g in grid_groups])] \
                if grid_groups else np.zeros(0, dtype=np.int64)
            sources = FaceSources(shown)
            every = FaceSources(data.face_ids) if options.crops else None
            progress.start(data.n_faces, "writing CSVs and photo links")
            at = 0
            with csvs.FaceCsvs(data, out, store.landmark_values()) as face_csvs:
                for faces, hashes in store.face_pages(PAGE):
                    rows = np.arange(at, at + len(faces))
                    at += len(faces)
                    if faces[-1].face_id != data.face_ids[rows[-1]]:
                        raise RuntimeError("face rows and vectors disagree; was the snapshot "
                                           "lost?")
                    face_csvs.write(faces, rows)
                    links.add(faces, rows, data.labels)
                    sources.capture(faces, hashes)
                    if every is not None:
                        every.capture(faces, hashes)
                    progress.advance(len(faces))
    finally:
        store.close(save=False)
    csvs.write_people(data.clusters, {c.medoid_face_id: sources.path(c.medoid_face_id)
                                      for c in data.clusters}, out)
    return data, grid_groups, links, sources, every


def export_index(settings: Settings, out: Path, options: ExportOptions | None = None,
                 progress: Progress | None = None) -> ExportReport:
    """Write every export artifact for the index in settings.home into `out`."""
    options = options or ExportOptions()
    progress = progress or NoProgress()
    start = time.perf_counter()
    warnings: list[str] = []
    data, grid_groups, links, sources, every = _read_and_stream(settings, out, options,
                                                                progress, warnings)
    log.info("export: CSVs and links done at %.1f s", time.perf_counter() - start)
    workers = options.grid_workers or min(os.cpu_count() or 1, 4)
    grid_args: dict[str, Any] = {"size": options.thumb_size, "columns": options.grid_columns,
                                 "workers": workers}
    behind = None  # many grids: worker processes draw them while this process plots
    if workers > 1 and len(grid_groups) > folders.GRID_CHUNK:
        behind = BackgroundGrids(data, out, grid_groups, sources, settings, **grid_args)
    try:
        plotted = plots.write_plots(
            data, out, legend_clusters=options.legend_clusters,
            plot_max_points=options.plot_max_points, tsne_max_points=options.tsne_max_points,
            size_bars=options.size_bars, tree_max_clusters=options.tree_max_clusters,
            seed=options.seed, progress=progress)
        log.info("export: plots done at %.1f s", time.perf_counter() - start)
        metrics.write(metrics.build(data, silhouette_max=options.silhouette_max,
                                    davies_bouldin_max=options.davies_bouldin_max,
                                    seed=options.seed, plotted=plotted), out)
        log.info("export: metrics done at %.1f s", time.perf_counter() - start)
    except BaseException:
        if behind is not None:
            behind.cancel()
        raise
    cells = behind.join(progress) if behind is not None else write_grids(
        data, out, grid_groups, sources, settings, progress=progress, **grid_args)
    log.info("export: grids done at %.1f s", time.perf_counter() - start)
    crops, unreadable_photos = 0, set(cells.unreadable_photos)
    if every is not None:
        crops, unreadable = write_box_crops(every, out / "crops", settings, progress)
        unreadable_photos |= unreadable
    counts = links.counts
    if counts["missing_photos"]:
        warnings.append(f"{counts['missing_photos']} photos are gone from disk and were not "
                        "linked; run `faceidx index` on their folders to bring the index in line")
        log.warning(warnings[-1])
    if counts["synthetic_photos"]:
        log.info("%d synthetic photos have no file to link or crop (placeholder cells in the "
                 "grids)", counts["synthetic_photos"])
    if unreadable_photos:
        warnings.append(f"{len(unreadable_photos)} photos could not be read (gone, changed "
                        "since indexing, or unreadable); their faces show as placeholder cells "
                        "in the grids")
        log.warning(warnings[-1])
    files = sorted(p.name for p in out.iterdir() if p.is_file() and p.name != outdir.MANIFEST)
    return ExportReport(
        out=str(out), faces=data.n_faces, images_with_faces=data.images_with_faces,
        clusters=len(data.clusters), outliers=data.outliers, folders=len(grid_groups),
        links=counts["links"], missing_photos=counts["missing_photos"],
        unreadable_photos=len(unreadable_photos), crops=crops,
        grid_faces=sum(len(g.rows) for g in grid_groups), cells_cached=cells.cached,
        cells_made=cells.made, placeholder_cells=cells.placeholders,
        files=files, seconds=round(time.perf_counter() - start, 2), warnings=warnings)


__all__: list[Any] = ["OUTLIER", "ExportOptions", "ExportReport", "LinkMode", "export_index"]
