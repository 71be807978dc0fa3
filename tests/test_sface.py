"""The sface model (YuNet + SFace through OpenCV) on real photos, its weights check, and the
`auto` default that picks it when facenet's weights cannot be had."""

from __future__ import annotations

import csv
import json
import shutil
import socket
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from indexer import settings as settings_mod
from indexer.errors import ModelUnavailable
from indexer.imageio import Photo, decode
from indexer.models.auto import choose_model, reachable
from indexer.models.sface_model import SfaceModel, weights_dir
from indexer.store import Store

from .conftest import lfw_identities

LIMITS = {"max_pixels": 120_000_000, "max_bytes": 1 << 29}
READABLE = ["cmyk.jpg", "exif_rotated_face.jpg", "gray16.png", "palette.gif", "png_named.jpg",
            "rgba.png"]


@pytest.fixture(scope="session")
def sface_model() -> SfaceModel:
    model = SfaceModel(settings_mod.load({"home": Path("/nonexistent")}, environ={}))
    model.load()
    return model


def test_every_readable_broken_file_gives_one_upright_face(sface_model: SfaceModel,
                                                           faces_dir: Path) -> None:
    for name in READABLE:
        rgb = decode(faces_dir / "broken" / name, **LIMITS)
        faces = sface_model.analyze([rgb])[0]
        assert len(faces) == 1, name
        face = faces[0]
        np.testing.assert_allclose(np.linalg.norm(face.embedding), 1.0, atol=1e-4)
        eyes_y = (face.landmarks[1] + face.landmarks[3]) / 2
        mouth_y = (face.landmarks[7] + face.landmarks[9]) / 2
        assert eyes_y < mouth_y, f"{name}: face found upside down or sideways"
        x1, y1, x2, y2 = face.bbox
        assert 0 <= x1 < x2 <= rgb.shape[1] and 0 <= y1 < y2 <= rgb.shape[0]
    # the same face in other encodings embeds (almost) the same
    vectors = np.stack([sface_model.analyze([decode(faces_dir / "broken" / n, **LIMITS)])[0][0]
                        .embedding for n in ("cmyk.jpg", "png_named.jpg", "rgba.png")])
    assert float(np.max(np.linalg.norm(vectors - vectors[0], axis=1))) < 0.4


def test_group_photos_find_at_least_the_expected_faces(sface_model: SfaceModel,
                                                       faces_dir: Path) -> None:
    folder = faces_dir / "group_photos"
    with (folder / "labels.csv").open() as fh:
        exact = {r["file"]: int(r["expected_faces"]) for r in csv.DictReader(fh)
                 if r["expected_faces"].isdigit()}
    counts = {n: len(sface_model.analyze([decode(folder / n, **LIMITS)])[0]) for n in exact}
    enough = [n for n, e in exact.items() if counts[n] >= e]
    assert len(exact) >= 10
    assert len(enough) >= 0.9 * len(exact), {n: (counts[n], e) for n, e in exact.items()}
    # about 25 people, faces 11-19 px wide: dlib's HOG finds none of them
    tiny = sface_model.analyze([decode(folder / "opencv_group1.jpg", **LIMITS)])[0]
    assert len(tiny) >= 20 and min(f.bbox[2] - f.bbox[0] for f in tiny) < 20


def test_the_last_layers_in_numpy_give_the_whole_nets_vectors(faces_dir: Path) -> None:
    """embed() runs SFace's trunk in OpenCV and its last Gemm and BatchNorm in numpy, once for
    all the chips (with the model's BLAS threads): the vectors are the whole net's, run one face
    at a time in OpenCV, to float rounding."""
    model = SfaceModel(settings_mod.load({"home": Path("/nonexistent"), "model_threads": 1},
                                         environ={}))
    model.load()
    assert model._tail is not None, "this OpenCV names SFace's layers otherwise"
    folder = faces_dir / "group_photos"
    chips = []
    for name in sorted(p.name for p in folder.glob("*.jpg"))[:3]:
        photo = Photo.of(decode(folder / name, **LIMITS))
        chips += [model.chip(photo, lm) for _, _, lm in model.detect(photo)]
    assert len(chips) >= 8
    vectors = model.embed(chips)
    whole = np.stack([model._forward(chip, None) for chip in chips])
    whole /= np.linalg.norm(whole, axis=1, keepdims=True)
    assert vectors.shape == (len(chips), 128)
    np.testing.assert_allclose(vectors, whole, atol=1e-5)
    np.testing.assert_allclose(model.embed(chips[:1]), whole[:1], atol=1e-5)  # one alone


def test_no_faces_on_non_face_photos(sface_model: SfaceModel, faces_dir: Path) -> None:
    found = {p.name: len(sface_model.analyze([decode(p, **LIMITS)])[0])
             for p in sorted((faces_dir / "non_faces").rglob("*.*"))}
    assert len(found) >= 20 and sum(found.values()) == 0, found


