"""Several cameras in one node (one batch), model-resolution outputs with a scaled CameraInfo,
and CompressedImage input -- each against a real node process."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")
from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from sensor_msgs.msg import CameraInfo, CompressedImage, Image  # noqa: E402

from bisenet_ros.pipeline import build_pipeline  # noqa: E402
from bisenet_ros.ros.conversions import image_msg_to_array  # noqa: E402
from node_client import RosClient, assert_matches_offline, frame, start_node, values  # noqa: E402

pytestmark = pytest.mark.ros
NODE = "/segmentation"


def test_two_cameras_are_batched_and_camera_info_is_scaled(ros_env, tiny_checkpoints, tmp_path, client):
    weights = tiny_checkpoints["bisenetv2"]
    node = start_node(ros_env, ["-p", f"weights:={weights}", "-p", "cameras:=[front, rear]",
                                "-p", "output_resolution:=model", "-p", "input_width:=64",
                                "-p", "input_height:=32"], tmp_path / "node.log")
    try:
        for cam in ("front", "rear"):
            client.subscribe(f"{NODE}/{cam}/labels", Image)
            client.subscribe(f"{NODE}/{cam}/overlay", Image)
            client.subscribe(f"{NODE}/{cam}/timing", DiagnosticArray)
            client.subscribe(f"{NODE}/{cam}/camera_info", CameraInfo)
            assert client.wait_matched(f"/{cam}/image", Image, timeout=120), node.log  # start: 30-40 s under load
            assert client.wait_matched(f"/{cam}/camera_info", CameraInfo), node.log
        assert client.wait_until(lambda: client.node.count_publishers(f"{NODE}/rear/overlay") > 0)
        # camera_info of the front camera: 160x120, fx=100, cx=79.5 (the pixel-centre image centre)
        info = CameraInfo(width=160, height=120, distortion_model="plumb_bob")
        info.k = [100.0, 0.0, 79.5, 0.0, 100.0, 59.5, 0.0, 0.0, 1.0]
        info.p = [100.0, 0.0, 79.5, -10.0, 0.0, 100.0, 59.5, 0.0, 0.0, 0.0, 1.0, 0.0]
        front, rear = frame(120, 160, 20), frame(120, 160, 21)
        # frames of both cameras arriving together while the worker is busy run as one batch
        batched = None
        for i in range(60):
            client.publisher("/front/camera_info", CameraInfo).publish(info)
            client.publish_image("/front/image", front, "rgb8", f"front_{i}")
            client.publish_image("/rear/image", rear, "bgr8", f"rear_{i}")
            batched = client.wait_for(f"{NODE}/rear/timing",
                                      lambda m: values(m.status[0]).get("batch_size") == "2", 0.05)
            if batched is not None and client.messages(f"{NODE}/front/camera_info", lambda m: m.k[0] != 0):
                break
        assert batched is not None, "frames of two cameras were never batched\n" + node.log
        fid = batched.header.frame_id
        labels = client.wait_for(f"{NODE}/rear/labels", lambda m: m.header.frame_id == fid, 10)
        overlay = client.wait_for(f"{NODE}/rear/overlay", lambda m: m.header.frame_id == fid, 10)
        lab, enc = image_msg_to_array(labels)
        assert enc == "mono8" and lab.shape == (32, 64)  # model resolution
        ov, enc = image_msg_to_array(overlay)
        assert enc == "bgr8" and ov.shape == (32, 64, 3)
        offline = build_pipeline(weights=weights, input_size=(32, 64), output_resolution="model")
        expected = offline(rear, "bgr8", outputs=()).labels
        assert (lab == expected).mean() >= 0.999  # batched vs single: float noise at most
        assert values(batched.status[0])["model_size"] == "32x64"
        # front labels and the scaled camera_info share the image's header
        ci = client.wait_for(f"{NODE}/front/camera_info", lambda m: m.k[0] != 0, timeout=10)
        assert ci is not None, node.log
        assert (ci.width, ci.height) == (64, 32)
        assert ci.header.frame_id.startswith("front_")
        sx, sy = 64 / 160, 32 / 120
        np.testing.assert_allclose(ci.k, [100 * sx, 0, 80 * sx - 0.5, 0, 100 * sy, 60 * sy - 0.5, 0, 0, 1])
        np.testing.assert_allclose(ci.p[3], -10 * sx)
        assert client.wait_for(f"{NODE}/front/labels", lambda m: m.header.frame_id == ci.header.frame_id, 10)
        # no camera_info was given for rear: beside its labels an uncalibrated one (K all zero) of the output size
        rear_ci = client.wait_for(f"{NODE}/rear/camera_info", lambda m: m.header.frame_id == fid, 10)
        assert rear_ci is not None and (rear_ci.width, rear_ci.height) == (64, 32) and not any(rear_ci.k)
    finally:
        rc = node.stop()
    assert rc == 0 and "Traceback" not in node.log, node.log


def test_compressed_input(ros_env, tiny_checkpoints, tmp_path, client):
    weights = tiny_checkpoints["bisenetv2"]
    node = start_node(ros_env, ["-r", "image:=/cam_c", "-p", f"weights:={weights}",
                                "-p", "input_transport:=compressed"], tmp_path / "node.log")
    try:
        client.subscribe(f"{NODE}/labels", Image)
        client.subscribe(f"{NODE}/overlay", Image)
        assert client.wait_matched("/cam_c/compressed", CompressedImage, timeout=120), node.log
        assert client.wait_until(lambda: client.node.count_publishers(f"{NODE}/overlay") > 0)
        bgr = frame(64, 96, 30)[:, :, ::-1].copy()
        msg = CompressedImage(format="png")
        msg.header.frame_id = "png_frame"
        msg.data = cv2.imencode(".png", bgr)[1].tobytes()
        client.publisher("/cam_c/compressed", CompressedImage)
        reply = client.request("/cam_c/compressed", msg, f"{NODE}/overlay")
        assert reply is not None, node.log
        labels = client.wait_for(f"{NODE}/labels", lambda m: m.header.frame_id == "png_frame")
        offline = build_pipeline(weights=weights)
        assert_matches_offline(image_msg_to_array(labels)[0], offline(bgr, "bgr8", outputs=()).labels, offline)
        assert reply.encoding == "bgr8"
        # an undecodable payload is refused with one line, the node keeps serving
        bad = CompressedImage(format="jpeg")
        bad.header.frame_id = "bad_jpeg"
        bad.data = b"\xff\xd8 definitely not a jpeg"
        client.publisher("/cam_c/compressed", CompressedImage).publish(bad)
        assert client.wait_until(lambda: "cannot be decoded" in node.log, 15), node.log
        msg.header.frame_id = "png_again"
        assert client.request("/cam_c/compressed", msg, f"{NODE}/labels") is not None
        assert not client.messages(f"{NODE}/labels", lambda m: m.header.frame_id == "bad_jpeg")
    finally:
        rc = node.stop()
    assert rc == 0 and "Traceback" not in node.log, node.log


def test_mono16_labels_above_256_classes_and_outputs_only_on_demand(ros_env, tmp_path):
    """The node class in this process (own context) with a random 300-class BiSeNetV2: labels are
    mono16, and colour/overlay/confidence are computed only once someone subscribes."""
    import threading

    import torch
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.parameter import Parameter

    from bisenet_ros.models import build_model
    from bisenet_ros.ros.node import SegmentationNode

    torch.manual_seed(0)
    weights = tmp_path / "v2_300.pth"
    torch.save(build_model("bisenetv2", num_classes=300).state_dict(), weights)
    ctx = rclpy.Context()
    rclpy.init(context=ctx)
    node = SegmentationNode(context=ctx, cli_args=["--ros-args", "-r", "image:=/cam300"],
                            parameter_overrides=[Parameter("weights", value=str(weights)),
                                                 Parameter("device", value="cpu"),
                                                 Parameter("backend", value="torch")])
    executor = SingleThreadedExecutor(context=ctx)
    executor.add_node(node)
    spinner = threading.Thread(target=executor.spin, daemon=True)
    spinner.start()
    requested: list[set] = []  # the outputs the node asks the pipeline for, per batch
    start = node.core.pipeline.start  # the model thread's stage: the outputs are chosen there
    node.core.pipeline.start = lambda images, encodings, outputs: (  # backend torch: no swap after a measurement
        requested.append(set(outputs)) or start(images, encodings, outputs))
    client = RosClient("test_mono16_client")
    try:
        client.subscribe(f"{NODE}/labels", Image)
        assert client.wait_matched("/cam300", Image, timeout=120)
        rgb = frame(64, 96, 40)
        msg = client.publish_image("/cam300", rgb, "rgb8", "many_classes")
        reply = client.request("/cam300", msg, f"{NODE}/labels")
        assert reply is not None
        # nobody subscribes to color/overlay/confidence: only labels were computed (and the perception
        # health statistics, which the node's own /diagnostics part asks for when it is enabled)
        health = {"health"} if node.core.perception.enabled else set()
        assert requested and requested[-1] == health
        client.subscribe(f"{NODE}/overlay", Image)
        assert client.wait_until(lambda: node.core.cameras[0].publishers["overlay"].get_subscription_count() > 0)
        msg.header.frame_id = "with_overlay_subscriber"
        assert client.request("/cam300", msg, f"{NODE}/overlay") is not None
        assert requested[-1] == {"overlay"} | health
        labels, enc = image_msg_to_array(reply)
        assert enc == "mono16" and labels.dtype == np.uint16 and reply.step == 2 * 96
        expected = build_pipeline(weights=weights, device="cpu", backend="torch")(rgb, "rgb8", outputs=()).labels
        np.testing.assert_array_equal(labels, expected)
        assert labels.max() < 300
    finally:
        client.close()
        node.close()
        executor.shutdown(timeout_sec=2.0)
        rclpy.shutdown(context=ctx)
        spinner.join(timeout=5.0)
