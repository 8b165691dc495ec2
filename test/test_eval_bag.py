"""eval-bag and make-bag: bags built from generated images and labels, metrics checked by hand.

The hand-computed cases run the real :class:`SegmentationPipeline` with a runner whose output is
known (the class id is encoded in the red channel), so every expected figure is exact. The CLI
cases use a tiny random checkpoint and compare with an independent per-class computation.
"""
from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from bisenet_ros.data import bags
from bisenet_ros import cli
from bisenet_ros.data.bags import BagError, BagWriter, array_to_image, write_image_bag
from bisenet_ros.data.datasets import preset_from_dict
from bisenet_ros.pipeline import SegmentationPipeline, build_pipeline
from bisenet_ros.evaluation.recording import evaluate_bag

T0 = 1_700_000_000_000_000_000
STEP = 100_000_000  # 10 fps
PRESET = preset_from_dict({"name": "toy", "classes": ["floor", "wall", "person"], "mean": [0, 0, 0],
                           "std": [1, 1, 1], "label_maps": {"raw": {7: 0, 8: 1, 11: 2}}}, "toy")
U = 16 * 16  # pixels per quadrant of a 32x32 frame


def red_class_runner(x: torch.Tensor) -> torch.Tensor:
    """Logits of 'class = red / 40' (mean 0, std 1: the input is red / 255)."""
    cls = torch.round(x[:, 0] * 255.0 / 40.0).long().clamp(0, 2)
    return F.one_hot(cls, 3).permute(0, 3, 1, 2).float() * 10.0


def toy_pipeline() -> SegmentationPipeline:
    return SegmentationPipeline(red_class_runner, PRESET, input_size=None, device="cpu",
                                info={"model": "toy"})


def quad(a, b, c, d) -> np.ndarray:
    """32x32 uint8 map with quadrants [a b; c d]."""
    return np.kron(np.array([[a, b], [c, d]], dtype=np.uint8), np.ones((16, 16), np.uint8))


def image_for(pred: np.ndarray) -> np.ndarray:
    rgb = np.zeros(pred.shape + (3,), np.uint8)
    rgb[..., 0] = pred * 40
    rgb[..., 1] = 77
    return rgb


# frame A: pred [0 1; 2 2], GT [0 1; 1 ignore]; frame B: perfect [0 0; 1 2]; frame C: no GT.
# confusion (x256 px): [[3,0,0],[0,2,1],[0,0,1]] -> IoU 1, 2/3, 1/2; mIoU 13/18; pixel acc 6/7
FRAMES = [(image_for(quad(0, 1, 2, 2)), quad(0, 1, 1, 255)),
          (image_for(quad(0, 0, 1, 2)), quad(0, 0, 1, 2)),
          (image_for(quad(2, 2, 2, 2)), None)]
HAND = {"miou": 13 / 18, "pixel_accuracy": 6 / 7, "per_class_iou": {"floor": 1.0, "wall": 2 / 3, "person": 0.5},
        "mean_class_accuracy": (1 + 2 / 3 + 1) / 3, "fwiou": 3 / 7 * 1 + 3 / 7 * 2 / 3 + 1 / 7 * 0.5}


def check_hand(report):
    assert report["frames"] == 3 and report["timed_frames"] == 3 and report["labelled_frames"] == 2
    for key, val in HAND.items():
        assert report[key] == pytest.approx(val), key
    assert report["confusion_matrix"] == [[3 * U, 0, 0], [0, 2 * U, U], [0, 0, U]]
    assert report["warnings"] == {}
    assert report["latency_ms"]["total_ms"]["count"] == 3 and report["fps"] > 0


@pytest.mark.parametrize("storage", bags.STORAGES)
def test_hand_computed_metrics_both_storages(tmp_path, storage):
    bag = tmp_path / "bag"
    write_image_bag(bag, FRAMES, storage=storage, start_ns=T0)
    ev = evaluate_bag(toy_pipeline(), bag, "/camera/image_raw", "/camera/labels", progress=False)
    check_hand(ev.report)


