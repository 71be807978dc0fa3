"""`faceidx eval` on real LFW identities, and fast HDBSCAN against the library's exact one on
real dlib embeddings."""

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from indexer import settings as settings_mod
from indexer.store import Store
from tests.conftest import link_tree

ALGORITHMS = ("hdbscan", "dbscan", "chinese-whispers", "kmeans", "agglomerative")


@pytest.fixture(scope="module")
def lfw_subset(faces_dir: Path, tmp_path_factory: pytest.TempPathFactory
               ) -> tuple[Path, Path, dict]:
    """30 LFW identities with >= 4 photos (at most 6 each) plus 60 people seen once, evaluated
    once into a home of their own."""
    from typer.testing import CliRunner

    from cli.app import app

    people: dict[str, list[Path]] = {}
    with (faces_dir / "index.csv").open() as fh:
        for row in csv.DictReader(fh):
            if row["dataset"] == "lfw":
                people.setdefault(row["identity"], []).append(faces_dir / row["file"])
    several = sorted(n for n, fs in people.items() if len(fs) >= 4)[::5][:30]
    once = sorted(n for n, fs in people.items() if len(fs) == 1)[::20][:60]
    files = [f for n in several for f in sorted(people[n])[:6]] + [people[n][0] for n in once]
    root = tmp_path_factory.mktemp("lfw_eval")
    link_tree(files, root / "people", base=faces_dir / "lfw")
    result = CliRunner().invoke(app, ["eval", "--model", "dlib", "--json", "--home",
                                      str(root / "home"), str(root / "people")])
    assert result.exit_code == 0, result.stderr
    return root / "home", root / "people", json.loads(result.stdout)


def test_eval_reports_every_algorithm(lfw_subset: tuple[Path, Path, dict]) -> None:
    _, _, report = lfw_subset
    assert set(report) == set(ALGORITHMS)
    for name, scores in report.items():
        assert {"pairwise_f1", "bcubed_f1", "nmi", "n_clusters", "n_identities",
                "outlier_fraction", "seconds"} <= set(scores), name
        assert 85 <= scores["n_identities"] <= 90  # a face HOG misses takes its person away
        assert 0.0 <= scores["bcubed_f1"] <= 1.0


def test_default_recluster_is_at_least_as_good_as_the_others(lfw_subset: tuple[Path, Path, dict]
                                                       ) -> None:
    # On all of LFW (7,143 labelled faces) the default beats every other algorithm by at least
    # 0.006 BCubed F1 (the figures are in the README). On this 240-face sample, one face more or
    # less moves a score by ~0.004, so the ranking is held to that noise.
    _, _, report = lfw_subset
    best_other = max(report[a]["bcubed_f1"] for a in ALGORITHMS if a != "hdbscan")
    assert report["hdbscan"]["bcubed_f1"] >= 0.95, report["hdbscan"]
    assert report["hdbscan"]["bcubed_f1"] >= best_other - 0.01, report


def test_eval_leaves_the_home_clustered(lfw_subset: tuple[Path, Path, dict]) -> None:
    home, _, _ = lfw_subset
    with Store.open(settings_mod.load({"home": home}), read_only=True) as store:
        counts = store.counts()
        assert counts.clusters >= 20
        assert store.get_meta("last_eval") is not None
    assert (home / "condensed_tree.npy").exists()


def test_fast_hdbscan_equals_exact_hdbscan_on_real_embeddings(
        lfw_subset: tuple[Path, Path, dict]) -> None:
    import hdbscan
    from sklearn.metrics import adjusted_rand_score

    from indexer.clustering import HdbscanConfig, fast_hdbscan

    home, _, _ = lfw_subset
    with Store.open(settings_mod.load({"home": home}), read_only=True) as store:
        _, vectors = store.embeddings()
    # min_samples=1 is what the default recluster uses: labels must agree exactly. With larger
    # min_samples many mutual-reachability edges tie (they equal a core distance), and which
    # of equal-weight edges a spanning tree keeps moves a few border points; hdbscan's own
    # result depends on that order too.
    for min_cluster_size, min_samples, agreement in ((2, 1, 1.0), (3, 1, 1.0), (2, None, 1.0),
                                                     (3, 2, 0.97), (5, 3, 0.97)):
        exact = hdbscan.HDBSCAN(min_cluster_size=min_cluster_size,
                                min_samples=min_samples).fit_predict(vectors.astype(np.float64))
        fast = fast_hdbscan(vectors, HdbscanConfig(min_cluster_size=min_cluster_size,
                                                   min_samples=min_samples)).labels
        assert adjusted_rand_score(exact, fast) >= agreement, (min_cluster_size, min_samples)
        if agreement == 1.0:
            assert np.array_equal(exact < 0, fast < 0)
