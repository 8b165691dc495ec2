"""The segmentation node, started as a user starts it, exercised over real ROS 2 from this process.

One node process (``segmentation_node --ros-args -r image:=/cam -p weights:=...``, random 5-class
BiSeNetV2) serves every test in this module; the tests publish frames on /cam and check what
comes back on /segmentation/... against the offline pipeline.
"""
from __future__ import annotations

import json
import time

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")
from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402
from std_msgs.msg import String  # noqa: E402

from bisenet_ros.pipeline import build_pipeline  # noqa: E402
from bisenet_ros.ros.conversions import image_msg_to_array  # noqa: E402
from node_client import LATCHED, RosClient, assert_matches_offline, frame, serve_node, values  # noqa: E402

pytestmark = pytest.mark.ros
NODE = "/segmentation"
OUT = ("labels", "color", "overlay", "confidence")


@pytest.fixture(scope="module")
def node(ros_env, tiny_checkpoints, tmp_path_factory):
    log = tmp_path_factory.mktemp("node") / "node.log"
    # backend torch here and offline: the outputs are compared exactly, and two backends may break a near tie of a
    # random-weight model's logits differently (auto's choice and its quick start are tested elsewhere)
    yield from serve_node(ros_env, ["-r", "image:=/cam", "-p", f"weights:={tiny_checkpoints['bisenetv2']}",
                                     "-p", "publish_confidence:=true", "-p", "backend:=torch"], log)


@pytest.fixture(scope="module")
def client(node):
    c = RosClient("test_node_client")
    for kind in OUT:
        c.subscribe(f"{NODE}/{kind}", Image)
    c.subscribe(f"{NODE}/timing", DiagnosticArray)
    c.subscribe("/diagnostics", DiagnosticArray)
    assert c.wait_matched("/cam", Image, timeout=120), "the node did not subscribe to /cam:\n" + node.log
    assert c.wait_until(lambda: c.node.count_publishers(f"{NODE}/overlay") > 0)
    yield c
    c.close()


@pytest.fixture(scope="module")
def offline(tiny_checkpoints):
    return build_pipeline(weights=tiny_checkpoints["bisenetv2"], backend="torch")  # as the node: device auto


def roundtrip(client, array, encoding, frame_id, reply="labels"):
    msg = client.publish_image("/cam", array, encoding, frame_id)
    got = client.request("/cam", msg, f"{NODE}/{reply}")
    assert got is not None, f"no {reply} for {frame_id}"
    return msg


def test_outputs_match_offline_pipeline_with_headers(client, offline):
    rgb = frame(96, 128, 0)
    sent = roundtrip(client, rgb, "rgb8", "rgb_frame")
    fid = lambda m: m.header.frame_id == "rgb_frame"  # noqa: E731
    msgs = {k: client.wait_for(f"{NODE}/{k}", fid, 10) for k in OUT}
    timing = client.wait_for(f"{NODE}/timing", fid, 10)
    for kind, msg in {**msgs, "timing": timing}.items():
        assert msg is not None, kind
        assert msg.header.stamp == sent.header.stamp and msg.header.frame_id == "rgb_frame", kind
    expected = offline(rgb, "rgb8", outputs=("color", "overlay", "confidence"))
    labels, enc = image_msg_to_array(msgs["labels"])
    assert enc == "mono8" and labels.shape == (96, 128)
    assert_matches_offline(labels, expected.labels, offline)
    assert len(np.unique(labels)) > 1
    color, enc = image_msg_to_array(msgs["color"])
    assert enc == "rgb8"
    np.testing.assert_array_equal(color, offline.preset.palette[labels])
    overlay, enc = image_msg_to_array(msgs["overlay"])
    assert enc == "rgb8"
    assert_matches_offline(overlay, expected.overlay, offline)
    confidence, enc = image_msg_to_array(msgs["confidence"])
    assert enc == "mono8" and confidence.shape == (96, 128)
    assert np.abs(confidence.astype(int) - expected.confidence).max() <= 1


@pytest.mark.parametrize("encoding,overlay_encoding",
                         [("bgr8", "bgr8"), ("mono8", "rgb8"), ("rgba8", "rgb8"), ("mono16", "rgb8")])
def test_input_encodings(client, offline, encoding, overlay_encoding):
    rgb = frame(64, 96, 1)
    array = {"bgr8": rgb[:, :, ::-1], "mono8": rgb[:, :, 1], "mono16": rgb[:, :, 1].astype(np.uint16) * 257,
             "rgba8": np.dstack([rgb, np.full(rgb.shape[:2], 255, np.uint8)])}[encoding]
    array = np.ascontiguousarray(array)
    roundtrip(client, array, encoding, f"enc_{encoding}", reply="overlay")
    fid = lambda m: m.header.frame_id == f"enc_{encoding}"  # noqa: E731
    labels = client.wait_for(f"{NODE}/labels", fid, 10)
    overlay = client.wait_for(f"{NODE}/overlay", fid, 10)
    expected = offline(array, encoding, outputs=("overlay",))
    assert_matches_offline(image_msg_to_array(labels)[0], expected.labels, offline)
    ov, enc = image_msg_to_array(overlay)
    assert enc == overlay_encoding and ov.shape == (64, 96, 3)
    assert_matches_offline(ov, expected.overlay, offline)


