"""The plots: PCA in 3-D, t-SNE in 2-D, cluster sizes, and HDBSCAN's condensed tree.

matplotlib is imported inside each function (Agg backend), never at import time. Every figure
has a fixed size in pixels (FIGURES), a title, axis labels and a legend a person can read.
The largest clusters get distinct colours; the rest share one grey, outliers a lighter one.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .data import OUTLIER, ExportData
from .tree import cluster_nodes, coarsen

log = logging.getLogger(__name__)

DPI = 100
FIGURES = {  # file name -> (width, height) in pixels
    "viz_3d.png": (1400, 1000),
    "viz_tsne.png": (1400, 1000),
    "cluster_sizes.png": (1400, 1000),
    "condensed_tree.png": (1400, 1000),
}
OTHER_GREY = (0.55, 0.55, 0.55, 0.6)
OUTLIER_GREY = (0.78, 0.78, 0.78, 0.6)
NO_CLUSTER_GREY = (0.3, 0.3, 0.3, 0.9)


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _figure(name: str) -> tuple[Any, Any]:
    plt = _pyplot()
    w, h = FIGURES[name]
    return plt, plt.figure(figsize=(w / DPI, h / DPI), dpi=DPI)


def _save(plt: Any, fig: Any, path: Path) -> None:
    fig.savefig(path, dpi=DPI, metadata={"Software": None})
    plt.close(fig)


@dataclass(frozen=True)
class Palette:
    """Colours: the `top` largest clusters distinct, the others grey, outliers light grey."""

    colour: dict[int, tuple[float, float, float, float]]
    label: dict[int, str]
    others: int  # clusters sharing the grey
    other_faces: int
    outlier: tuple[float, float, float, float] = OUTLIER_GREY

    @classmethod
    def of(cls, data: ExportData, top: int) -> Palette:
        colours = _distinct_colours()
        colour, label = {}, {}
        for i, c in enumerate(data.clusters[:top]):
            colour[c.cluster_id] = colours[i % len(colours)]
            label[c.cluster_id] = f"{c.label} ({c.size})"
        rest = data.clusters[top:]
        # With no clusters at all, faint outliers would be all there is: draw them darker.
        outlier = OUTLIER_GREY if data.clusters else NO_CLUSTER_GREY
        return cls(colour, label, len(rest), sum(c.size for c in rest), outlier)

    def colours_for(self, labels: np.ndarray) -> np.ndarray:
        out = np.empty((len(labels), 4))
        for i, lab in enumerate(labels.tolist()):
            out[i] = self.colour.get(lab, self.outlier if lab == OUTLIER else OTHER_GREY)
        return out

    def legend_handles(self, outliers: int, marker: str = "o") -> list[Any]:
        from matplotlib.lines import Line2D

        def handle(colour: Any, text: str) -> Any:
            return Line2D([], [], linestyle="", marker=marker, markersize=8, color=colour,
                          label=text)

        handles = [handle(self.colour[c], self.label[c]) for c in self.colour]
        if self.others:
            handles.append(handle(OTHER_GREY, f"{self.others} other clusters "
                                  f"({self.other_faces} faces)"))
        if outliers:
            handles.append(handle(self.outlier, f"outliers: no cluster ({outliers})"))
        return handles


def _distinct_colours() -> list[tuple[float, float, float, float]]:
    """20 colours, strong ones first, none of them grey (grey means "other" and "outlier")."""
    plt = _pyplot()
    tab10, tab20, tab20b = plt.get_cmap("tab10"), plt.get_cmap("tab20"), plt.get_cmap("tab20b")
    strong = [tab10(i) for i in range(10) if i != 7]
    light = [tab20(2 * i + 1) for i in range(10) if i != 7]
    return [*strong, *light, tab20b(0), tab20b(8)]


def sample_rows(n: int, cap: int, seed: int) -> np.ndarray:
    """All rows, or `cap` of them chosen with a fixed seed (sorted)."""
    if n <= cap:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=cap, replace=False))


def _draw_order(labels: np.ndarray, palette: Palette) -> np.ndarray:
    """Outliers first, then grey clusters, then coloured ones on top."""
    rank = np.where(labels == OUTLIER, 0, np.where(np.isin(labels, list(palette.colour)), 2, 1))
    return np.argsort(rank, kind="stable")


def _empty(plt: Any, fig: Any, path: Path, title: str, why: str) -> None:
    ax = fig.add_subplot()
    ax.set_title(title)
    ax.text(0.5, 0.5, why, ha="center", va="center", fontsize=14, transform=ax.transAxes)
    ax.set_axis_off()
    _save(plt, fig, path)


def _sampled_note(data: ExportData, shown: int) -> str:
    total = data.n_faces
    note = "" if shown == total else f" ({shown} of {total} faces, sampled with a fixed seed)"
    if not data.clusters:
        note += "\nno clusters yet: every face is an outlier (run `faceidx recluster`)"
    return note


def plot_pca(data: ExportData, palette: Palette, path: Path, *, cap: int, seed: int) -> int:
    """viz_3d.png: PCA of the embeddings to 3-D; returns how many faces it shows."""
    from sklearn.decomposition import PCA

    plt, fig = _figure(path.name)
    title = f"Faces in 3-D: PCA of the {data.model.dim}-d {data.model.name} embeddings, " \
            "coloured by cluster"
    n = data.n_faces
    if n < 4:
        _empty(plt, fig, path, title, f"too few faces to plot ({n})")
        return 0
    rows = sample_rows(n, cap, seed)
    pca = PCA(n_components=3, svd_solver="full")
    xyz = pca.fit_transform(data.vectors[rows].astype(np.float64))
    labels = data.labels[rows]
    order = _draw_order(labels, palette)
    ax = fig.add_axes((0.02, 0.04, 0.64, 0.86), projection="3d")
    ax.scatter(xyz[order, 0], xyz[order, 1], xyz[order, 2], c=palette.colours_for(labels[order]),
               s=14, depthshade=False, linewidths=0)
    for i, axis in enumerate("xyz"):
        getattr(ax, f"set_{axis}label")(
            f"PC{i + 1} ({100 * pca.explained_variance_ratio_[i]:.1f}% of variance)")
    fig.suptitle(title + _sampled_note(data, len(rows)), fontsize=14)
    fig.legend(handles=palette.legend_handles(data.outliers), loc="center left",
               bbox_to_anchor=(0.68, 0.5), title="cluster (faces)", fontsize=10, frameon=False)
    _save(plt, fig, path)
    return len(rows)


def plot_tsne(data: ExportData, palette: Palette, path: Path, *, cap: int, seed: int) -> int:
    """viz_tsne.png: t-SNE of the embeddings to 2-D; returns how many faces it shows."""
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE
    from threadpoolctl import threadpool_limits

    plt, fig = _figure(path.name)
    title = f"Faces in 2-D: t-SNE of the {data.model.name} embeddings, coloured by cluster"
    n = data.n_faces
    if n < 5:
        _empty(plt, fig, path, title, f"too few faces for t-SNE ({n})")
        return 0
    rows = sample_rows(n, cap, seed)
    x = data.vectors[rows].astype(np.float64)
    if x.shape[1] > 50 and len(rows) > 50:
        x = PCA(n_components=50, svd_solver="full").fit_transform(x)
    perplexity = float(min(30.0, (len(rows) - 1) / 3))
    # One thread: OpenMP's spinning threads slow t-SNE down many times over when another
    # process (an indexer, a watch daemon) keeps the other cores busy.
    with threadpool_limits(limits=1):
        xy = TSNE(n_components=2, perplexity=perplexity, init="pca", learning_rate="auto",
                  random_state=seed).fit_transform(x)
    labels = data.labels[rows]
    order = _draw_order(labels, palette)
    ax = fig.add_axes((0.06, 0.07, 0.6, 0.84))
    ax.scatter(xy[order, 0], xy[order, 1], c=palette.colours_for(labels[order]), s=16,
               linewidths=0)
    ax.set_xlabel("t-SNE dimension 1 (distances between groups are not meaningful)")
    ax.set_ylabel("t-SNE dimension 2")
    fig.suptitle(title + _sampled_note(data, len(rows)), fontsize=14)
    fig.legend(handles=palette.legend_handles(data.outliers), loc="center left",
               bbox_to_anchor=(0.68, 0.5), title="cluster (faces)", fontsize=10, frameon=False)
    _save(plt, fig, path)
    return len(rows)


def plot_sizes(data: ExportData, palette: Palette, path: Path, *, bars: int) -> None:
    """cluster_sizes.png: the largest clusters as labelled bars (and, when there are more than
    fit, how many clusters have each size)."""
    plt, fig = _figure(path.name)
    if not data.clusters:
        _empty(plt, fig, path, "Cluster sizes",
               f"no clusters yet: all {data.n_faces} faces are outliers\n"
               "(run `faceidx recluster`)")
        return
    shown = data.clusters[:bars]
    many = len(data.clusters) > bars
    ax = fig.add_axes((0.2, 0.08, 0.42 if many else 0.75, 0.84))
    names = [c.label for c in shown] + (["outliers (no cluster)"] if data.outliers else [])
    sizes = [c.size for c in shown] + ([data.outliers] if data.outliers else [])
    colours = [palette.colour.get(c.cluster_id, OTHER_GREY) for c in shown]
    colours += [OUTLIER_GREY] if data.outliers else []
    y = np.arange(len(sizes))
    ax.barh(y, sizes, color=colours, edgecolor="black", linewidth=0.4)
    ax.set_yticks(y, names, fontsize=9 if len(sizes) > 25 else 11)
    ax.invert_yaxis()
    for yi, s in zip(y, sizes, strict=True):
        ax.text(s, yi, f" {s}", va="center", fontsize=8 if len(sizes) > 25 else 10)
    ax.set_xlabel("faces")
    ax.set_xlim(0, max(sizes) * 1.12)
    ax.set_title(f"the {len(shown)} largest of {len(data.clusters)} clusters" if many
                 else f"all {len(data.clusters)} clusters")
    if many:
        hist = fig.add_axes((0.7, 0.08, 0.27, 0.84))
        all_sizes = np.asarray([c.size for c in data.clusters])
        edges = np.unique(np.round(np.geomspace(all_sizes.min(), all_sizes.max() + 1, 16)))
        hist.hist(all_sizes, bins=edges, color="tab:blue", edgecolor="black", linewidth=0.4)
        hist.set_xscale("log")
        hist.set_xlabel("cluster size (faces, log scale)")
        hist.set_ylabel("number of clusters")
        hist.set_title(f"sizes of all {len(data.clusters)} clusters")
    fig.suptitle(f"Cluster sizes: {data.n_faces} faces, {len(data.clusters)} clusters, "
                 f"{data.outliers} outliers", fontsize=14)
    _save(plt, fig, path)


def plot_condensed_tree(data: ExportData, path: Path, *, max_clusters: int) -> bool:
    """condensed_tree.png from the last HDBSCAN recluster; False when there is none."""
    if data.condensed_tree is None or len(data.condensed_tree) == 0:
        return False
    from hdbscan._hdbscan_tree import compute_stability, get_clusters
    from hdbscan.plots import CondensedTree

    tree = data.condensed_tree.copy()
    # Identical faces (a photo indexed twice) join at distance 0, i.e. lambda = inf, which
    # hdbscan's plot cannot draw: cap them just above the largest finite lambda.
    finite = np.isfinite(tree["lambda_val"])
    if not finite.all():
        top = float(tree["lambda_val"][finite].max()) if finite.any() else 1.0
        tree["lambda_val"][~finite] = top * 1.05
    params = (data.last_recluster or {}).get("params", {})
    method = str(params.get("cluster_selection_method", "eom"))
    epsilon = float(params.get("cluster_selection_epsilon") or 0.0)
    labels, _, _ = get_clusters(tree, compute_stability(tree), method, False, False, epsilon)
    labels = np.asarray(labels, dtype=np.int64)
    selected = int(labels.max()) + 1 if len(labels) else 0
    view, min_size = coarsen(tree, max_clusters)
    plt, fig = _figure(path.name)
    ax = fig.add_axes((0.08, 0.06, 0.9, 0.84))
    ct = CondensedTree(view, labels)
    ct.plot(select_clusters=False, axis=ax, colorbar=True, log_size=True)
    ax.set_ylabel("λ = 1 / distance (further down: faces closer together)")
    ax.set_xlabel(f"the {len(labels)} faces of that recluster (bar width: log of faces "
                  "still in the branch)")
    if min_size:
        title = (f"HDBSCAN condensed tree, coarse view: only branches of at least {min_size} "
                 f"faces are drawn\n(the full tree has {cluster_nodes(tree)} branches and "
                 f"{selected} selected clusters, too many to draw; {len(data.clusters)} "
                 "clusters now)")
    else:
        _circle_selected(ax, ct, tree, labels)
        title = (f"HDBSCAN condensed tree: {selected} clusters selected (red ovals, {method}), "
                 f"before faceidx's refinement\n({len(data.clusters)} clusters now)")
    fig.suptitle(title, fontsize=13)
    _save(plt, fig, path)
    return True


def _circle_selected(ax: Any, ct: Any, tree: np.ndarray, labels: np.ndarray) -> None:
    """Red ovals round the clusters HDBSCAN selected (hdbscan's own drawing of them fails
    with current matplotlib)."""
    from matplotlib.patches import Ellipse

    points = tree[tree["child_size"] == 1]
    point_labels = labels[points["child"]]
    chosen = [int(points["parent"][point_labels == k].min())
              for k in range(int(labels.max()) + 1) if (point_labels == k).any()]
    bounds = ct.get_plot_data(log_size=True)["cluster_bounds"]
    lo, hi = ax.get_ylim()
    min_height = 0.02 * abs(hi - lo)
    for c in chosen:
        left, right, bottom, top = bounds[c]
        height = max(abs(top - bottom), min_height)
        ax.add_artist(Ellipse(((left + right) / 2, (top + bottom) / 2), 2.0 * (right - left),
                              1.2 * height, facecolor="none", edgecolor="red", linewidth=1.5))


def write_plots(data: ExportData, out: Path, *, legend_clusters: int, plot_max_points: int,
                tsne_max_points: int, size_bars: int, tree_max_clusters: int,
                seed: int,
                progress: Any) -> dict[str, Any]:
    """Every plot; what each shows (for metrics.json)."""
    palette = Palette.of(data, legend_clusters)
    progress.start(4, "plotting")
    shown: dict[str, Any] = {}
    shown["viz_3d"] = plot_pca(data, palette, out / "viz_3d.png", cap=plot_max_points, seed=seed)
    progress.advance()
    shown["viz_tsne"] = plot_tsne(data, palette, out / "viz_tsne.png", cap=tsne_max_points,
                                  seed=seed)
    progress.advance()
    plot_sizes(data, palette, out / "cluster_sizes.png", bars=size_bars)
    progress.advance()
    shown["condensed_tree"] = plot_condensed_tree(data, out / "condensed_tree.png",
                                                  max_clusters=tree_max_clusters)
    progress.advance()
    return shown


__all__: Sequence[str] = ["FIGURES", "write_plots", "sample_rows"]
