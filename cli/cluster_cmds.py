"""Commands about identities: recluster, people, name, merge, reject, move, eval."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cli.common import (
    BarProgress,
    HomeOption,
    JsonOption,
    echo_json,
    handle_errors,
    load_settings,
)

ALGORITHM_HELP = "hdbscan (default), dbscan, chinese-whispers, kmeans or agglomerative."


def register(app: typer.Typer) -> None:
    app.command()(recluster)
    app.command()(people)
    app.command()(name)
    app.command()(merge)
    app.command()(reject)
    app.command()(move)
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


@handle_errors
def people(home: HomeOption = None, json_out: JsonOption = False) -> None:
    """List identities (clusters): id, name, size and a representative face."""
    from indexer import service

    rows = service.people(load_settings(home))
    if json_out:
        echo_json(rows)
        return
    if not rows:
        typer.echo("no clusters yet; run `faceidx recluster`", err=True)
        return
    for r in rows:
        typer.echo(f"{r['cluster_id']:>6}  {r['name'] or '-':<24} {r['size']:>6}  "
                   f"{r['medoid_path'] or ''}")


@handle_errors
def name(
    cluster: Annotated[str, typer.Argument(help="Cluster id (or a person's current name).")],
    new_name: Annotated[str, typer.Argument(metavar="NAME", help="The person's name.")],
    home: HomeOption = None,
) -> None:
    """Name the person a cluster shows; the name survives every recluster."""
    from indexer import service

    with service.open_for_corrections(load_settings(home)) as store:
        cid = store.cluster_id_for(cluster)
        store.name_cluster(cid, new_name)
    typer.echo(f"cluster {cid} is {new_name}")


@handle_errors
def merge(
    into: Annotated[str, typer.Argument(metavar="A", help="Cluster id or name to keep.")],
    other: Annotated[str, typer.Argument(metavar="B", help="Cluster id or name to merge in.")],
    home: HomeOption = None,
) -> None:
    """Merge cluster B into cluster A (they are the same person)."""
    from indexer import service

    with service.open_for_corrections(load_settings(home)) as store:
        a, b = store.cluster_id_for(into), store.cluster_id_for(other)
        if a == b:
            typer.echo(f"cluster {a} is already one cluster")
            return
        dropped = store.merge_clusters(a, b)
    typer.echo(f"merged cluster {b} into {a}" + (f" (name {dropped!r} dropped)" if dropped
                                                  else ""))


@handle_errors
def reject(
    face: Annotated[int, typer.Argument(help="Face id (see `faceidx query`).")],
    cluster: Annotated[str, typer.Argument(help="Cluster id or name it does not belong to.")],
    home: HomeOption = None,
) -> None:
    """Say a face is not this person; assignment and reclusters will keep them apart."""
    from indexer import service

    with service.open_for_corrections(load_settings(home)) as store:
        store.require_face(face)
        cid = store.cluster_id_for(cluster)
        store.reject_face(face, cid)
    typer.echo(f"face {face} is not cluster {cid}")


@handle_errors
def move(
    face: Annotated[int, typer.Argument(help="Face id (see `faceidx query`).")],
    cluster: Annotated[str, typer.Argument(help="Cluster id or name it belongs to.")],
    home: HomeOption = None,
) -> None:
    """Put a face in a person's cluster by hand; it stays there across reclusters."""
    from indexer import service

    with service.open_for_corrections(load_settings(home)) as store:
        store.require_face(face)
        cid = store.cluster_id_for(cluster)
        store.move_face(face, cid)
    typer.echo(f"face {face} is now in cluster {cid}")


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
              f"{'clusters':>8} {'identities':>10} {'outliers':>8} {'seconds':>8}")
    typer.echo(header)
    for name_, r in results.items():
        typer.echo(f"{name_:<17} {r['pairwise_f1']:>11.4f} {r['bcubed_f1']:>9.4f} "
                   f"{r['nmi']:>6.4f} {r['n_clusters']:>8} {r['n_identities']:>10} "
                   f"{r['outlier_fraction']:>8.3f} {r['seconds']:>8.2f}")
