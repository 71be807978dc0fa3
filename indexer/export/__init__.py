"""`faceidx export`: the files people open and look at, written from the index on demand.

Read-only on the index: one snapshot is read and the catalog released before any photo is
touched. Reproducible: rows by face id, fixed float formats, fixed seeds for every sample.
Memory stays flat: photos are decoded one at a time (each once), thumbnails spill to a
memory-mapped scratch file.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..settings import Settings
from ..store import Store
from . import csvs, images, metrics, outdir, plots
from .data import OUTLIER, ExportData, read
from .folders import LinkMode, groups, write_folders
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
    """Most faces per grid: the medoid plus the nearest the centroid."""
    grid_columns: int = 8
    legend_clusters: int = 20
    """Clusters with their own colour in the scatter plots; the rest share a grey."""
    size_bars: int = 40
    """Clusters drawn as labelled bars in cluster_sizes.png."""
    tree_max_clusters: int = 80
    """A condensed tree with more branches is drawn as a coarser view (bigger branches only)."""
    plot_max_points: int = 20_000
    tsne_max_points: int = 5_000
    silhouette_max: int = 10_000
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
    files: list[str]
    seconds: float
    warnings: list[str] = field(default_factory=list)


def load(settings: Settings) -> ExportData:
    """The index's snapshot, read through a read-only store that is closed at once."""
    store = Store.open(settings, read_only=True)
    try:
        return read(store, settings)
    finally:
        store.close(save=False)


def export_index(settings: Settings, out: Path, options: ExportOptions | None = None,
                 progress: Progress | None = None) -> ExportReport:
    """Write every export artifact for the index in settings.home into `out`."""
    options = options or ExportOptions()
    progress = progress or NoProgress()
    start = time.perf_counter()
    data = load(settings)
    warnings = []
    if not data.clusters:
        warnings.append(f"the index has never been reclustered (no clusters): all "
                        f"{len(data.faces)} faces are exported as outliers; run "
                        "`faceidx recluster` and export again")
        log.warning(warnings[-1])
    grid_groups = groups(data, options.grid_cells)
    planned = {g.folder for g in grid_groups} | set(outdir.FIXED) - {"crops", "outliers"}
    planned -= {"condensed_tree.png"} if data.condensed_tree is None else set()
    planned |= {"crops"} if options.crops else set()
    planned |= {"outliers"} if data.outliers else set()
    outdir.prepare(out, planned, force=options.force)

    log.info("export: read %d faces in %.1f s", len(data.faces), time.perf_counter() - start)
    csvs.write_faces(data, out)
    csvs.write_clusters(data, out)
    csvs.write_people(data, out)
    plotted = plots.write_plots(
        data, out, legend_clusters=options.legend_clusters,
        plot_max_points=options.plot_max_points, tsne_max_points=options.tsne_max_points,
        size_bars=options.size_bars, tree_max_clusters=options.tree_max_clusters,
        seed=options.seed, progress=progress)
    log.info("export: CSVs and plots done at %.1f s", time.perf_counter() - start)
    metrics.write(metrics.build(data, silhouette_max=options.silhouette_max, seed=options.seed,
                                plotted=plotted), out)
    log.info("export: metrics done at %.1f s", time.perf_counter() - start)
    thumb_ids = {data.faces[r].face_id for g in grid_groups for r in g.rows.tolist()}
    with images.render(data.faces, thumb_ids, out / "crops" if options.crops else None,
                       settings, options.thumb_size, progress) as thumbs:
        counts = write_folders(data, out, grid_groups, thumbs, options.link,
                               columns=options.grid_columns, progress=progress)
        unreadable = len({f.image_id for f in data.faces if f.face_id in thumbs.missing
                          and not f.path.startswith(images.SYNTHETIC)})
        crops = thumbs.crops_written
    if counts["missing_photos"]:
        warnings.append(f"{counts['missing_photos']} photos are gone from disk and were not "
                        "linked; run `faceidx index` on their folders to bring the index in line")
        log.warning(warnings[-1])
    if counts.get("synthetic_photos"):
        log.info("%d synthetic photos have no file to link or crop (grey cells in the grids)",
                 counts["synthetic_photos"])
    if unreadable:
        warnings.append(f"{unreadable} photos could not be read; their faces show as grey "
                        "cells in the grids")
        log.warning(warnings[-1])
    files = sorted(p.name for p in out.iterdir() if p.is_file() and p.name != outdir.MANIFEST)
    return ExportReport(
        out=str(out), faces=len(data.faces), images_with_faces=data.images_with_faces,
        clusters=len(data.clusters), outliers=data.outliers, folders=counts["folders"],
        links=counts["links"], missing_photos=counts["missing_photos"],
        unreadable_photos=unreadable, crops=crops,
        files=files, seconds=round(time.perf_counter() - start, 2), warnings=warnings)


__all__: list[Any] = ["OUTLIER", "ExportOptions", "ExportReport", "LinkMode", "export_index"]
