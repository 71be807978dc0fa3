"""Scale plumbing: ids from counters that are never reused, bulk writes, and the synthetic home
every command works on (real DuckDB and FAISS files under tmp_path, the real Typer app)."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from cli.app import app
from indexer.settings import Settings
from indexer.store import NewImage, Store
from indexer.synthetic_home import SCHEME, build
from indexer.types import FaceResult, ModelInfo

MODEL = ModelInfo(name="dlib", dim=8, weights="test")
REPO = Path(__file__).resolve().parent.parent


def _faces(n: int, seed: int) -> list[FaceResult]:
    vecs = np.random.default_rng(seed).normal(size=(n, 8)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    return [FaceResult(bbox=(1.0, 2.0, 30.0, 40.0), landmarks=(0.5,) * 10, score=0.9,
                       embedding=v) for v in vecs]


def test_ids_are_never_reused_after_deletes(settings: Settings) -> None:
    with Store.open(settings, MODEL) as store:
        with store.transaction() as con:
            images = store.add_images(con, [NewImage(path=f"/p/{i}.jpg", size=1, mtime=1.0,
                                                     content_hash=str(i), status="ok")
                                            for i in range(3)])
            first = store.add_faces_many(con, [(images[0], _faces(2, 0)),
                                               (images[2], _faces(1, 1))])
        assert first == [1, 2, 3]
        with store.transaction() as con:  # drop the newest image and face ids
            store.remove_images(con, [images[2]])
            store.remove_images(con, [images[1]])
        with store.transaction() as con:
            again = store.add_images(con, [NewImage(path="/p/new.jpg", size=1, mtime=1.0,
                                                    content_hash="n", status="ok")])
            later = store.add_faces(con, again[0], _faces(2, 2))
        assert again == [4] and later == [4, 5]
        rows = store.faces()
        assert [f.face_id for f in rows] == [1, 2, 4, 5]
        assert rows[0].bbox == (1.0, 2.0, 30.0, 40.0) and rows[0].landmarks == (0.5,) * 10
        ids, vectors = store.embeddings()
        np.testing.assert_array_equal(vectors[2:], np.stack([f.embedding for f in
                                                             _faces(2, 2)]))
        assert store.search(vectors[3:4], k=1)[0][0].face_id == 5


def test_synthetic_home_works_with_every_light_command(settings: Settings, faces_dir: Path
                                                       ) -> None:
    report = build(settings, 400, "dlib", seed=3, named=2)
    assert report.faces == 400 and report.clusters > 10
    with Store.open(settings, read_only=True) as store:
        counts = store.counts()
        assert counts.faces == 400 and counts.people == 2
        assert all(f.path.startswith(SCHEME) for f in store.faces())
        assert store.get_meta("synthetic") is not None
    runner = CliRunner()
    out = runner.invoke(app, ["status"])
    assert out.exit_code == 0 and "faces:     400" in out.stdout
    out = runner.invoke(app, ["people"])
    assert out.exit_code == 0 and "Synthetic Person 1" in out.stdout
    out = runner.invoke(app, ["name", "Synthetic Person 2", "Ada"])
    assert out.exit_code == 0, out.output
    # Indexing a real folder into the same home leaves the synthetic photos alone.
    one = sorted(p for p in faces_dir.rglob("*.jpg"))[:1]
    out = runner.invoke(app, ["index", str(one[0])])
    assert out.exit_code == 0, out.output
    with Store.open(settings, read_only=True) as store:
        counts = store.counts()
        assert counts.images == report.images + 1
        assert sum(f.path.startswith(SCHEME) for f in store.faces()) == 400


LIGHT_PROBE = """
import sys
from cli.app import main
sys.argv = ["faceidx", *sys.argv[1:]]
try:
    main()
finally:
    heavy = sorted(m for m in ("pydantic", "rich", "PIL", "torch", "dlib", "faiss", "filelock",
                               "numpy")
                   if m in sys.modules)
    print("imported:", ",".join(heavy), file=sys.stderr)