def test_timing_message(client):
    roundtrip(client, frame(64, 96, 2), "rgb8", "timing_frame", reply="timing")
    msg = client.wait_for(f"{NODE}/timing", lambda m: m.header.frame_id == "timing_frame")
    assert len(msg.status) == 1
    v = values(msg.status[0])
    for key in ("wait_ms", "preprocess_ms", "inference_ms", "postprocess_ms", "total_ms", "latency_ms"):
        assert float(v[key]) >= 0, key
    stages = sum(float(v[k]) for k in ("wait_ms", "preprocess_ms", "inference_ms", "postprocess_ms"))
    assert float(v["total_ms"]) >= stages - 0.01
    assert float(v["latency_ms"]) >= float(v["total_ms"]) - 1.0  # stamp was taken before sending
    assert int(v["dropped_frames"]) >= 0 and v["batch_size"] == "1" and v["model_size"] == "64x96"


def test_legend_reaches_late_subscribers(client):
    client.subscribe(f"{NODE}/legend", String, LATCHED)
    msg = client.wait_for(f"{NODE}/legend", timeout=20)
    assert msg is not None
    legend = json.loads(msg.data)
    assert legend["num_classes"] == 5 and legend["dataset"] == "cityscapes"
    assert legend["model"] == "bisenetv2" and legend["weights"].endswith("bisenetv2_5cls.pth")
    assert [c["id"] for c in legend["classes"]] == list(range(5))
    assert legend["classes"][0] == {"id": 0, "name": "road", "color": [128, 64, 128]}


def _bad(h, w, encoding, step, nbytes, frame_id):
    msg = Image(height=h, width=w, encoding=encoding, step=step)
    msg.data = bytes(nbytes)
    msg.header.frame_id = frame_id
    return msg


def test_malformed_messages_are_refused_and_node_keeps_serving(client, node):
    bad = [
        _bad(8, 8, "32FC1", 32, 256, "bad_float"),
        _bad(8, 8, "rgb8", 24, 100, "bad_short"),
        _bad(8, 8, "rgb8", 10, 192, "bad_step"),
        _bad(0, 8, "rgb8", 24, 0, "bad_zero"),
        _bad(100000, 100000, "mono8", 100000, 16, "bad_absurd"),
        _bad(8, 8, "bayer_grbg8", 8, 64, "bad_unknown"),
    ]
    pub = client.publisher("/cam", Image)
    for msg in bad:
        pub.publish(msg)
        # the node still answers a good frame after each bad one
        roundtrip(client, frame(64, 96, 3), "rgb8", f"good_after_{msg.header.frame_id}")
    for msg in bad:
        for kind in (*OUT, "timing"):
            assert not client.messages(f"{NODE}/{kind}", lambda m: m.header.frame_id.startswith("bad_"))
    expected = "dropping image frame (frame_id 'bad_float'): float encoding"
    for _ in range(10):  # best effort: a single sample can be lost, so send again until it is seen
        if client.wait_until(lambda: expected in node.log, 1.0):
            break
        time.sleep(5.0)  # the error line is throttled to one per 5 s
        pub.publish(bad[0])
    assert expected in node.log
    log = node.log
    assert "fewer than height*step" in log or "bad_short" not in log  # throttled: at most one per 5 s
    assert "Traceback" not in log
    assert node.proc.poll() is None