def write_custom(path, frames, label_offset_ns=0, label_encoding=None, storage="mcap", labels_first=False):
    """Images at T0 + i*STEP, labels (if any) shifted by ``label_offset_ns``."""
    with BagWriter(path, storage=storage) as w:
        for i, (img, lab) in enumerate(frames):
            t = T0 + i * STEP
            msgs = [("/cam", array_to_image(img, "rgb8", t, "cam"), t)]
            if lab is not None:
                enc = label_encoding or ("mono16" if lab.dtype == np.uint16 else "mono8")
                tl = t + label_offset_ns
                msgs.append(("/gt", array_to_image(lab, enc, tl, "cam"), tl))
            for topic, msg, stamp in (msgs[::-1] if labels_first else msgs):
                w.write(topic, msg, stamp)


def test_stamp_tolerance_and_label_before_image(tmp_path):
    write_custom(tmp_path / "b", FRAMES, label_offset_ns=2_000_000)
    with pytest.raises(BagError, match=r"no ground-truth stamp on '/gt' matches .*closest pair 2.000 ms"):
        evaluate_bag(toy_pipeline(), tmp_path / "b", "/cam", "/gt", progress=False)
    ev = evaluate_bag(toy_pipeline(), tmp_path / "b", "/cam", "/gt", stamp_tolerance_ms=5, progress=False)
    check_hand(ev.report)
    # ground truth recorded before its image (and earlier in the bag) pairs the same way
    write_custom(tmp_path / "c", FRAMES, label_offset_ns=-1_000_000, labels_first=True)
    check_hand(evaluate_bag(toy_pipeline(), tmp_path / "c", "/cam", "/gt", stamp_tolerance_ms=1,
                            progress=False).report)


def test_label_map_and_16uc1(tmp_path):
    raw = {0: 7, 1: 8, 2: 11, 255: 255}  # raw label ids; 255 is unmapped -> ignore
    frames = [(img, None if lab is None else np.vectorize(raw.get)(lab).astype(np.uint16)) for img, lab in FRAMES]
    write_custom(tmp_path / "b", frames, label_encoding="16UC1")
    ev = evaluate_bag(toy_pipeline(), tmp_path / "b", "/cam", "/gt", progress=False,
                      label_lut=PRESET.label_lut("raw"))
    check_hand(ev.report)
    # without the map the raw values are out of range: counted, not scored, never a silent mIoU
    ev = evaluate_bag(toy_pipeline(), tmp_path / "b", "/cam", "/gt", progress=False)
    assert ev.report["warnings"]["out_of_range_pixels"] == 7 * U  # A: 3 quadrants, B: 4
    assert "[7, 8, 11]" in ev.report["warning_messages"]["out_of_range_pixels"]
    assert ev.report["miou"] is None and ev.report["labelled_frames"] == 2
    with pytest.raises(BagError, match="neither class ids"):
        evaluate_bag(toy_pipeline(), tmp_path / "b", "/cam", "/gt", progress=False, strict=True)


def test_size_mismatch_counted_and_fatal_when_nothing_scores(tmp_path):
    small = np.zeros((16, 16), np.uint8)
    frames = [FRAMES[0], (FRAMES[1][0], small), FRAMES[2]]
    write_custom(tmp_path / "b", frames)
    ev = evaluate_bag(toy_pipeline(), tmp_path / "b", "/cam", "/gt", progress=False)
    assert ev.report["warnings"] == {"size_mismatch": 1} and ev.report["labelled_frames"] == 1
    assert "16x16 and prediction 32x32" in ev.report["warning_messages"]["size_mismatch"]
    # frame A alone: IoU floor 1, wall 1/2, person 0 -> mIoU 1/2
    assert ev.report["miou"] == pytest.approx(0.5)
    write_custom(tmp_path / "c", [(FRAMES[0][0], small)])
    with pytest.raises(BagError, match="could be scored.*differ in size"):
        evaluate_bag(toy_pipeline(), tmp_path / "c", "/cam", "/gt", progress=False)


