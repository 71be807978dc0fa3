"""`faceidx index --ray` on a real local Ray cluster (`ray start --head` on 127.0.0.1, shared by
every test here), real photos and the real dlib model: the catalog equals a local index, a killed
Ray worker is retried, a SIGKILLed driver leaves a catalog that a plain re-run completes."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from indexer import settings as settings_mod
from indexer.errors import FaceidxError
from indexer.store import Store
from indexer.store.vectors import persisted_ids
from tests.conftest import lfw_identities, link_tree

REPO = Path(__file__).resolve().parent.parent
# Every Ray process of these tests stays on the loopback address, without tokens; workers use
# this environment rather than one rebuilt by Ray's `uv run` hook; and the raylet waits for its
# agents as long as a crowded machine needs to start them (it gave up after ~15 s under load).
RAY_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_AUTH_MODE": "disabled",
           "RAY_ENABLE_UV_RUN_RUNTIME_ENV": "0", "RAY_USAGE_STATS_ENABLED": "0",
           "RAY_agent_register_timeout_ms": "180000"}
ACTOR_TITLE = b"ray::MapWorker(MapBatches(FaceActor))"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _children(pid: int) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                out.append(int(entry.name))
    return out


def _descendants(pid: int) -> list[int]:
    found, todo = [], [pid]
    while todo:
        kids = _children(todo.pop())
        found.extend(kids)
        todo.extend(kids)
    return found


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def _start_head(log: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = _free_port()
    ports = {"port": port, "dashboard-agent-grpc-port": _free_port(),
             "dashboard-agent-listen-port": _free_port(), "runtime-env-agent-port": _free_port(),
             "metrics-export-port": _free_port(), "node-manager-port": _free_port(),
             "object-manager-port": _free_port()}
    cmd = [str(Path(sys.executable).parent / "ray"), "start", "--head", "--block",
           "--node-ip-address=127.0.0.1", "--num-cpus=2", "--object-store-memory=200000000",
           "--include-dashboard=false", "--include-log-monitor=false", "--disable-usage-stats",
           *(f"--{k}={v}" for k, v in ports.items())]
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT,
                                env={**os.environ, **RAY_ENV}, start_new_session=True)
    return proc, f"127.0.0.1:{port}"


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _head_is_up(proc: subprocess.Popen[bytes], log: Path, timeout: float) -> bool:
    """Wait for the head; False as soon as its raylet has died (it gives up when its agents start
    too slowly on a crowded machine)."""
    deadline = time.monotonic() + timeout
    raylet = None
    while time.monotonic() < deadline and proc.poll() is None:
        if raylet is None:
            raylet = next((p for p in _children(proc.pid) if b"raylet" in _cmdline(p)), None)
        elif not _alive(raylet):
            return False
        if raylet is not None and b"block forever" in log.read_bytes():
            time.sleep(2)
            return _alive(raylet)
        time.sleep(0.5)
    return False


def _stop_head(proc: subprocess.Popen[bytes]) -> None:
    family = _descendants(proc.pid)  # Ray's workers run in sessions of their own
    proc.terminate()  # `ray start --block` stops the Ray processes it started on SIGTERM
    try:
        proc.wait(timeout=3)  # (it may take 30 s to be polite; the kills below are quicker)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    for pid in family:  # and whatever outlived it
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


@pytest.fixture(scope="session")
def ray_head(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, int]]:
    """One Ray head on 127.0.0.1 (2 CPUs, 200 MB object store) for every test here."""
    saved = {k: os.environ.get(k) for k in RAY_ENV}
    os.environ.update(RAY_ENV)  # before ray is first imported: it reads them at import
    pytest.importorskip("ray", reason="the `ray` extra is not installed (uv sync --extra ray)")
    log = tmp_path_factory.mktemp("ray") / "head.log"
    for _ in range(3):  # on a crowded machine the raylet may give up on its agents once
        proc, address = _start_head(log)
        if _head_is_up(proc, log, timeout=180):
            break
        _stop_head(proc)
    else:
        raise AssertionError(f"ray start --head did not come up:\n{log.read_text()[-3000:]}")
    yield address, proc.pid
    _stop_head(proc)
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


def photo_files(faces_dir: Path) -> list[Path]:
    """20 photos: LFW portraits, a group photo, and every file of broken/ (4 must fail)."""
    people = lfw_identities(faces_dir, min_images=4, count=5)
    lfw = [f for fs in people.values() for f in fs[:2]][:9]
    return lfw + [faces_dir / "group_photos" / "fr_two_people.jpg"] + \
        sorted((faces_dir / "broken").iterdir())


@pytest.fixture(scope="session")
def photos(faces_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("ray-photos") / "photos"
    link_tree(photo_files(faces_dir), folder, base=faces_dir)  # lfw/, group_photos/, broken/
    return folder


def _catalog(home: Path, *, check_faiss: bool = True) -> dict:  # type: ignore[type-arg]
    with Store.open(settings_mod.load({"home": home}), read_only=True) as store:
        faces = store.faces()
        ids, vectors = store.embeddings([f.face_id for f in faces])
        by_id = dict(zip(ids.tolist(), vectors, strict=True))
        rows = sorted((Path(f.path).name, tuple(round(v, 3) for v in f.bbox), f.face_id)
                      for f in faces)
        if check_faiss:  # (after a SIGKILL the FAISS files are a stale cache until the next run)
            assert persisted_ids(home / "faces.faiss", 128).tolist() == sorted(by_id)
        return {"faces": [(p, b) for p, b, _ in rows],
                "vectors": np.stack([by_id[i] for _, _, i in rows]),
                "failures": sorted((Path(p).name, r) for p, r in store.failures())}


def _index_cmd(home: Path, folder: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "cli.app", "-vv", "index", "--model", "dlib", "--home",
            str(home), *extra, str(folder)]


@pytest.fixture(scope="session")
def local(photos: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:  # type: ignore[type-arg]
    """The same photos indexed by a local `faceidx index` (the real app in this process, the
    model in worker processes, no Ray): what Ray must reproduce."""
    from typer.testing import CliRunner

    from cli.app import app

    tmp = tmp_path_factory.mktemp("local")
    home = tmp / "home"
    result = CliRunner().invoke(app, ["index", "--model", "dlib", "--home", str(home),
                                      str(photos)],
                                env={"FACEIDX_HOME": str(home),
                                     "FACEIDX_CONFIG": str(tmp / "no-config.toml")})
    assert result.exit_code == 0, f"{result.output}\n{result.exception!r}"
    return _catalog(home)


def _same_catalog(got: dict, want: dict) -> None:  # type: ignore[type-arg]
    assert got["faces"] == want["faces"]  # the same faces with the same boxes, no duplicates
    assert len(set(got["faces"])) == len(got["faces"])
    np.testing.assert_allclose(got["vectors"], want["vectors"], atol=1e-5)
    assert got["failures"] == want["failures"]


def test_ray_index_equals_local_then_skips_and_moves(cli, ray_head, photos: Path, local,
                                                     home: Path, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch,
                                                     caplog: pytest.LogCaptureFixture
                                                     ) -> None:  # type: ignore[no-untyped-def]
    import json
    import logging
    import shutil

    from indexer import distributed

    address, _ = ray_head
    folder = tmp_path / "photos"
    shutil.copytree(photos, folder)
    # the driver keeps one block per actor ahead: it waits for results between the blocks it puts
    monkeypatch.setattr(distributed, "AHEAD_PER_ACTOR", 1)
    ray = ("--ray", address, "--ray-read", "driver", "--ray-actors", "2")
    caplog.set_level(logging.INFO, logger="indexer.distributed")
    first = json.loads(cli("index", "--model", "dlib", "--json", *ray, str(folder)).stdout)
    # where each actor's start-up went: logged once per actor that returned results
    startups = [r.getMessage() for r in caplog.records if "its constructor began" in r.msg]
    assert 1 <= len(startups) <= 2 and all(" -" not in line for line in startups)
    assert first["new"] == 16 and first["failed"] == 4 and first["faces_added"] == \
        len(local["faces"])
    assert len(local["faces"]) >= 16  # a face in every photo that can be read, more in the group
    _same_catalog(_catalog(home), local)

    (folder / "lfw").rename(folder / "portraits")  # a moved folder needs no model
    again = json.loads(cli("index", "--json", *ray, str(folder)).stdout)
    assert again["moved"] == 9 and again["unchanged"] == 11
    assert again["faces_added"] == again["new"] == again["failed"] == 0


def _run_and_watch(cmd: list[str], env: dict[str, str], on_batch) -> subprocess.Popen[str]:  # type: ignore[no-untyped-def]
    """Start `cmd`; call on_batch(n) after its n-th committed batch until it returns True."""
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stderr=subprocess.PIPE,
                            stdout=subprocess.DEVNULL, text=True)
    assert proc.stderr is not None
    deadline, batches = time.monotonic() + 600, 0
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line:
            break
        if "committed a batch" in line:
            batches += 1
            if on_batch(batches, proc):
                break
    return proc


def test_a_killed_ray_worker_is_retried(ray_head, photos: Path, local, tmp_path: Path
                                        ) -> None:  # type: ignore[no-untyped-def]
    address, head_pid = ray_head
    home = tmp_path / "home"
    env = {**os.environ, **RAY_ENV, "FACEIDX_BATCH_SIZE": "4"}
    killed: list[int] = []

    def kill_one_actor(n: int, proc: subprocess.Popen[str]) -> bool:
        actors = [p for p in _descendants(head_pid) if _cmdline(p).startswith(ACTOR_TITLE)]
        if actors:
            os.kill(actors[0], signal.SIGKILL)
            killed.append(actors[0])
        return bool(killed)

    proc = _run_and_watch(_index_cmd(home, photos, "--ray", address, "--ray-read", "driver",
                                     "--ray-actors", "2"), env, kill_one_actor)  # bytes inline
    assert killed, "no Ray actor process was found to kill"
    proc.stderr.read()  # type: ignore[union-attr]
    assert proc.wait(timeout=600) == 0
    _same_catalog(_catalog(home), local)


def test_driver_sigkill_then_plain_rerun_completes(cli, ray_head, photos: Path, local,
                                                   tmp_path: Path
                                                   ) -> None:  # type: ignore[no-untyped-def]
    address, _ = ray_head
    home = tmp_path / "home"
    env = {**os.environ, **RAY_ENV, "FACEIDX_BATCH_SIZE": "4"}

    def kill_driver(n: int, proc: subprocess.Popen[str]) -> bool:
        if n == 2:
            proc.send_signal(signal.SIGKILL)
            return True
        return False

    proc = _run_and_watch(_index_cmd(home, photos, "--ray", address, "--ray-read", "shared"),
                          env, kill_driver)
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    partial = _catalog(home, check_faiss=False)
    assert 0 < len(partial["faces"]) < len(local["faces"])

    cli("index", "--model", "dlib", "--home", str(home), str(photos))  # without --ray
    _same_catalog(_catalog(home), local)


def test_without_the_extra_ray_is_a_one_line_error(monkeypatch: pytest.MonkeyPatch) -> None:
    from indexer import distributed

    monkeypatch.setitem(sys.modules, "ray", None)  # as if the extra were not installed
    with pytest.raises(FaceidxError, match=r"optional extra `ray`: uv sync --extra ray"):
        distributed._import_ray()


def test_bad_ray_options_are_one_line_errors(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    result = cli("index", "--model", "dlib", "--ray=nowhere", str(tmp_path), ok=False)
    assert result.exit_code == 2 and "--ray 'nowhere' is not a Ray address" in result.stderr
    result = cli("index", "--model", "dlib", str(tmp_path), "--ray", "--ray-read", "nfs", ok=False)
    assert result.exit_code == 2 and "--ray-read 'nfs'" in result.stderr


@pytest.mark.parametrize(("args", "ray", "paths"), [
    (["--ray"], "local", []),
    (["--ray", "photos"], "local", ["photos"]),  # a PATH after a bare --ray stays a PATH
    (["photos", "--ray"], "local", ["photos"]),
    (["--ray", "--ray-read", "shared", "photos"], "local", ["photos"]),
    (["--ray", "auto", "photos"], "auto", ["photos"]),
    (["--ray", "ray://head:10001", "a", "b"], "ray://head:10001", ["a", "b"]),
    (["--ray", "10.0.0.5:6379", "photos"], "10.0.0.5:6379", ["photos"]),
    (["--ray", "./2024:06"], "local", ["2024:06"]),  # a slash: a PATH, not HOST:PORT
    (["--ray=auto", "photos"], "auto", ["photos"]),
])
def test_ray_takes_an_optional_address(args: list[str], ray: str, paths: list[str]) -> None:
    from typer.main import get_command

    from cli.app import app

    index = get_command(app).commands["index"]  # type: ignore[attr-defined]
    ctx = index.make_context("index", args, resilient_parsing=True)
    assert ctx.params["ray"] == ray and [str(p) for p in ctx.params["paths"] or []] == paths


def test_ray_before_a_missing_path_names_the_path(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    missing = tmp_path / "nowhere"
    result = cli("index", "--model", "dlib", "--ray", str(missing), ok=False)
    assert result.exit_code == 2 and f"{missing}: no such file or folder" in result.stderr


@pytest.mark.parametrize("files", [1, 5, 60, 220, 5000])
def test_guided_blocks_cover_every_file_and_shrink_to_one(files: int) -> None:
    from indexer.distributed import ROWS_PER_BLOCK, block_sizes

    sizes = block_sizes(files, actors=2)
    assert sum(sizes) == files and sizes[-1] == 1
    assert sizes == sorted(sizes, reverse=True) and max(sizes) <= ROWS_PER_BLOCK
