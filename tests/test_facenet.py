"""The facenet path with a random-initialised InceptionResnetV1 (plumbing, never quality)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from indexer import settings as settings_mod

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def random_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import torch
    from facenet_pytorch import InceptionResnetV1

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("weights") / "random_resnet.pt"
    torch.save(InceptionResnetV1(pretrained=None).state_dict(), path)
    return path


def test_weights_file_runs_the_whole_facenet_path(cli, faces_dir: Path, random_weights: Path,
                                                  copy_photos, monkeypatch: pytest.MonkeyPatch,
                                                  home: Path) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("FACEIDX_FACENET_WEIGHTS", str(random_weights))
    files = copy_photos([faces_dir / "group_photos" / "facenet_multiface.jpg",
                         faces_dir / "broken" / "exif_rotated_face.jpg"])
    summary = json.loads(cli("index", "--json", str(files[0].parent)).stdout)  # default model
    assert summary["new"] == 2 and summary["faces_added"] >= 6
    from indexer.store import Store

    with Store.open(settings_mod.load({"home": home}), read_only=True) as store:
        assert store.model.name == "facenet" and store.model.dim == 512
        assert store.model.weights.startswith("file-sha256:")
        _, vectors = store.embeddings()
    assert vectors.shape[1] == 512
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-4)
    result = json.loads(cli("query", "--json", str(files[1])).stdout)
    assert result[0]["matches"][0]["distance"] < 1e-3  # the photo finds itself


def test_no_weights_and_no_network_is_one_line(tmp_path: Path, faces_dir: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FACEIDX_")}
    env.update(TORCH_HOME=str(tmp_path / "torch"), FACEIDX_HOME=str(tmp_path / "home"),
               FACEIDX_CONFIG=str(tmp_path / "none.toml"),
               # no network: point any download at a closed local port
               HTTPS_PROXY="http://127.0.0.1:9", HTTP_PROXY="http://127.0.0.1:9")
    result = subprocess.run(
        [sys.executable, "-m", "cli.app", "index", "--model", "facenet",
         str(faces_dir / "broken")], cwd=REPO, env=env, capture_output=True, text=True,
        timeout=300)
    assert result.returncode == 2
    lines = [ln for ln in result.stderr.strip().splitlines() if "error" in ln]
    assert len(lines) == 1, result.stderr
    assert "20180402-114759-vggface2.pt" in lines[0]
    assert "FACEIDX_FACENET_WEIGHTS" in lines[0] and "--model dlib" in lines[0]
    assert not (tmp_path / "home" / "catalog.duckdb").exists()  # index untouched