"""


def _light(args: list[str], home: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "FACEIDX_HOME": str(home)}
    return subprocess.run([sys.executable, "-c", LIGHT_PROBE, *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=120)


def test_light_commands_skip_heavy_imports_and_print_what_typer_prints(
        settings: Settings) -> None:
    build(settings, 300, "dlib", seed=5, named=1)
    runner = CliRunner()
    for args in (["status"], ["status", "--json"], ["people", "--limit", "5"],
                 ["-v", "people", "--json", "--limit", "2"]):
        fast = _light(args, settings.home)
        assert fast.returncode == 0, fast.stderr
        assert fast.stderr.strip().endswith("imported:"), (args, fast.stderr)
        assert fast.stdout == runner.invoke(app, args).stdout
    named = _light(["name", "Synthetic Person 1", "Grace"], settings.home)
    assert named.returncode == 0, named.stderr
    assert named.stderr.strip().endswith("imported:"), named.stderr
    changes = _light(["history"], settings.home)
    assert changes.returncode == 0 and "Grace" in changes.stdout, changes.stderr
    assert changes.stderr.strip().endswith("imported:"), changes.stderr
    with Store.open(settings, read_only=True) as store:
        assert "Grace" in store.cluster_names().values()
    # What the fast path does not parse goes to Typer, with Typer's messages and exit codes.
    bad = _light(["people", "--limit", "-1"], settings.home)
    assert bad.returncode == 2 and "--limit" in bad.stderr
    missing = _light(["name", "no such person", "X"], settings.home)
    assert missing.returncode != 0 and "no cluster or person" in missing.stderr


def test_export_of_a_synthetic_home_has_no_photo_warnings(settings: Settings,
                                                         tmp_path: Path) -> None:
    build(settings, 200, "dlib", seed=9, named=1)
    out = CliRunner().invoke(app, ["export", str(tmp_path / "out")])
    assert out.exit_code == 0, out.output
    assert "gone from disk" not in out.output and "could not be read" not in out.output
    folders = [p for p in (tmp_path / "out").iterdir() if p.is_dir()]
    assert any(p.name.endswith("Synthetic_Person_1") for p in folders)
    assert all((p / "thumbnail_grid.png").exists() for p in folders)


def test_fitted_synthetic_faces_keep_the_measured_distances(settings: Settings,
                                                            tmp_path: Path) -> None:
    """synthetic_fit measures mean and between/within-identity covariances on labelled faces
    and draws unit vectors whose same- and different-identity distances match the source's;
    synthetic_home --like builds a home from the saved statistics."""
    from indexer.clustering.synthetic import make_identities
    from indexer.synthetic_fit import EmbeddingStats, fit, make_like

    def medians(x: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
        x, labels = x[:1500], labels[:1500]
        d = np.sqrt(np.maximum(2 - 2 * x @ x.T, 0))
        same = labels[:, None] == labels[None, :]
        off = ~np.eye(len(x), dtype=bool)
        return float(np.median(d[same & off])), float(np.median(d[~same]))

    source = make_identities(4000, 32, seed=1)
    stats = fit(source.embeddings, source.identities)
    stats.save(tmp_path / "stats.npz")
    stats = EmbeddingStats.load(tmp_path / "stats.npz")
    drawn = make_like(stats, 4000, seed=2)
    assert drawn.embeddings.shape == (4000, 32)
    np.testing.assert_allclose(np.linalg.norm(drawn.embeddings, axis=1), 1.0, atol=1e-5)
    for want, got in zip(medians(source.embeddings, source.identities),
                         medians(drawn.embeddings, drawn.identities), strict=True):
        assert abs(got - want) < 0.1 * want, (want, got)
    with pytest.raises(ValueError, match="32-d"):
        build(settings, 100, "dlib", like=stats)  # dlib faces are 128-d
