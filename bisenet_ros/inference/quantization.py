"""Post-training int8 quantization of a BiSeNet checkpoint from unlabelled calibration frames.

The model (returning its 1/8 logits, as the pipeline uses it) is exported to ONNX at one fixed
input size and quantized statically by ONNX Runtime's tools in the QDQ format:

- weights int8 per output channel (symmetric), activations uint8 per tensor, symmetric (zero
  point 128) or asymmetric (a ReLU's output then uses all 256 levels): :func:`choose_activations`
  keeps the more accurate of the two unless it runs much slower;
- activation ranges from the calibration frames, preprocessed exactly as the pipeline does
  (``minmax`` by default; ``percentile`` and ``entropy`` are available);
- the classifier (the last convolution, which produces the logits) stays float32 by default
  (``keep_float``), so the class scores that the argmax compares are not rounded to 256 levels.

The result runs on ONNX Runtime's or OpenVINO's int8 CPU kernels (VNNI/AMX where present).
Calibration frames come from an image folder, a video or an image topic of a ROS 2 bag.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Iterator, Sequence

import cv2
import numpy as np
import torch

from ..data.images import MAX_PIXELS
from ..errors import BisenetError, ConfigError, ImageError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm")
VIDEO_SUFFIXES = (".mp4", ".avi", ".mkv", ".mov", ".webm", ".m4v", ".mpg", ".mpeg")
METHODS = ("minmax", "percentile", "entropy")
ACTIVATIONS = ("symmetric", "asymmetric")
SLOWER_OK = 1.25  # choose_activations: how much slower the more accurate scheme may run


class QuantizeError(BisenetError):
    """Quantization could not run (bad data, export or quantizer failure)."""


# -- calibration data ---------------------------------------------------------------------------
def data_kind(data: str | Path) -> str:
    """``images``, ``video`` or ``bag`` for a calibration source, or QuantizeError."""
    p = Path(data).expanduser()
    if not p.exists():
        raise QuantizeError(f"{data}: calibration data not found")
    if p.is_dir():
        return "bag" if (p / "metadata.yaml").is_file() else "images"
    if p.suffix.lower() in (".mcap", ".db3"):
        return "bag"
    if p.suffix.lower() in VIDEO_SUFFIXES:
        return "video"
    raise QuantizeError(f"{data}: expected an image folder, a video ({', '.join(VIDEO_SUFFIXES)}) "
                        f"or a ROS 2 bag (folder, .mcap or .db3)")


def read_frames(data: str | Path, topic: str | None = None, limit: int = 100, max_pixels: int = MAX_PIXELS,
                labels: tuple[int, int] | None = None) -> list[tuple[np.ndarray, str]]:
    """Up to ``limit`` (image, encoding) frames, spread evenly over the source, streamed: only the
    frames taken are decoded and kept (a 600-frame video costs ``limit`` frames of memory), each
    one's size checked against ``max_pixels`` before it is decoded. ``labels``: (class count,
    ignore index) of the model; frames that are all single-channel class ids (a ground-truth
    label topic or folder) are refused."""
    kind = data_kind(data)
    if kind == "bag" and not topic:
        raise QuantizeError(f"{data} is a bag: name its image topic with --topic")
    if kind != "bag" and topic:
        raise QuantizeError(f"--topic is for bags; {data} is {'a video' if kind == 'video' else 'an image folder'}")
    source = {"images": _folder_frames, "video": _video_frames, "bag": _bag_frames}[kind]
    frames = list(source(Path(data).expanduser(), topic, limit, max_pixels))
    if len(frames) < 2:
        raise QuantizeError(f"{data}: {len(frames)} usable frame(s); at least 2 are needed "
                            f"(calibration and held-out)")
    if labels is not None and all(looks_like_labels(img, enc, *labels) for img, enc in frames):
        what = f"topic {topic}" if topic else str(data)
        raise QuantizeError(f"{what}: every frame is a single-channel image of class ids (0..{labels[0] - 1} or "
                            f"{labels[1]}): ground-truth labels, not camera frames; calibrate on the camera images")
    return frames


def spread(n: int, limit: int) -> list[int]:
    """``min(n, limit)`` indices spread evenly over ``range(n)``."""
    return sorted(set(np.linspace(0, n - 1, min(n, limit)).round().astype(int).tolist())) if n > 0 else []


def looks_like_labels(image: np.ndarray, encoding: str, num_classes: int, ignore_index: int) -> bool:
    """A mono8/mono16 image whose every value is a class id or the ignore index."""
    if encoding not in ("mono8", "mono16") or image.ndim != 2:
        return False
    values = np.unique(image)
    return bool(np.all((values < num_classes) | (values == ignore_index)))


def _folder_frames(root: Path, _topic, limit: int, max_pixels: int) -> Iterator[tuple[np.ndarray, str]]:
    from ..data.images import decode_image_bytes

    folder = root / "images" if (root / "images").is_dir() else root
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise QuantizeError(f"{folder}: no images ({', '.join(IMAGE_SUFFIXES)})")
    cap = max_pixels * 8 + (1 << 20)  # no image file of the budget is larger (16-bit RGBA, uncompressed)
    for i in spread(len(files), limit):
        path = files[i]
        try:
            if path.stat().st_size > cap:
                raise QuantizeError(f"{path}: {path.stat().st_size} bytes, larger than an image within the "
                                    f"pixel budget ({max_pixels} pixels) can be")
            yield decode_image_bytes(path.read_bytes(), str(path), max_pixels)
        except OSError as exc:
            raise QuantizeError(f"{path}: not a readable image ({exc.strerror or exc})") from None
        except ImageError as exc:
            raise QuantizeError(f"{path}: not a usable calibration image: {exc}") from None


def _video_frames(path: Path, _topic, limit: int, max_pixels: int) -> Iterator[tuple[np.ndarray, str]]:
    from ..data.images import check_pixels

    cap = cv2.VideoCapture(str(path))
    try:
        if not cap.isOpened():
            raise QuantizeError(f"{path}: not a readable video")
        w, h = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
        try:
            check_pixels(w, h, max_pixels)
        except ImageError as exc:
            raise QuantizeError(f"{path}: {exc}") from None
        count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
        if count <= 0:  # not in the container: count by grabbing (nothing kept), then read again
            while cap.grab():
                count += 1
            cap.release()
            cap = cv2.VideoCapture(str(path))
        wanted = set(spread(count, limit))
        for i in range(count):
            if not cap.grab():
                break
            if i in wanted:
                ok, frame = cap.retrieve()
                if ok and frame is not None:
                    yield frame, "bgr8"
    finally:
        cap.release()


def _bag_frames(path: Path, topic: str, limit: int, max_pixels: int) -> Iterator[tuple[np.ndarray, str]]:
    from ..data.bags import _topics, check_image_topic, image_to_array, open_bag

    with open_bag(path) as reader:
        topics = _topics(reader)
        check_image_topic(topics, topic, path)
        wanted = set(spread(topics[topic].count, limit))
        conns = [c for c in reader.connections if c.topic == topic]
        for i, (conn, _, raw) in enumerate(reader.messages(connections=conns)):
            if i not in wanted:
                continue  # neither deserialised nor decoded
            try:
                array, encoding = image_to_array(reader.deserialize(raw, conn.msgtype))
            except Exception:  # noqa: BLE001 - a corrupt or oversized message is no calibration data
                continue
            yield array, encoding


def split_held_out(n: int, every: int = 5) -> tuple[list[int], list[int]]:
    """(calibration, held-out) indices: every ``every``-th frame is held out (at least one)."""
    held = list(range(every - 1, n, every)) or [n - 1]
    calib = [i for i in range(n) if i not in set(held)]
    return calib, held


# -- quantization -------------------------------------------------------------------------------
def export_float_onnx(pipeline, weights: str | Path, path: Path, size: tuple[int, int]) -> None:
    """The 1/8-logits model of ``weights`` as float32 ONNX at ``size``."""
    from .export import export_onnx
    from ..models import load_model, low_res_view

    info = pipeline.info
    net = load_model(info["model"], weights=weights, num_classes=info["num_classes"])
    export_onnx(low_res_view(net), path, size, dynamic_size=False)


def classifier_nodes(path: Path) -> list[str]:
    """Names of the Conv nodes that produce the graph output (the classifier)."""
    import onnx

    graph = onnx.load(str(path)).graph
    outputs = {o.name for o in graph.output}
    return [n.name for n in graph.node if n.op_type == "Conv" and set(n.output) & outputs]


def quantize_onnx(float_path: Path, out_path: Path, inputs: Sequence[torch.Tensor], method: str = "minmax",
                  keep_float: bool = True, progress=None, activations: str = "symmetric") -> dict:
    """Static QDQ int8 quantization of ``float_path`` into ``out_path``; returns what was done."""
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat,
                                          QuantType, quantize_static)
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if method not in METHODS:
        raise ConfigError(f"calibration method must be one of {', '.join(METHODS)}, got '{method}'")
    if activations not in ACTIVATIONS:
        raise ConfigError(f"activations must be one of {', '.join(ACTIVATIONS)}, got '{activations}'")

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.items = iter(inputs)

        def get_next(self):
            x = next(self.items, None)
            if x is None:
                return None
            if progress is not None:
                progress.update(1)
            return {"input": x.numpy()}

    prepared = float_path.with_name(float_path.stem + "_prepared.onnx")
    # skip_symbolic_shape: ONNX Runtime's symbolic shape inference, when incomplete, saves
    # sym_shape_infer_temp.onnx + its .data into the working directory (test/conftest.py fails a
    # test run that leaves such files in the checkout); ONNX's own shape inference is enough here
    quant_pre_process(str(float_path), str(prepared), skip_symbolic_shape=True)
    excluded = classifier_nodes(prepared) if keep_float else []
    calibrate = {"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile,
                 "entropy": CalibrationMethod.Entropy}[method]
    logging.disable(logging.WARNING)  # the quantizer's notes on per-tensor BatchNorm parameters
    # activations: OpenVINO runs asymmetric ones 0.16-0.2 off ONNX Runtime on BiSeNetV2 (the backend
    # check then refuses OpenVINO and int8 runs 3x slower on ONNX Runtime), symmetric ones alike
    # (test_quantize.py); on BiSeNetV1 both runtimes agree on asymmetric ones, which keep more labels
    try:
        quantize_static(str(prepared), str(out_path), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, calibrate_method=calibrate,
                        nodes_to_exclude=excluded,
                        extra_options={"WeightSymmetric": True,
                                       "ActivationSymmetric": activations == "symmetric"})
    finally:
        logging.disable(logging.NOTSET)
    return {"method": method, "format": "QDQ", "weights": "int8 per channel (symmetric)",
            "activations": f"uint8 per tensor ({activations})", "float_nodes": excluded, "frames": len(inputs)}


def choose_activations(tried: dict[str, dict], slower_ok: float = SLOWER_OK) -> str:
    """Of the int8 models quantized with each activation scheme (``{scheme: {"label_agreement",
    "int8_ms"}}``, measured on the held-out frames with the backend each would run on), the one
    whose labels agree most with float32 among those at most ``slower_ok`` times slower than the
    fastest (ties: the faster). A scheme that makes ``auto`` fall back to a slower runtime loses."""
    fastest = min(r["int8_ms"] for r in tried.values())
    fast = [k for k, r in tried.items() if r["int8_ms"] <= slower_ok * fastest]
    return max(fast, key=lambda k: (tried[k]["label_agreement"], -tried[k]["int8_ms"]))
