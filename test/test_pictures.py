"""Pictures that explain themselves: the latency stage plot stacks only disjoint stages (never a
measured total on top of its own stages) and names backend, device and input size; the point
cloud picture has a title on every panel, a class legend and metres on the top-down view."""
from __future__ import annotations

import matplotlib
import matplotlib.axes
import numpy as np

matplotlib.use("Agg", force=True)

from bisenet_ros.evaluation import report as rep  # noqa: E402
from bisenet_ros.ros.live_replay import NODE_STAGES  # noqa: E402
from bisenet_ros.tools.cloud_view import cloud_figure  # noqa: E402

REPLAY_SAMPLES = {  # what replay collects: publish -> labels, and the node's own stages and total
    "end_to_end_ms": [150.0, 146.0], "node_wait_ms": [20.0, 22.0], "node_preprocess_ms": [8.0, 8.0],
    "node_inference_ms": [90.0, 88.0], "node_postprocess_ms": [12.0, 10.0], "node_total_ms": [132.0, 130.0]}


def test_replay_stages_are_disjoint():
    assert rep.stage_keys(REPLAY_SAMPLES) == ["node_wait_ms", "node_preprocess_ms", "node_inference_ms",
                                              "node_postprocess_ms"]
    assert all(rep.is_total(k) for k in ("node_total_ms", "total_ms", "end_to_end_ms"))
    # every stage the replay collects from the node is in the list: the stages sum to at most node_total
    assert {f"node_{s}" for s in NODE_STAGES} == set(REPLAY_SAMPLES) - {"end_to_end_ms"}


def test_stage_plot_stacks_stages_only_and_names_the_run(tmp_path, monkeypatch):
    bars, titles = [], []
    real_barh, real_title = matplotlib.axes.Axes.barh, matplotlib.axes.Axes.set_title
    monkeypatch.setattr(matplotlib.axes.Axes, "barh",
                        lambda self, y, w, left=0.0, **k: (bars.append((y, w, left)), real_barh(self, y, w, left=left, **k))[1])
    monkeypatch.setattr(matplotlib.axes.Axes, "set_title",
                        lambda self, t, *a, **k: (titles.append(t), real_title(self, t, *a, **k))[1])
    report = {"bag": "/data/drive", "frames_published": 2, "model": {
        "model": "bisenetv2", "weights": "/m/city.pth", "backend": "openvino", "device": "cpu", "input_size": "512x1024"}}
    paths = rep.write_report(tmp_path, report, latency_samples=REPLAY_SAMPLES, tool="replay")
    assert paths["latency_stages"].is_file()
    mean_row = [(w, left) for y, w, left in bars if y == 0]
    assert len(mean_row) == 4  # wait, preprocess, inference, postprocess: node_total is not stacked
    end = mean_row[-1][0] + mean_row[-1][1]
    assert end == np.mean(REPLAY_SAMPLES["node_wait_ms"]) + 8.0 + 89.0 + 11.0 <= np.mean(REPLAY_SAMPLES["node_total_ms"])
    stage_title = next(t for t in titles if t.startswith("Where the time goes"))
    assert "backend openvino" in stage_title and "device cpu" in stage_title and "input 512x1024" in stage_title


def test_cloud_picture_has_titles_legend_and_metres():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (60, 80, 3), dtype=np.uint8)
    labels = np.zeros((60, 80), np.uint8)
    labels[30:] = 1
    n = 500
    xyz = np.stack([rng.uniform(-3, 3, n), rng.uniform(-1, 1.5, n), rng.uniform(1, 20, n)], 1)
    cloud_labels = (xyz[:, 1] > 0).astype(np.int64)
    colours = np.array([[128, 64, 128], [70, 70, 70]], np.uint8)[cloud_labels]
    fig = cloud_figure(image, labels, xyz, colours, cloud_labels, 20.0, ["road", "building"])
    titles = [ax.get_title() for ax in fig.axes]
    assert len(titles) == 4 and all(titles), titles
    top = fig.axes[3]
    assert "metres" in top.get_xlabel() and "metres" in top.get_ylabel()
    left, right, bottom, up = top.images[0].get_extent()
    assert up > 19.0 and bottom < 0.5 and left < 0 < right  # the axes are in metres: range 20 m ahead
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert legend == ["road", "building"]