def _top1(vectors: np.ndarray, labels: list[str]) -> float:
    sims = vectors @ vectors.T
    np.fill_diagonal(sims, -np.inf)
    nearest = sims.argmax(axis=1)
    return float(np.mean([labels[i] == labels[j] for i, j in enumerate(nearest)]))


def test_lfw_top1_query_accuracy_is_at_least_dlibs(sface_model: SfaceModel, dlib_model,
                                                   faces_dir: Path) -> None:  # type: ignore[no-untyped-def]
    people = lfw_identities(faces_dir, min_images=6, count=10)
    photos = [(name, p) for name, files in people.items() for p in files[:4]]
    accuracy = {}
    for label, model in (("sface", sface_model), ("dlib", dlib_model)):
        vectors, labels = [], []
        for name, path in photos:
            faces = model.analyze([decode(path, **LIMITS)])[0]
            if not faces:
                continue
            # LFW crops are centred on the labelled face: take the face nearest the centre
            centre = np.array([125.0, 125.0])
            face = min(faces, key=lambda f: float(np.linalg.norm(
                np.array([(f.bbox[0] + f.bbox[2]) / 2, (f.bbox[1] + f.bbox[3]) / 2]) - centre)))
            vectors.append(face.embedding)
            labels.append(name)
        assert len(labels) >= 0.95 * len(photos), label
        accuracy[label] = _top1(np.stack(vectors), labels)
    assert accuracy["sface"] >= accuracy["dlib"], accuracy
    assert accuracy["sface"] >= 0.9, accuracy


def test_tampered_or_missing_weights_are_refused(tmp_path: Path) -> None:
    base = settings_mod.load({"home": tmp_path / "home"}, environ={})
    copy = tmp_path / "weights"
    shutil.copytree(weights_dir(base), copy)
    settings = replace(base, sface_models=copy)
    SfaceModel(settings).load()  # an intact copy loads
    target = copy / "face_recognition_sface_2021dec_int8bq.onnx"
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte in the middle of the weights
    target.write_bytes(bytes(data))
    with pytest.raises(ModelUnavailable, match="SHA-256") as exc:
        SfaceModel(settings).load()
    assert str(target) in str(exc.value) and "\n" not in str(exc.value)
    (copy / "face_detection_yunet_2023mar_int8bq.onnx").unlink()
    with pytest.raises(ModelUnavailable, match="missing"):
        SfaceModel(settings).load()


def test_network_probe_answers_yes_and_no_quickly() -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        assert reachable(f"127.0.0.1:{port}", 2.0)
    assert not reachable(f"127.0.0.1:{port}", 2.0)  # closed now: refused
    assert not reachable("no-port", 2.0)


def test_auto_picks_facenet_only_when_its_weights_can_be_had(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    offline = settings_mod.load({"home": tmp_path / "h", "facenet_probe": "127.0.0.1:9"},
                                environ={})
    name, why = choose_model(offline)
    assert name == "sface" and "127.0.0.1:9 did not answer" in why
    weights = tmp_path / "facenet.pt"
    weights.write_bytes(b"x")
    assert choose_model(replace(offline, facenet_weights=weights))[0] == "facenet"
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        online = replace(offline, facenet_probe=f"127.0.0.1:{server.getsockname()[1]}")
        assert choose_model(online)[0] == "facenet"


def test_auto_default_indexes_with_sface_and_the_index_keeps_it(
        cli, faces_dir: Path, copy_photos, home: Path,
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("FACEIDX_FACENET_PROBE", "127.0.0.1:9")  # no network, deterministically
    files = copy_photos([faces_dir / "broken" / "rgba.png",
                         faces_dir / "group_photos" / "fr_two_people.jpg"])
    result = cli("index", "--json", str(files[0].parent))  # no --model: auto
    assert json.loads(result.stdout)["faces_added"] == 3
    chosen = [ln for ln in result.stderr.splitlines() if "auto" in ln]
    assert len(chosen) == 1 and "model sface" in chosen[0] and "facenet" in chosen[0]
    with Store.open(settings_mod.load({"home": home}), read_only=True) as store:
        assert store.model.name == "sface" and store.model.dim == 128
    # the home keeps sface even if facenet weights turn up; another model is refused
    monkeypatch.setenv("FACEIDX_FACENET_WEIGHTS", str(files[0]))
    again = cli("index", "--json", str(files[0].parent))
    assert json.loads(again.stdout)["unchanged"] == 2 and "auto" not in again.stderr
    wrong = cli("index", "--model", "dlib", str(files[0].parent), ok=False)
    assert wrong.exit_code == 2 and "made by model sface" in wrong.stderr
    assert len(wrong.stderr.strip().splitlines()) == 1
    hits = json.loads(cli("query", "--json", str(files[0])).stdout)
    assert hits[0]["matches"][0]["distance"] < 1e-3  # the photo finds itself
