"""The watch daemon as users run it: `faceidx watch` in its own process, with `status` and
`query` from other processes beside it, and stopped by SIGTERM or killed by SIGKILL mid-batch.
After either, a restart must leave the index equal to a clean run's."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from indexer import settings as settings_mod
from indexer.locks import IngestLock
from indexer.pipeline import Indexer
from indexer.settings import Settings
from indexer.store import Store
from indexer.store.vectors import persisted_ids
from indexer.watch import WatchDaemon
from tests.conftest import REPO, lfw_identities, link_tree

TIMEOUT = 120.0
PHOTOS = 24

Faces = dict[str, list[tuple[float, ...]]]


def wait_for(check: Callable[[], bool], what: str, timeout: float = TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out after {timeout:.0f} s waiting for {what}"
        time.sleep(0.2)


def _settings(home: Path) -> Settings:
    return settings_mod.load({"home": home, "batch_size": 2, "watch_settle": 0.5,
                              "recluster_every": 0, "recluster_interval": 0},
                             environ={}, config_file=home / "no-config.toml")


def faces_of(home: Path, folder: Path) -> Faces:
    """Each photo (relative path) with its faces' boxes, from a read-only store."""
    store = Store.open(_settings(home), read_only=True)
    try:
        out: Faces = {}
        for face in store.faces():
            out.setdefault(str(Path(face.path).relative_to(folder)), []).append(
                tuple(round(v, 1) for v in face.bbox))
        return {k: sorted(v) for k, v in out.items()}
    finally:
        store.close(save=False)


def image_count(home: Path) -> int:
    if not (home / "catalog.duckdb").exists():
        return 0
    store = Store.open(_settings(home), read_only=True)
    try:
        return store.counts().images
    finally:
        store.close(save=False)


def assert_faiss_in_step(home: Path) -> None:
    store = Store.open(_settings(home), read_only=True)
    try:
        in_catalog = sorted(f.face_id for f in store.faces())
    finally:
        store.close(save=False)
    in_faiss = persisted_ids(home / "faces.faiss", 128).tolist()  # base file + delta log
    assert in_faiss == in_catalog


@pytest.fixture(scope="module")
def photos(faces_dir: Path) -> list[Path]:
    people = lfw_identities(faces_dir, min_images=8, count=6)
    chosen = [p for files in people.values() for p in files[:4]]
    assert len(chosen) == PHOTOS
    return chosen


@pytest.fixture(scope="module")
def clean_run(photos: list[Path], dlib_model: Any, tmp_path_factory: pytest.TempPathFactory
              ) -> Faces:
    """What a clean `index` of the photos gives (boxes per photo)."""
    base = tmp_path_factory.mktemp("clean")
    folder = base / "photos"
    link_tree(photos, folder)
    settings = _settings(base / "home")
    store = Store.open(settings, dlib_model.info)
    try:
        with Indexer(store, dlib_model, settings) as indexer:
            summary = indexer.index([folder])
    finally:
        store.close()
    assert summary.new == PHOTOS and summary.failed == 0
    return faces_of(base / "home", folder)


def start_daemon(home: Path, folder: Path, log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "FACEIDX_HOME": str(home), "FACEIDX_BATCH_SIZE": "2",
           "FACEIDX_WATCH_SETTLE": "0.5", "FACEIDX_RECLUSTER_EVERY": "0",
           "FACEIDX_RECLUSTER_INTERVAL": "0"}
    proc = subprocess.Popen([sys.executable, "-m", "cli.app", "watch", "-v", "--model", "dlib",
                             str(folder)], cwd=REPO, env=env,
                            stdout=subprocess.DEVNULL, stderr=log.open("wb"))
    wait_for(lambda: proc.poll() is not None or "queued" in (IngestLock.holder(home) or {}),
             "the daemon to start")
    assert proc.poll() is None, log.read_text()
    return proc


def faceidx(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "cli.app", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=TIMEOUT)