def test_burst_counts_drops_and_stays_responsive(client):
    def dropped_after(frame_id: str) -> int:
        roundtrip(client, frame(64, 96, 4), "rgb8", frame_id, reply="timing")
        timing = client.wait_for(f"{NODE}/timing", lambda m: m.header.frame_id == frame_id)
        return int(values(timing.status[0])["dropped_frames"])

    before = dropped_after("before_burst")
    images = [frame(240, 320, 10 + i) for i in range(40)]
    for i, img in enumerate(images):  # a 100 Hz camera: much faster than the node segments
        client.publish_image("/cam", img, "rgb8", f"burst_{i}")
        time.sleep(0.01)
    after = dropped_after("after_burst")  # answered at once: the node stays responsive
    answered = len(client.messages(f"{NODE}/labels", lambda m: m.header.frame_id.startswith("burst_")))
    dropped = after - before
    assert answered < len(images), "a 40-frame burst should not all be segmented"
    assert dropped >= 1
    # every burst frame is answered, counted as dropped, or lost in transport (best effort);
    # +1: a re-sent after_burst frame may replace its own first copy
    assert answered + dropped <= len(images) + 1
    diag = client.wait_for("/diagnostics", lambda m: int(values(m.status[0]).get("dropped_frames", 0)) >= after)
    v = values(diag.status[0])
    assert v["model"] == "bisenetv2" and v["device"] and v["backend"] and v["weights"].endswith(".pth")
    assert float(v["fps"]) >= 0 and float(v["latency_ms_p50"]) > 0 and int(v["frames_processed"]) > 0
    # /diagnostics comes once per diagnostics_period (1 s): wait for a few of them
    assert client.wait_until(lambda: len(client.messages("/diagnostics")) >= 3, timeout=10.0)
    stamps = [m.header.stamp.sec + m.header.stamp.nanosec * 1e-9 for m in client.messages("/diagnostics")]
    assert len(stamps) >= 2 and 0.5 < (stamps[-1] - stamps[0]) / (len(stamps) - 1) < 2.0


def test_max_frame_age_drops_old_frames(client):
    dropped = lambda: int(values(client.messages("/diagnostics")[-1].status[0])["dropped_frames"])  # noqa: E731
    assert client.wait_for("/diagnostics") is not None
    assert client.set_parameters(NODE, max_frame_age_ms=2000.0).successful
    before = dropped()
    old = client.publish_image("/cam", frame(64, 96, 8), "rgb8", "too_old",
                               stamp_ns=client.node.get_clock().now().nanoseconds - 10_000_000_000)
    pub = client.publisher("/cam", Image)
    for _ in range(10):  # best effort: send again until the node has seen (and dropped) it
        pub.publish(old)
        if client.wait_until(lambda: dropped() > before, 2.0):
            break
    assert dropped() > before
    roundtrip(client, frame(64, 96, 9), "rgb8", "fresh_frame")
    assert not client.messages(f"{NODE}/labels", lambda m: m.header.frame_id == "too_old")
    assert client.set_parameters(NODE, max_frame_age_ms=0.0).successful
    roundtrip(client, frame(64, 96, 8), "rgb8", "too_old")  # accepted again once the limit is off


def test_overlay_alpha_and_switches_apply_at_once(client, offline):
    rgb = frame(64, 96, 5)
    res = client.set_parameters(NODE, overlay_alpha=0.0)
    assert res.successful, res.reason
    roundtrip(client, rgb, "rgb8", "alpha0", reply="overlay")
    ov = client.wait_for(f"{NODE}/overlay", lambda m: m.header.frame_id == "alpha0")
    np.testing.assert_array_equal(image_msg_to_array(ov)[0], rgb)
    assert client.set_parameters(NODE, overlay_alpha=1.0).successful
    roundtrip(client, rgb, "rgb8", "alpha1", reply="overlay")
    ov = client.wait_for(f"{NODE}/overlay", lambda m: m.header.frame_id == "alpha1")
    color = client.wait_for(f"{NODE}/color", lambda m: m.header.frame_id == "alpha1")
    np.testing.assert_array_equal(image_msg_to_array(ov)[0], image_msg_to_array(color)[0])
    assert not client.set_parameters(NODE, overlay_alpha=1.5).successful  # descriptor range
    assert client.set_parameters(NODE, publish_overlay=False, publish_color=False).successful
    roundtrip(client, rgb, "rgb8", "switches_off", reply="timing")
    assert client.wait_for(f"{NODE}/labels", lambda m: m.header.frame_id == "switches_off", 5)
    assert not client.messages(f"{NODE}/overlay", lambda m: m.header.frame_id == "switches_off")
    assert not client.messages(f"{NODE}/color", lambda m: m.header.frame_id == "switches_off")
    assert client.set_parameters(NODE, publish_overlay=True, publish_color=True, overlay_alpha=0.5).successful


