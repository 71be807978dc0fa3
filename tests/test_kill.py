"""A run killed with SIGKILL mid-indexing leaves a consistent index; the next run completes it."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from indexer import settings as settings_mod
from indexer.store import Store
from indexer.store.vectors import persisted_ids
from tests.conftest import lfw_identities, link_tree


def _faces(home: Path) -> list[tuple[str, tuple[int, ...]]]:
    with Store.open(settings_mod.load({"home": home}), read_only=True) as store:
        return sorted((Path(f.path).name, tuple(round(v) for v in f.bbox))
                      for f in store.faces())


def _index_cmd(home: Path, folder: Path) -> list[str]:
    return [sys.executable, "-m", "cli.app", "-vv", "index", "--model", "dlib",
            "--home", str(home), str(folder)]


def test_sigkill_mid_run_then_rerun_equals_clean_run(faces_dir: Path, tmp_path: Path) -> None:
    people = lfw_identities(faces_dir, min_images=6, count=8)
    files = [f for fs in people.values() for f in fs[:5]]
    folder = tmp_path / "photos"
    link_tree(files, folder, base=faces_dir / "lfw")
    env = {**os.environ, "FACEIDX_BATCH_SIZE": "4"}
    repo = Path(__file__).resolve().parent.parent

    killed_home = tmp_path / "killed"
    proc = subprocess.Popen(_index_cmd(killed_home, folder), cwd=repo, env=env,
                            stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    assert proc.stderr is not None
    deadline = time.monotonic() + 300
    batches = 0
    while time.monotonic() < deadline:  # kill after two committed batches, mid-run
        line = proc.stderr.readline()
        if not line:
            break
        if "committed a batch" in line:
            batches += 1
            if batches == 2:
                proc.send_signal(signal.SIGKILL)
                break
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    partial = _faces(killed_home)
    assert 0 < len(partial) < len(files)

    subprocess.run(_index_cmd(killed_home, folder), cwd=repo, env=env, check=True,
                   capture_output=True, timeout=600)
    clean_home = tmp_path / "clean"
    subprocess.run(_index_cmd(clean_home, folder), cwd=repo, env=env, check=True,
                   capture_output=True, timeout=600)

    repaired, clean = _faces(killed_home), _faces(clean_home)
    assert repaired == clean
    assert len(set(repaired)) == len(repaired)  # no duplicated faces
    in_faiss = persisted_ids(killed_home / "faces.faiss", 128).tolist()
    with Store.open(settings_mod.load({"home": killed_home}), read_only=True) as store:
        assert in_faiss == [f.face_id for f in store.faces()]
