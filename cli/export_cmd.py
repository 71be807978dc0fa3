"""The `export` command: CSVs, per-cluster folders with grids, plots and metrics.json."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from cli.common import BarProgress, HomeOption, JsonOption, echo_json, handle_errors, load_settings


class Link(StrEnum):
    symlink = "symlink"
    hardlink = "hardlink"
    copy = "copy"


def register(app: typer.Typer) -> None:
    """Add the `export` command to `app`."""
    app.command("export")(export)


@handle_errors
def export(
    out: Annotated[Path, typer.Argument(metavar="OUT", help="Folder to write (new or empty).")],
    link: Annotated[Link, typer.Option("--link", help="How cluster folders hold the photos.")]
    = Link.symlink,
    crops: Annotated[bool, typer.Option("--crops", help="Also write every face crop "
                                        "(crops/face_<id>.jpg).")] = False,
    force: Annotated[bool, typer.Option("--force", help="OUT is not empty: replace what an "
                                        "earlier export wrote there.")] = False,
    home: HomeOption = None,
    json_out: JsonOption = False,
) -> None:
    """Write CSVs, a folder per cluster (photo links and a face grid), plots and metrics."""
    from dataclasses import asdict

    from indexer.export import ExportOptions, LinkMode, export_index

    settings = load_settings(home)
    options = ExportOptions(link=LinkMode(link.value), crops=crops, force=force)
    with BarProgress() as bar:
        report = export_index(settings, out.expanduser().absolute(), options, bar)
    if json_out:
        echo_json(asdict(report))
        return
    typer.echo(f"exported {report.faces} faces from {report.images_with_faces} photos: "
               f"{report.clusters} clusters, {report.outliers} outliers -> {report.out} "
               f"({report.seconds:.1f} s)")
    typer.echo(f"{report.folders} folders, {report.links} photo {link.value}s"
               + (f", {report.crops} face crops" if crops else "")
               + f"; files: {', '.join(report.files)}")
    typer.echo(f"grids: {report.grid_faces} faces ({report.cells_cached} from the crop cache, "
               f"{report.cells_made} cropped now, {report.placeholder_cells} without a photo: "
               "placeholder cells)")