def test_confidence_threshold_and_class_remap_at_run_time(client, tmp_path):
    """confidence_threshold applies live (unknown = 255, black in color); class_remap reloads and
    the legend, labels and colours follow the merged classes; a remap that does not fit is refused."""
    rgb = frame(64, 96, 6)
    assert client.set_parameters(NODE, confidence_threshold=0.99).successful  # random model: never that sure
    roundtrip(client, rgb, "rgb8", "thr", reply="color")
    labels = image_msg_to_array(client.wait_for(f"{NODE}/labels", lambda m: m.header.frame_id == "thr"))[0]
    color = image_msg_to_array(client.wait_for(f"{NODE}/color", lambda m: m.header.frame_id == "thr"))[0]
    assert (labels == 255).all() and (color == 0).all()
    assert client.set_parameters(NODE, confidence_threshold=0.0).successful
    remap = tmp_path / "two.yaml"
    remap.write_text("classes:\n- {name: drivable, color: [1, 2, 3], from: [road]}\n"
                     "- {name: everything_else, color: [4, 5, 6], from: rest}\n")
    assert "unknown class remap" in client.set_parameters(NODE, class_remap="nope").reason
    bad = tmp_path / "bad.yaml"
    bad.write_text("classes:\n- {name: a, from: [sky]}\n- {name: b, from: rest}\n")  # no sky in 5 classes
    assert "not a class of the model" in client.set_parameters(NODE, class_remap=str(bad)).reason
    client.subscribe(f"{NODE}/legend", String, LATCHED)
    assert client.set_parameters(NODE, class_remap=str(remap)).successful
    legend = client.wait_for(f"{NODE}/legend", lambda m: json.loads(m.data)["num_classes"] == 2, timeout=60)
    assert legend is not None and [c["name"] for c in json.loads(legend.data)["classes"]] == ["drivable",
                                                                                              "everything_else"]
    roundtrip(client, rgb, "rgb8", "remapped", reply="color")
    labels = image_msg_to_array(client.wait_for(f"{NODE}/labels", lambda m: m.header.frame_id == "remapped"))[0]
    color = image_msg_to_array(client.wait_for(f"{NODE}/color", lambda m: m.header.frame_id == "remapped"))[0]
    assert set(np.unique(labels)) <= {0, 1}
    np.testing.assert_array_equal(color, np.array([[1, 2, 3], [4, 5, 6]], np.uint8)[labels])
    assert client.set_parameters(NODE, class_remap="").successful
    assert client.wait_for(f"{NODE}/legend", lambda m: json.loads(m.data)["num_classes"] == 5
                           and m is client.messages(f"{NODE}/legend")[-1], timeout=60)


def test_weights_swap_refused_failed_and_succeeded(client, node, tiny_checkpoints, tmp_path):
    v2 = str(tiny_checkpoints["bisenetv2"])
    # refused at once: the file does not exist
    res = client.set_parameters(NODE, weights=str(tmp_path / "missing.pth"))
    assert not res.successful and "not found" in res.reason
    # read-only parameters are refused too
    assert not client.set_parameters(NODE, cameras=["a", "b"]).successful
    # inconsistent input size
    res = client.set_parameters(NODE, input_width=256)
    assert not res.successful and "input_height" in res.reason
    # a misspelt backend, and a preset of another class count than the model's (5): refused at once
    res = client.set_parameters(NODE, backend="torhc")
    assert not res.successful and "backend must be one of auto, torch" in res.reason
    res = client.set_parameters(NODE, dataset="cocostuff")
    assert not res.successful and "171 classes but the model has 5" in res.reason
    # accepted, fails in the background: reverted, reason in /diagnostics, old model keeps serving
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"this is not a checkpoint")
    assert client.set_parameters(NODE, weights=str(garbage)).successful
    assert client.wait_until(lambda: client.get_parameter(NODE, "weights") == v2, 30), "not reverted"
    diag = client.wait_for("/diagnostics", lambda m: "garbage.pth" in values(m.status[0]).get("last_error", ""))
    assert diag is not None and diag.status[0].level == diag.status[0].WARN
    assert "reload with weights=" in node.log and "failed, keeping" in node.log
    roundtrip(client, frame(64, 96, 6), "rgb8", "after_failed_swap")
    # a working swap: the BiSeNetV1 checkpoint, labels now match the offline V1 pipeline
    v1 = str(tiny_checkpoints["bisenetv1"])
    client.subscribe(f"{NODE}/legend", String, LATCHED)
    assert client.wait_for(f"{NODE}/legend", timeout=20)
    assert client.set_parameters(NODE, weights=v1).successful
    assert client.wait_for(f"{NODE}/legend", lambda m: json.loads(m.data)["model"] == "bisenetv1", 60)
    rgb = frame(64, 96, 7)
    roundtrip(client, rgb, "rgb8", "after_swap")
    labels = client.wait_for(f"{NODE}/labels", lambda m: m.header.frame_id == "after_swap")
    offline_v1 = build_pipeline(weights=v1, backend="torch")
    assert_matches_offline(image_msg_to_array(labels)[0], offline_v1(rgb, "rgb8", outputs=()).labels, offline_v1)
    diag = client.wait_for("/diagnostics", lambda m: values(m.status[0]).get("model") == "bisenetv1")
    assert values(diag.status[0])["last_error"] == ""
    # and back, so that the module's other tests see the V2 model whatever the order
    legends = len(client.messages(f"{NODE}/legend"))
    assert client.set_parameters(NODE, weights=v2).successful
    assert client.wait_until(lambda: len(client.messages(f"{NODE}/legend")) > legends, 60)
    assert json.loads(client.messages(f"{NODE}/legend")[-1].data)["model"] == "bisenetv2"