def restart_until_idle(home: Path, folder: Path, model: Any) -> None:
    """Restart the daemon (in this process, sharing the loaded model) until its queue drains."""
    daemon = WatchDaemon(_settings(home), model, [folder], recluster=None)
    errors: list[BaseException] = []

    def target() -> None:
        try:
            daemon.run()
        except BaseException as exc:  # noqa: BLE001 - handed to the test thread
            errors.append(exc)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    wait_for(lambda: daemon.idle.is_set() or bool(errors), "the restarted daemon to finish")
    daemon.stop()
    thread.join(TIMEOUT)
    if errors:
        raise errors[0]
    assert not thread.is_alive()


def test_sigterm_mid_batch_then_status_and_query_beside_the_busy_restart(
        photos: list[Path], clean_run: Faces, tmp_path: Path) -> None:
    folder = tmp_path / "photos"
    link_tree(photos, folder)
    home = tmp_path / "home"
    proc = start_daemon(home, folder, tmp_path / "first.log")
    try:
        wait_for(lambda: image_count(home) >= 2, "the first batch")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(TIMEOUT) == 0, (tmp_path / "first.log").read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
    assert "SIGTERM: finishing the batch in hand" in (tmp_path / "first.log").read_text()
    partial = image_count(home)
    assert 2 <= partial < PHOTOS and partial % 2 == 0, "stopped after a whole batch"
    assert not (home / "ingest.json").exists(), "the lock info was left behind"
    assert_faiss_in_step(home)  # saved on the way out

    # Restart; while it catches up, `status` and `query` run from other processes.
    log = tmp_path / "restart.log"
    proc = start_daemon(home, folder, log)
    try:
        indexed = next(iter(faces_of(home, folder)))
        args = [sys.executable, "-m", "cli.app"]
        status = subprocess.Popen([*args, "status", "--json", "--home", str(home)], cwd=REPO,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        query = subprocess.Popen([*args, "query", "--json", "--k", "3", "--home", str(home),
                                  str(folder / indexed)], cwd=REPO, stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True)
        out, err = status.communicate(timeout=TIMEOUT)
        assert status.returncode == 0, err
        running = json.loads(out)["indexer_running"]
        assert running["purpose"] == "faceidx watch" and running["pid"] == proc.pid
        assert running["queued"] > 0 and running["mode"] == "inotify" and running["since"] > 0
        out, err = query.communicate(timeout=TIMEOUT)
        assert query.returncode == 0, err
        best = json.loads(out)[0]["matches"][0]
        assert best["path"] == str(folder / indexed) and best["distance"] < 1e-3

        wait_for(lambda: (IngestLock.holder(home) or {}).get("queued") == 0
                 and image_count(home) == PHOTOS, "the restarted daemon to catch up")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(TIMEOUT) == 0, log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
    restart_log = log.read_text()
    assert f"catch-up: {PHOTOS - partial} file(s) to index" in restart_log, restart_log
    assert f"catch-up done: {PHOTOS - partial}/{PHOTOS - partial} files" in restart_log
    assert faces_of(home, folder) == clean_run, "nothing lost, nothing twice"
    assert_faiss_in_step(home)


def test_sigkill_mid_batch_then_restart_equals_a_clean_run(
        photos: list[Path], clean_run: Faces, dlib_model: Any, tmp_path: Path) -> None:
    folder = tmp_path / "photos"
    link_tree(photos, folder)
    home = tmp_path / "home"
    log = tmp_path / "watch.log"
    proc = start_daemon(home, folder, log)
    try:
        wait_for(lambda: image_count(home) >= 4, "a few batches")
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(TIMEOUT) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
    partial = image_count(home)
    assert 4 <= partial <= PHOTOS

    restart_until_idle(home, folder, dlib_model)
    after = faces_of(home, folder)
    assert after == clean_run, "same photos, same faces, no duplicates"
    assert sum(map(len, after.values())) == sum(map(len, clean_run.values()))
    assert_faiss_in_step(home)
