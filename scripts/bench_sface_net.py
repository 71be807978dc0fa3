"""What the sface networks cost per face and per photo in OpenCV's DNN module, and what the
obvious variants would save, measured in one run on the faces and photos of the fixed mix of
scripts/bench_ingest.py (one OpenCV thread, CPU time of the calling thread, median of rounds):

- SFace as a whole net (the int8bq file, one face per forward), against Winograd off,
  fusion off, and batches: the int8bq file's full batched forward returns garbage for every
  row but the first (checked here), but its trunk (every layer up to the flattened 7x7x512
  map) batches exactly, so batches run the trunk in OpenCV and the last Gemm + BatchNorm in
  numpy (weights read from the loaded net, BatchNorm epsilon 2e-5 as in the file); the
  trunk one face per forward with that Gemm in numpy is what faceidx runs;
- with `onnx` importable (`uv run --with onnx ...`), the same file with its DequantizeLinear
  weights folded into an fp32 graph in memory, one face per forward and in batches of 4;
- with `onnxruntime` importable too, that fp32 graph statically quantized to int8 activations
  and weights (onnxruntime's quantizer, calibrated on the mix's own faces), in both of its
  formats (QOperator and QDQ), run by OpenCV's int8 layers;
- where the baseline's time goes, by layer type (OpenCV's own per-layer timings);
- YuNet on the detection copy at 640, 800 and 1024 px (faces found at the default floors).

Every variant's vectors are compared with the baseline's (max absolute difference, unit vectors).

    uv run python scripts/bench_sface_net.py [--faces ../shared/faces] [--max-faces 48]
    uv run --with onnx==1.23.2 python scripts/bench_sface_net.py
    uv run --with onnx==1.23.2 --with onnxruntime==1.32.0 python scripts/bench_sface_net.py
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_ingest import REPO, photo_set  # noqa: E402

from indexer import settings as settings_mod  # noqa: E402
from indexer.imageio import Photo, read_raw  # noqa: E402
from indexer.models.sface_model import (  # noqa: E402
    CHIP_SIZE,
    FLATTEN,
    NMS_THRESHOLD,
    TOP_K,
    SfaceModel,
    checked_weights,
    folded_tail,
    weights_dir,
)


def unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def blob(chips: list[np.ndarray]) -> Any:
    import cv2

    return cv2.dnn.blobFromImages(chips, 1.0, (CHIP_SIZE, CHIP_SIZE), (0, 0, 0), swapRB=False)


def per_forward(net: Any, chips: list[np.ndarray], batch: int = 1) -> np.ndarray:
    out = []
    for i in range(0, len(chips), batch):
        net.setInput(blob(chips[i:i + batch]))
        out.append(np.asarray(net.forward(), dtype=np.float32).reshape(-1, 128).copy())
    return unit(np.concatenate(out))


def trunk_and_tail(net: Any, batch: int) -> Callable[[list[np.ndarray]], np.ndarray]:
    """The trunk in OpenCV (batched), the Gemm and its BatchNorm folded into one numpy matmul
    (as faceidx's SfaceModel.embed does with batch 1)."""
    tail = folded_tail(net)
    assert tail is not None, "this OpenCV names SFace's layers otherwise"
    weights, bias = tail

    def run(chips: list[np.ndarray]) -> np.ndarray:
        feats = []
        for i in range(0, len(chips), batch):
            net.setInput(blob(chips[i:i + batch]))
            feats.append(np.asarray(net.forward(FLATTEN)).reshape(-1, weights.shape[0]))
        return unit(np.concatenate(feats) @ weights + bias)
    return run


def folded_fp32(path: Path) -> bytes | None:
    """The ONNX file with DequantizeLinear (and Reshape) of constants folded to fp32."""
    try:
        import onnx
        from onnx import helper, numpy_helper
    except ImportError:
        return None
    model = onnx.load(str(path))
    graph = model.graph
    consts = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    keep = []
    for node in graph.node:
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        if node.op_type == "DequantizeLinear" and all(i in consts for i in node.input if i):
            q = consts[node.input[0]].astype(np.float32)
            scale = consts[node.input[1]].astype(np.float32)
            zero = consts[node.input[2]].astype(np.float32) if len(node.input) > 2 \
                else np.zeros_like(scale)
            axis, block = attrs.get("axis", 1) % q.ndim, attrs.get("block_size", 0)
            if block:
                index = np.arange(q.shape[axis]) // block
                scale, zero = scale.take(index, axis=axis), zero.take(index, axis=axis)
            elif scale.size > 1:
                shape = [1] * q.ndim
                shape[axis] = -1
                scale, zero = scale.reshape(shape), zero.reshape(shape)
            consts[node.output[0]] = (q - zero) * scale
        elif node.op_type == "Reshape" and all(i in consts for i in node.input):
            x, shape = consts[node.input[0]], consts[node.input[1]]
            consts[node.output[0]] = x.reshape([x.shape[i] if d == 0 else int(d)
                                                for i, d in enumerate(shape)])
        else:
            keep.append(node)
    used = {i for n in keep for i in n.input}
    del graph.node[:]
    graph.node.extend(keep)
    del graph.initializer[:]
    graph.initializer.extend(numpy_helper.from_array(v.astype(v.dtype), k)
                             for k, v in consts.items() if k in used)
    inputs = [i for i in graph.input if i.name in used and i.name not in consts]
    del graph.input[:]
    graph.input.extend(inputs)
    return model.SerializeToString()


def quantized_int8(fp32: bytes, chips: list[np.ndarray]) -> dict[str, bytes]:
    """The fp32 graph with int8 activations and weights, calibrated on `chips`, in onnxruntime's
    two formats; empty without onnxruntime."""
    try:
        from onnxruntime.quantization import (
            CalibrationDataReader,
            QuantFormat,
            QuantType,
            quantize_static,
        )
    except ImportError:
        return {}
    import tempfile

    class Faces(CalibrationDataReader):  # type: ignore[misc]
        def __init__(self) -> None:
            self.rows = iter([{"data": blob([chip])} for chip in chips])

        def get_next(self) -> dict[str, Any] | None:
            return next(self.rows, None)

    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        source = Path(tmp) / "fp32.onnx"
        source.write_bytes(fp32)
        for name, fmt, activations in (("QOperator", QuantFormat.QOperator, QuantType.QUInt8),
                                       ("QDQ", QuantFormat.QDQ, QuantType.QInt8)):
            target = Path(tmp) / f"{name}.onnx"
            quantize_static(str(source), str(target), Faces(), quant_format=fmt,
                            activation_type=activations, weight_type=QuantType.QInt8)
            out[name] = target.read_bytes()
    return out


def layer_types(net: Any, chips: list[np.ndarray]) -> dict[str, float]:
    """Milliseconds per face by layer type, from OpenCV's per-layer timings."""
    import cv2

    names = net.getLayerNames()
    total = np.zeros(len(names))
    for chip in chips:
        net.setInput(blob([chip]))
        net.forward()
        total += np.asarray(net.getPerfProfile()[1], dtype=np.float64).ravel()[:len(names)]
    by_type: dict[str, float] = {}
    for i, ms in enumerate(total * 1000 / cv2.getTickFrequency() / len(chips)):
        kind = net.getLayer(i + 1).type
        by_type[kind] = by_type.get(kind, 0.0) + float(ms)
    return dict(sorted(by_type.items(), key=lambda kv: -kv[1]))


def read_net(data: bytes | Path) -> Any:
    import cv2

    raw = data.read_bytes() if isinstance(data, Path) else data
    return cv2.dnn.readNetFromONNX(np.frombuffer(raw, np.uint8))  # bytes objects crash 4.14


def timed_rounds(variants: dict[str, Callable[[Any], object]], arg: object, rounds: int,
                 per: int) -> dict[str, float]:
    times: dict[str, list[float]] = {k: [] for k in variants}
    for _ in range(rounds):  # interleaved, so drifting load hits every variant alike
        for name, fn in variants.items():
            t = time.thread_time()
            fn(arg)
            times[name].append((time.thread_time() - t) * 1000 / per)
    return {k: statistics.median(v) for k, v in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--faces", type=Path, default=REPO.parent / "shared" / "faces")
    parser.add_argument("--lfw", type=int, default=20, help="LFW photos in the mix")
    parser.add_argument("--max-faces", type=int, default=48, help="faces timed per round")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    import cv2

    cv2.setNumThreads(1)
    settings = settings_mod.load({"home": Path("/nonexistent"), "model_threads": 1,
                                  "facenet_probe": ""}, environ={})
    model = SfaceModel(settings)
    model.load()
    photos = [Photo(read_raw(p, max_bytes=settings.max_file_bytes),
                    max_pixels=settings.max_image_pixels)
              for p in photo_set(args.faces, args.lfw)]
    chips = [model.chip(photo, lm) for photo in photos for _, _, lm in model.detect(photo)]
    every = max(1, len(chips) // args.max_faces)
    chips = chips[::every][:args.max_faces]  # spread over the mix, not only its first photos
    print(f"OpenCV {cv2.__version__}, 1 thread; {len(chips)} faces and {len(photos)} photos of "
          f"the bench_ingest mix; CPU ms of the calling thread, median of {args.rounds} rounds")

    detector_path, recognizer_path = checked_weights(weights_dir(settings))
    nets: dict[str, Any] = {}

    def net(name: str, data: bytes | Path, winograd: bool = True, fusion: bool = True) -> Any:
        nets[name] = read_net(data)
        nets[name].enableWinograd(winograd)
        nets[name].enableFusion(fusion)
        return nets[name]

    base = net("base", recognizer_path)
    nowino = net("nowino", recognizer_path, winograd=False)
    nofuse = net("nofuse", recognizer_path, fusion=False)
    variants: dict[str, Callable[[list[np.ndarray]], np.ndarray]] = {
        "int8bq file, whole net 1 face per forward": lambda c: per_forward(base, c),
        "  Winograd off": lambda c: per_forward(nowino, c),
        "  fusion off": lambda c: per_forward(nofuse, c),
        "  trunk 1 per forward, Gemm in numpy (faceidx)":
            trunk_and_tail(net("t1", recognizer_path), 1),
        "  trunk in batches of 4, Gemm in numpy": trunk_and_tail(net("t4", recognizer_path), 4),
        "  trunk in batches of 8, Gemm in numpy": trunk_and_tail(net("t8", recognizer_path), 8),
    }
    fp32 = folded_fp32(recognizer_path)
    if fp32 is None:
        print("(fp32 graph skipped: the onnx package is not installed; run with `uv run --with "
              "onnx==1.23.2`)")
    else:
        f1, f4 = net("fp32", fp32), net("fp32b4", fp32)
        variants["  fp32 graph (folded in memory), 1 per forward"] = \
            lambda c: per_forward(f1, c)
        variants["  fp32 graph, batches of 4"] = lambda c: per_forward(f4, c, 4)
        quantized = quantized_int8(fp32, chips)
        if not quantized:
            print("(int8 activations skipped: onnxruntime is not installed; run with `uv run "
                  "--with onnx==1.23.2 --with onnxruntime==1.32.0`)")
        for fmt, data in quantized.items():
            q = net(f"int8-{fmt}", data)
            variants[f"  int8 activations ({fmt}, calibrated on these faces)"] = \
                lambda c, q=q: per_forward(q, c)
    reference = per_forward(base, chips)
    with np.errstate(over="ignore", invalid="ignore"):
        garbage = per_forward(read_net(recognizer_path), chips[:4], 4) if len(chips) >= 4 \
            else None
    if garbage is not None:
        print(f"int8bq file, full batched forward of 4: max |difference| "
              f"{np.nanmax(np.abs(garbage - reference[:4])):.3g} "
              f"({int(np.isnan(garbage).any(axis=1).sum())} rows NaN)")
    for fn in variants.values():  # warm up: a net allocates its layers on its first forward
        fn(chips[:8])
    ms = timed_rounds(variants, chips, args.rounds, len(chips))
    baseline = ms["int8bq file, whole net 1 face per forward"]
    print("\n| SFace variant | CPU ms/face | vs the whole net | max vector difference |")
    print("|---|---|---|---|")
    for name, fn in variants.items():
        diff = float(np.abs(fn(chips) - reference).max())
        print(f"| {name.strip()} | {ms[name]:.1f} | {baseline / ms[name]:.2f}x | {diff:.1e} |")

    print(f"\nwhere the baseline's time goes, ms per face by layer type (OpenCV's per-layer "
          f"timings, {len(chips)} faces):")
    for kind, ms_type in layer_types(read_net(recognizer_path), chips).items():
        if ms_type >= 0.05:
            print(f"  {kind}: {ms_type:.1f}")

    # YuNet: the detection copy's size sets its cost
    print("\n| YuNet detection copy | CPU ms/photo | vs 1024 px | faces (score >= "
          f"{model.min_score}, >= {model.min_face_size} px) |\n|---|---|---|---|")
    detector = cv2.FaceDetectorYN.create(str(detector_path), "", (320, 320), model.min_score,
                                         NMS_THRESHOLD, TOP_K)
    copies = {side: [(np.ascontiguousarray(p.detection_copy(side)[0][:, :, ::-1]),
                      p.detection_copy(side)[1]) for p in photos] for side in (1024, 800, 640)}

    def detect(side: int) -> int:
        found = 0
        for bgr, scale in copies[side]:
            detector.setInputSize((bgr.shape[1], bgr.shape[0]))
            rows = detector.detect(bgr)[1]
            found += sum(1 for r in (rows if rows is not None else [])
                         if min(r[2], r[3]) * scale >= model.min_face_size)
        return found
    sides = {f"{s} px": (lambda _, s=s: detect(s)) for s in (1024, 800, 640)}
    detect(640)  # warm up
    det_ms = timed_rounds(sides, None, args.rounds, len(photos))
    for side in (1024, 800, 640):
        name = f"{side} px"
        print(f"| {name} | {det_ms[name]:.1f} | {det_ms['1024 px'] / det_ms[name]:.2f}x | "
              f"{detect(side)} |")


if __name__ == "__main__":
    main()