def test_max_frames_and_images_without_ground_truth(tmp_path):
    write_custom(tmp_path / "b", FRAMES)
    ev = evaluate_bag(toy_pipeline(), tmp_path / "b", "/cam", "/gt", progress=False, max_frames=1)
    assert ev.report["frames"] == 1 and ev.report["labelled_frames"] == 1
    assert ev.report["miou"] == pytest.approx(0.5)
    ev = evaluate_bag(toy_pipeline(), tmp_path / "b", "/cam", None, progress=False)
    assert ev.report["frames"] == 3 and ev.report["miou"] is None and ev.confusion is None
    assert ev.report["latency_ms"]["inference_ms"]["count"] == 3


def test_prediction_bag_keeps_stamps(tmp_path):
    write_image_bag(tmp_path / "b", FRAMES, start_ns=T0, frame_id="cam_optical")
    evaluate_bag(toy_pipeline(), tmp_path / "b", "/camera/image_raw", "/camera/labels", progress=False,
                 pred_bag=tmp_path / "pred", pred_storage="sqlite3", pred_with_image=True)
    topics = bags.list_topics(tmp_path / "pred")
    assert {k: v.count for k, v in topics.items()} == {
        "/camera/image_raw": 3, "/segmentation/labels": 3, "/segmentation/color": 3, "/segmentation/overlay": 3}
    items = list(bags.read_image_topics(tmp_path / "pred", ["/segmentation/labels", "/segmentation/color"]))
    labels = [i for i in items if i.topic.endswith("labels")]
    assert [i.stamp_ns for i in labels] == [T0, T0 + STEP, T0 + 2 * STEP]
    assert all(i.frame_id == "cam_optical" for i in items)
    np.testing.assert_array_equal(labels[0].array, quad(0, 1, 2, 2))
    color = [i for i in items if i.topic.endswith("color")][0]
    assert color.encoding == "rgb8" and color.array[0, 0].tolist() == PRESET.palette[0].tolist()


# -- CLI with a real (tiny, random) checkpoint ---------------------------------------------------
def independent_miou(preds, gts, n, ignore=255):
    ious = []
    for c in range(n):
        inter = sum(np.count_nonzero((p == c) & (g == c)) for p, g in zip(preds, gts))
        union = sum(np.count_nonzero(((p == c) | (g == c)) & (g != ignore)) for p, g in zip(preds, gts))
        if union:
            ious.append(inter / union)
    return float(np.mean(ious))


def test_cli_eval_bag_report(tmp_path, tiny_checkpoints, capsys):
    rng = np.random.default_rng(3)
    frames = []
    for i in range(3):
        img = cv2.GaussianBlur(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8), (7, 7), 3)
        gt = rng.integers(0, 5, (48, 64), dtype=np.uint8)
        gt[:4] = 255
        frames.append((img, gt))
    write_image_bag(tmp_path / "bag", frames, storage="sqlite3", start_ns=T0)
    weights = str(tiny_checkpoints["bisenetv2"])
    out = tmp_path / "out"
    rc = cli.main(["eval-bag", str(tmp_path / "bag"), "--label-topic", "/camera/labels", "--weights", weights,
                   "--out", str(out), "--no-progress", "--pred-bag", str(tmp_path / "pred")])
    assert rc == 0
    metrics = json.loads((out / "metrics.json").read_text())
    for key in ("miou", "per_class_iou", "pixel_accuracy", "frames", "fps", "mean_class_accuracy", "fwiou",
                "latency_ms", "class_names", "confusion_matrix"):
        assert key in metrics, key
    assert list(metrics["per_class_iou"]) == ["road", "sidewalk", "building", "wall", "fence"]
    assert metrics["frames"] == 3 and metrics["labelled_frames"] == 3
    for png in ("confusion_matrix.png", "per_class_iou.png", "latency_histogram.png", "latency_stages.png"):
        assert cv2.imread(str(out / png)) is not None, png
    md = (out / "report.md").read_text()
    assert "![latency stages](latency_stages.png)" in md
    assert "| mIoU |" in md and "![confusion matrix](confusion_matrix.png)" in md
    assert f"mIoU {metrics['miou']:.4f}" in capsys.readouterr().out
    # same pipeline, independent metric: the figures agree, and the prediction bag holds those labels
    pipe = build_pipeline(weights=weights, device="cpu")
    preds = [pipe(img, "rgb8", outputs=()).labels for img, _ in frames]
    assert metrics["miou"] == pytest.approx(independent_miou(preds, [g for _, g in frames], 5), abs=1e-9)
    stored = [i.array for i in bags.read_image_topics(tmp_path / "pred", ["/segmentation/labels"])]
    for a, b in zip(stored, preds):
        np.testing.assert_array_equal(a, b)


