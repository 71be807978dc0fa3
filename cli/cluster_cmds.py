"""Commands about identities: recluster, the corrections (merge, reject, move, undo) and eval.
`people`, `name` and `history` are light commands (cli/light.py)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from cli.common import (
    BarProgress,
    HomeOption,
    JsonOption,
    echo_json,
    handle_errors,
    load_settings,
)
from indexer.errors import BadInput

if TYPE_CHECKING:
    from indexer.store import Change

ALGORITHM_HELP = "hdbscan (default), dbscan, chinese-whispers, kmeans or agglomerative."


def register(app: typer.Typer) -> None:
    app.command()(recluster)
    app.command()(merge)
    app.command()(reject)
    app.command()(move)
    app.command()(undo)
    app.command("eval")(eval_)


@handle_errors
def recluster(
    algorithm: Annotated[str, typer.Option("--algorithm", help=ALGORITHM_HELP)] = "hdbscan",
    min_cluster_size: Annotated[int | None, typer.Option("--min-cluster-size", min=2)] = None,
    min_samples: Annotated[int | None, typer.Option("--min-samples", min=1)] = None,
    home: HomeOption = None,
    json_out: JsonOption = False,
) -> None:
    """Re-cluster every face; names, pinned faces and rejections are kept."""
    from indexer import recluster as rc
    from indexer import service
    from indexer.clustering import ALGORITHMS
    from indexer.errors import FaceidxError

    if algorithm not in ALGORITHMS:
        raise FaceidxError(f"unknown algorithm {algorithm!r}; choose from {', '.join(ALGORITHMS)}")
    settings = load_settings(home)
    with service.open_for_corrections(settings) as store:
        params = rc.default_params(store.model.name, min_cluster_size=min_cluster_size,
                                   min_samples=min_samples)
        report = rc.recluster(store, settings, algorithm, params)
    if json_out:
        echo_json(report.to_json())
        return
    typer.echo(f"{report.faces} faces -> {report.clusters} clusters, {report.outliers} "
               f"outliers ({report.algorithm}, {report.seconds:.1f} s)")
    typer.echo(f"clusters kept {report.kept}, new {report.new}, dissolved {report.dissolved}; "
               f"faces that moved {report.faces_moved}; named people kept {report.named_kept}")


def _say(change: Change) -> None:
    typer.echo(f"{change.summary} (change {change.change_id}; `faceidx undo` takes it back)")


@handle_errors
def merge(
    into: Annotated[str, typer.Argument(metavar="A", help="Cluster id or name to keep.")],
    other: Annotated[str, typer.Argument(metavar="B", help="Cluster id or name to merge in.")],
    force: Annotated[bool, typer.Option(
        "--force", help="Merge even when one photo has a face in each.")] = False,
    home: HomeOption = None,
) -> None:
    """Merge person B into person A (they are the same person)."""
    from indexer import corrections

    settings = load_settings(home)
    a = corrections.resolve_cluster(settings, into)
    b = corrections.resolve_cluster(settings, other)
    _say(corrections.merge(settings, a, b, force=force))


@handle_errors
def reject(
    faces: Annotated[list[int], typer.Argument(
        metavar="FACE", help="Face ids (see `faceidx query` or `faceidx people`).",
        show_default=False)],
    cluster: Annotated[str, typer.Argument(metavar="CLUSTER",
                                           help="The cluster id or name they are not.")],
    home: HomeOption = None,
) -> None:
    """Say faces are not this person; assignment and reclusters will keep them apart."""
    from indexer import corrections

    settings = load_settings(home)
    _say(corrections.reject(settings, faces, corrections.resolve_cluster(settings, cluster)))


@handle_errors
def move(
    args: Annotated[list[str], typer.Argument(
        metavar="FACE... [CLUSTER]", show_default=False,
        help="Face ids (see `faceidx query`), then the cluster id or name they belong to "
             "(none with --new).")],
    new: Annotated[bool, typer.Option(
        "--new", help="Put the faces in a new person (split them off).")] = False,
    home: HomeOption = None,
) -> None:
    """Put faces in a person by hand (or a new person with --new); they stay across
    reclusters."""
    from indexer import corrections

    settings = load_settings(home)
    if new:
        change = corrections.move(settings, _face_ids(args), None)
    else:
        if len(args) < 2:
            raise BadInput("give one or more face ids, then the cluster they belong to "
                           "(or --new for a new person)")
        target = corrections.resolve_cluster(settings, args[-1])
        change = corrections.move(settings, _face_ids(args[:-1]), target)
    _say(change)


@handle_errors
def undo(home: HomeOption = None, json_out: JsonOption = False) -> None:
    """Take back the last correction (name, merge, reject, move, split, accept), even after
    a recluster."""
    from dataclasses import asdict

    from indexer import corrections

    change = corrections.undo(load_settings(home))
    if json_out:
        echo_json(asdict(change))
        return
    look = f"; see cluster {change.cluster_id}" if change.cluster_id is not None else ""
    typer.echo(f"{change.summary}{look}")


def _face_ids(values: list[str]) -> list[int]:
    bad = [v for v in values if not v.isdigit()]
    if bad or not values:
        raise BadInput(f"not a face id: {bad[0]!r}" if bad else "no face ids given")
    return [int(v) for v in values]


@handle_errors
def eval_(
    folder: Annotated[Path, typer.Argument(metavar="DIR",
                                           help="One sub-folder of photos per identity.")],
    model: Annotated[str | None, typer.Option(
        "--model", help="auto, facenet, sface or dlib.")] = None,
    algorithm: Annotated[str, typer.Option("--algorithm", help="One algorithm, or all.")]
    = "all",
    home: HomeOption = None,
    json_out: JsonOption = False,
) -> None:
    """Index DIR (one folder per identity), recluster, and score every algorithm."""
    import tempfile

    from indexer import service
    from indexer.clustering import ALGORITHMS
    from indexer.evaluate import evaluate
    from indexer.locks import IngestLock
    from indexer.pipeline import Indexer, resolve_roots

    (root,) = resolve_roots([folder])
    with tempfile.TemporaryDirectory(prefix="faceidx-eval-") as tmp:
        settings = load_settings(home if home is not None else Path(tmp), model=model)
        face_model = service.model_for_index(settings, settings.model)
        with IngestLock(settings.home, "faceidx eval"), \
                service.open_for_writing(settings, face_model) as store:
            with Indexer(store, face_model, settings) as indexer, BarProgress() as bar:
                indexer.index([root], bar)
            names = list(ALGORITHMS) if algorithm == "all" else [algorithm]
            results = evaluate(store, root, names)
    if json_out:
        echo_json({k: {m: v for m, v in r.items() if m != "params"} for k, r in results.items()})
        return
    header = (f"{'algorithm':<17} {'pairwise F1':>11} {'BCubed F1':>9} {'NMI':>6} "
              f"{'clusters':>8} {'identities':>10} {'outliers':>8} {'same-photo':>10} "
              f"{'seconds':>8}")
    typer.echo(header)
    for name_, r in results.items():
        typer.echo(f"{name_:<17} {r['pairwise_f1']:>11.4f} {r['bcubed_f1']:>9.4f} "
                   f"{r['nmi']:>6.4f} {r['n_clusters']:>8} {r['n_identities']:>10} "
                   f"{r['outlier_fraction']:>8.3f} {r['cannot_link_violations']:>10} "
                   f"{r['seconds']:>8.2f}")
    typer.echo("same-photo: faces sharing a person with another face of their photo "
               "(cannot-link violations; 0 when the constraint holds)")