def test_cli_one_line_errors(tmp_path, tiny_checkpoints, capsys):
    weights = str(tiny_checkpoints["bisenetv2"])
    assert cli.main(["eval-bag", str(tmp_path / "nope"), "--weights", weights]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "does not exist" in err
    write_image_bag(tmp_path / "bag", FRAMES, start_ns=T0)
    assert cli.main(["eval-bag", str(tmp_path / "bag"), "--weights", weights, "--image-topic", "/cam",
                     "--no-progress", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "'/cam' is not in bag" in err and "/camera/image_raw (sensor_msgs/msg/Image, 3 msgs)" in err
    assert cli.main(["eval-bag", str(tmp_path / "bag"), "--weights", weights, "--label-topic", "/camera/labels",
                     "--label-map", "nomap", "--no-progress", "--out", str(tmp_path / "o")]) == 2
    assert "label map 'nomap'" in capsys.readouterr().err


# -- make-bag ------------------------------------------------------------------------------------
@pytest.mark.parametrize("storage", bags.STORAGES)
def test_make_bag_from_image_folder(tmp_path, storage):
    (tmp_path / "img").mkdir()
    (tmp_path / "lab").mkdir()
    for i, (img, lab) in enumerate(FRAMES[:2]):
        cv2.imwrite(str(tmp_path / "img" / f"f{i}.png"),
                    cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
        cv2.imwrite(str(tmp_path / "lab" / f"f{i}.png"), lab)
    rc = cli.main(["make-bag", "--out", str(tmp_path / "bag"), "--images", str(tmp_path / "img"), "--labels",
                   str(tmp_path / "lab"), "--fps", "5", "--topic", "/cam/img", "--frame-id", "cam",
                   "--storage", storage])
    assert rc == 0
    topics = bags.list_topics(tmp_path / "bag")
    assert {k: v.count for k, v in topics.items()} == {"/cam/img": 2, "/camera/labels": 2, "/camera/camera_info": 2}
    items = list(bags.read_image_topics(tmp_path / "bag", ["/cam/img", "/camera/labels"]))
    assert items[2].stamp_ns - items[0].stamp_ns == 200_000_000 and items[0].frame_id == "cam"
    np.testing.assert_array_equal(items[0].array, FRAMES[0][0])
    np.testing.assert_array_equal(items[1].array, FRAMES[0][1])
    ev = evaluate_bag(toy_pipeline(), tmp_path / "bag", "/cam/img", "/camera/labels", progress=False)
    assert ev.report["miou"] == pytest.approx(13 / 18)


def test_make_bag_cityscapes_pairs_and_label_map(tmp_path, capsys):
    img_dir = tmp_path / "leftImg8bit" / "val" / "aachen"
    gt_dir = tmp_path / "gtFine" / "val" / "aachen"
    img_dir.mkdir(parents=True)
    gt_dir.mkdir(parents=True)
    label_ids = np.array([[7, 8], [26, 0]], np.uint8).repeat(8, 0).repeat(8, 1)  # road, sidewalk, car, unlabeled
    for k in range(2):
        stem = f"aachen_000000_00001{k}"
        cv2.imwrite(str(img_dir / f"{stem}_leftImg8bit.png"), np.full((16, 16, 3), 50 * k, np.uint8))
        cv2.imwrite(str(gt_dir / f"{stem}_gtFine_labelIds.png"), label_ids)
        cv2.imwrite(str(gt_dir / f"{stem}_gtFine_color.png"), np.zeros((16, 16, 3), np.uint8))
    args = ["make-bag", "--out", str(tmp_path / "bag"), "--images", str(tmp_path / "leftImg8bit"),
            "--labels", str(tmp_path / "gtFine")]
    assert cli.main(args) == 2
    assert "pass --label-map labelIds" in capsys.readouterr().err
    assert cli.main(args + ["--label-map", "labelIds"]) == 0
    labs = [i.array for i in bags.read_image_topics(tmp_path / "bag", ["/camera/labels"])]
    assert len(labs) == 2
    assert labs[0][::8, ::8].tolist() == [[0, 1], [13, 255]]  # trainIds: road 0, sidewalk 1, car 13, ignore


def test_make_bag_from_video(tmp_path):
    path = tmp_path / "v.avi"
    vw = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 8.0, (32, 24))
    assert vw.isOpened()
    for i in range(5):
        vw.write(np.full((24, 32, 3), 40 * i, np.uint8))
    vw.release()
    assert cli.main(["make-bag", "--out", str(tmp_path / "bag"), "--video", str(path), "--max-frames", "4"]) == 0
    items = list(bags.read_image_topics(tmp_path / "bag", ["/camera/image_raw"]))
    assert len(items) == 4 and items[0].array.shape == (24, 32, 3)
    assert items[1].stamp_ns - items[0].stamp_ns == 125_000_000  # the video's own 8 fps
    assert "/camera/labels" not in bags.list_topics(tmp_path / "bag")


def test_compressed_camera_topic_and_yaml_label_map(tmp_path, capsys):
    """CompressedImage (PNG) camera frames score the same; a YAML label map is read like a preset map."""
    Compressed = bags.typestore().types[bags.COMPRESSED_TYPE]
    raw = {0: 7, 1: 8, 2: 11, 255: 255}
    with BagWriter(tmp_path / "b") as w:
        for i, (img, lab) in enumerate(FRAMES):
            t = T0 + i * STEP
            ok, png = cv2.imencode(".png", cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
            w.write("/cam/compressed", Compressed(header=bags.make_header(t, "cam"), format="png",
                                                  data=np.frombuffer(png, np.uint8)), t)
            if lab is not None:
                w.write("/gt", array_to_image(np.vectorize(raw.get)(lab).astype(np.uint8), "mono8", t, "cam"), t)
    from bisenet_ros.evaluation.recording import resolve_label_map

    (tmp_path / "map.yaml").write_text("7: 0\n8: 1\n11: 2\n")
    lut = resolve_label_map(str(tmp_path / "map.yaml"), PRESET, 255)
    ev = evaluate_bag(toy_pipeline(), tmp_path / "b", "/cam/compressed", "/gt", label_lut=lut, progress=False)
    check_hand(ev.report)
    (tmp_path / "bad.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(Exception, match="expected a YAML mapping"):
        resolve_label_map(str(tmp_path / "bad.yaml"), PRESET, 255)


def test_unreadable_images_and_labels_are_counted(tmp_path):
    Image = bags.typestore().types[bags.IMAGE_TYPE]
    write_custom(tmp_path / "b", FRAMES)
    # a float image and a colour "label" added at new stamps, paired with each other
    t = T0 + 10 * STEP
    with BagWriter(tmp_path / "c") as w:
        for item in bags.read_image_topics(tmp_path / "b", ["/cam", "/gt"]):
            enc = "rgb8" if item.topic == "/cam" else "mono8"
            w.write(item.topic, array_to_image(item.array, enc, item.stamp_ns, "cam"), item.stamp_ns)
        w.write("/cam", Image(header=bags.make_header(t, "cam"), height=2, width=2, encoding="32FC1",
                              is_bigendian=0, step=8, data=np.zeros(16, np.uint8)), t)
        w.write("/gt", array_to_image(np.zeros((32, 32, 3), np.uint8), "rgb8", t, "cam"), t)
        t2 = t + STEP
        w.write("/cam", array_to_image(FRAMES[1][0], "rgb8", t2, "cam"), t2)
        w.write("/gt", array_to_image(np.zeros((32, 32, 3), np.uint8), "rgb8", t2, "cam"), t2)
    ev = evaluate_bag(toy_pipeline(), tmp_path / "c", "/cam", "/gt", progress=False)
    assert ev.report["warnings"] == {"bad_images": 1, "bad_labels": 1}
    assert "float encoding '32FC1' is not supported" in ev.report["warning_messages"]["bad_images"]
    assert "rgb8" in ev.report["warning_messages"]["bad_labels"]
    assert ev.report["frames"] == 5 and ev.report["timed_frames"] == 4
    check_hand({**ev.report, "frames": 3, "timed_frames": 3, "warnings": {},
                "latency_ms": {"total_ms": {"count": 3}}})


def test_stamp_matcher_pairs_in_either_order_once():
    from bisenet_ros.evaluation.recording import StampMatcher
    from bisenet_ros.evaluation.metrics import WarningCounter

    scored = []
    warn = WarningCounter()
    pairs = {10: 10, 20: 21, 30: 30}  # image stamp -> label stamp (20 within a tolerance of 21)
    m = StampMatcher(pairs, lambda pred, gt, enc, stamp: scored.append((int(pred[0, 0]), stamp)), warn,
                     image_stamps=[10, 20, 30, 40])
    one = np.ones((1, 1), np.uint8)
    m.add_ground_truth(10, one, "mono8")  # label first
    m.add_prediction(10, one * 1)
    m.add_prediction(20, one * 2)  # prediction first
    assert m.waiting == 1
    m.add_ground_truth(21, one, "mono8")
    m.add_ground_truth(21, one, "mono8")  # repeated label: used once
    m.add_prediction(40, one * 4)  # no label for it
    m.add_ground_truth(30, None, "", error="cannot decode")
    m.add_prediction(30, one * 3)
    assert scored == [(1, 10), (2, 21)] and m.waiting == 0
    assert warn.counts == {"bad_labels": 1}
    bounded = StampMatcher({i: i for i in range(5)}, lambda *a: None, warn, range(5), max_pending=2)
    for i in range(5):
        bounded.add_prediction(i, one)
    assert bounded.waiting == 2  # a live replay keeps at most max_pending waiting


def test_report_plots_name_model_and_bag_and_stack_the_stages(tmp_path, monkeypatch):
    """Every plot title says which model ran on which bag; the stacked bar's segments are the
    stages' means (and medians), the measured total drawn beside them."""
    import matplotlib.axes
    import matplotlib.figure

    from bisenet_ros.evaluation import report as rep

    titles, bars = [], []
    real_title, real_barh = matplotlib.axes.Axes.set_title, matplotlib.axes.Axes.barh
    monkeypatch.setattr(matplotlib.axes.Axes, "set_title",
                        lambda self, t, *a, **k: (titles.append(t), real_title(self, t, *a, **k))[1])
    monkeypatch.setattr(matplotlib.axes.Axes, "barh",
                        lambda self, y, w, *a, **k: (bars.append((y, w, k.get("left", 0.0))),
                                                     real_barh(self, y, w, *a, **k))[1])
    report = {"bag": "/data/drive_0815", "frames": 4, "class_names": ["a", "b"], "miou": 0.5,
              "per_class_iou": {"a": 0.4, "b": 0.6},
              "model": {"model": "bisenetv2", "weights": "/m/street.pth", "backend": "onnxruntime",
                        "device": "cpu", "input_size": "256x320"}}
    samples = {"preprocess_ms": [1.0, 3.0], "inference_ms": [10.0, 30.0], "postprocess_ms": [2.0, 2.0],
               "total_ms": [14.0, 36.0]}
    fig_titles = []
    real_suptitle = matplotlib.figure.Figure.suptitle
    monkeypatch.setattr(matplotlib.figure.Figure, "suptitle",
                        lambda self, t, *a, **k: (fig_titles.append(t), real_suptitle(self, t, *a, **k))[1])
    paths = rep.write_report(tmp_path, report, confusion=np.array([[3, 1], [0, 4]]), latency_samples=samples)
    assert {"confusion_matrix", "per_class_iou", "latency_stages", "latency_histogram"} <= set(paths)
    named = [t for t in titles + fig_titles if "bisenetv2 (street.pth) on bag drive_0815 (4 frames)" in t]
    assert len(named) == 4 and all("onnxruntime" in t for t in named), titles + fig_titles
    mean_row = [(w, left) for y, w, left in bars if isinstance(y, int) and y == 0]
    assert mean_row == [(2.0, 0.0), (20.0, 2.0), (2.0, 22.0)]
