"""The node as a ROS 2 user expects it, over real ROS 2 from another process.

- ``ros2 param dump``: one batched GetParameters over every name answers every value;
- lazy work like image_proc: nobody subscribed -> no forward pass (counted in /diagnostics);
- ``~/camera_info`` beside every labels frame; input camera_info beside the remapped image topic;
- ``~/labels/compressed`` (PNG) and ``~/overlay/compressed`` (JPEG);
- /diagnostics WARNs when the input falls below ``expected_rate`` or stops;
- the lifecycle variant through configure/activate/deactivate/cleanup with lifecycle_msgs services.
"""
from __future__ import annotations

import sys
import time

import cv2
import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")
from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from rcl_interfaces.msg import ParameterType  # noqa: E402
from rcl_interfaces.srv import GetParameters, ListParameters  # noqa: E402
from sensor_msgs.msg import CameraInfo, CompressedImage, Image  # noqa: E402

from bisenet_ros.ros.conversions import image_msg_to_array  # noqa: E402
from bisenet_ros.ros.conversions import output_camera_info  # noqa: E402
from bisenet_ros.ros.parameters import PARAMETERS  # noqa: E402
from node_client import RosClient, frame, serve_node, start_node, values  # noqa: E402

pytestmark = pytest.mark.ros
NODE = "/segmentation"
CAM = "/conv/image_raw"


@pytest.fixture(scope="module")
def node(ros_env, tiny_checkpoints, tmp_path_factory):
    log = tmp_path_factory.mktemp("conv") / "node.log"
    yield from serve_node(ros_env, ["-r", f"image:={CAM}", "-p", f"weights:={tiny_checkpoints['bisenetv2']}",
                                     "-p", "input_timeout:=1.5", "-p", "device:=cpu"], log)


@pytest.fixture(scope="module")
def client(node):
    c = RosClient("test_conventions_client")
    c.subscribe("/diagnostics", DiagnosticArray)
    assert c.wait_matched(CAM, Image, 120), "the node did not subscribe to " + CAM + ":\n" + node.log
    yield c
    c.close()


def node_status(client, pred=lambda s: True, timeout: float = 30.0):
    """The next /diagnostics status of the node satisfying ``pred`` (None after ``timeout``)."""
    seen = len(client.messages("/diagnostics"))
    msg = client.wait_for("/diagnostics", lambda m: client.messages("/diagnostics").index(m) >= seen
                          and any(s.name == f"{NODE}: segmentation" and pred(s) for s in m.status), timeout)
    return None if msg is None else next(s for s in msg.status if s.name == f"{NODE}: segmentation" and pred(s))


def publish_until(client, pred, timeout: float = 40.0, rate_hz: float = 10.0):
    """Publish frames on CAM at ``rate_hz`` until a /diagnostics status satisfies ``pred``."""
    deadline = time.monotonic() + timeout
    found = []
    n = 0
    while time.monotonic() < deadline and not found:
        client.publish_image(CAM, frame(48, 64, n), "rgb8", f"paced_{n}")
        n += 1
        found = [s for m in client.messages("/diagnostics")[-3:] for s in m.status
                 if s.name == f"{NODE}: segmentation" and pred(s)]
        time.sleep(1.0 / rate_hz)
    return found[0] if found else None


def test_lazy_no_subscriber_no_inference(client, node):
    # no subscription to any output: frames arrive (idle_frames grows) but no forward pass runs
    idle = publish_until(client, lambda s: int(values(s)["idle_frames"]) >= 5)
    assert idle is not None, node.log
    assert values(idle)["forward_passes"] == "0" and values(idle)["frames_processed"] == "0"
    assert idle.message == "no subscribers: not segmenting"
    # always_process forces the work, still without any subscriber
    assert client.set_parameters(NODE, always_process=True).successful
    forced = publish_until(client, lambda s: int(values(s)["forward_passes"]) > 0)
    assert forced is not None, node.log
    assert client.set_parameters(NODE, always_process=False).successful


def test_batched_get_parameters_returns_every_value(client):
    names = client.call(ListParameters, f"{NODE}/list_parameters", ListParameters.Request()).result.names
    assert set(PARAMETERS) <= set(names)
    response = client.call(GetParameters, f"{NODE}/get_parameters", GetParameters.Request(names=list(names)))
    assert len(response.values) == len(names)  # one unset parameter used to empty the whole answer
    got = dict(zip(names, response.values))
    assert [n for n, v in got.items() if v.type == ParameterType.PARAMETER_NOT_SET] == []
    assert got["mean"].type == ParameterType.PARAMETER_DOUBLE_ARRAY and list(got["mean"].double_array_value) == []
    assert got["std"].type == ParameterType.PARAMETER_DOUBLE_ARRAY
    assert got["cameras"].type == ParameterType.PARAMETER_STRING_ARRAY
    assert got["expected_rate"].type == ParameterType.PARAMETER_DOUBLE
    # the typed array takes three values at run time (a reload), and read-only stays read-only
    assert not client.set_parameters(NODE, cameras=["a"]).successful


def _info(width: int, height: int) -> CameraInfo:
    info = CameraInfo(width=width, height=height, distortion_model="plumb_bob")
    info.k = [100.0, 0.0, 63.5, 0.0, 101.0, 47.5, 0.0, 0.0, 1.0]
    info.p = [100.0, 0.0, 63.5, 0.0, 0.0, 101.0, 47.5, 0.0, 0.0, 0.0, 1.0, 0.0]
    info.d = [0.0] * 5
    info.r = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
    return info


def test_camera_info_beside_every_labels_frame_and_compressed_outputs(client, node):
    for topic, msg_type in ((f"{NODE}/labels", Image), (f"{NODE}/overlay", Image), (f"{NODE}/camera_info", CameraInfo),
                            (f"{NODE}/labels/compressed", CompressedImage),
                            (f"{NODE}/overlay/compressed", CompressedImage)):
        client.subscribe(topic, msg_type)
    # the input camera_info is taken beside the remapped image topic (image_transport's rule)
    assert client.wait_matched("/conv/camera_info", CameraInfo), node.log
    assert client.node.count_subscribers("/camera_info") == 0
    info_pub = client.publisher("/conv/camera_info", CameraInfo)
    deadline, k = time.monotonic() + 60, None
    i = 0
    while time.monotonic() < deadline:
        info_pub.publish(_info(128, 96))
        msg = client.publish_image(CAM, frame(96, 128, 40 + i), "rgb8", f"with_info_{i}")
        assert client.request(CAM, msg, f"{NODE}/labels") is not None, node.log
        got = client.wait_for(f"{NODE}/camera_info", lambda m, f=f"with_info_{i}": m.header.frame_id == f, 10)
        assert got is not None, "no ~/camera_info beside the labels"
        assert got.header.stamp == msg.header.stamp and (got.width, got.height) == (128, 96)
        k = list(got.k)
        if k[0] == 100.0:  # the node had the CameraInfo before this frame
            break
        i += 1
    assert k == _info(128, 96).k.tolist(), k
    fid = f"with_info_{i}"
    labels = image_msg_to_array(client.wait_for(f"{NODE}/labels", lambda m: m.header.frame_id == fid))[0]
    png = client.wait_for(f"{NODE}/labels/compressed", lambda m: m.header.frame_id == fid, 10)
    assert png is not None and png.format == "mono8; png compressed mono8"
    decoded = cv2.imdecode(np.frombuffer(png.data, np.uint8), cv2.IMREAD_UNCHANGED)
    np.testing.assert_array_equal(decoded, labels)  # PNG: the class ids exactly
    jpeg = client.wait_for(f"{NODE}/overlay/compressed", lambda m: m.header.frame_id == fid, 10)
    overlay = image_msg_to_array(client.wait_for(f"{NODE}/overlay", lambda m: m.header.frame_id == fid))[0]
    assert jpeg is not None and jpeg.format == "rgb8; jpeg compressed bgr8"
    rgb = cv2.cvtColor(cv2.imdecode(np.frombuffer(jpeg.data, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    assert rgb.shape == overlay.shape and np.abs(rgb.astype(int) - overlay).mean() < 12
    assert jpeg.header.stamp == png.header.stamp


def test_output_camera_info_without_input_is_uncalibrated():
    from std_msgs.msg import Header

    header = Header(frame_id="cam")
    out = output_camera_info(None, header, 64, 48)
    assert (out.width, out.height, out.header.frame_id) == (64, 48, "cam") and not any(out.k)
    scaled = output_camera_info(_info(128, 96), header, 64, 48)
    assert scaled.k[0] == 50.0 and scaled.k[2] == pytest.approx((63.5 + 0.5) * 0.5 - 0.5)
    same = output_camera_info(_info(128, 96), header, 128, 96)
    assert list(same.k) == list(_info(128, 96).k) and same.header.frame_id == "cam"


def test_diagnostics_warn_when_input_slow_or_stopped(client, node):
    assert client.set_parameters(NODE, expected_rate=50.0).successful
    slow = publish_until(client, lambda s: "below the expected 50 Hz" in s.message, rate_hz=5.0)
    assert slow is not None and slow.level == slow.WARN, node.log
    assert client.set_parameters(NODE, expected_rate=0.0).successful
    ok = publish_until(client, lambda s: s.level == s.OK, rate_hz=5.0)
    assert ok is not None
    stopped_at = time.monotonic()  # the camera stops here
    stopped = node_status(client, lambda s: "input stopped" in s.message, timeout=30)
    assert stopped is not None and stopped.level == stopped.WARN
    took = time.monotonic() - stopped_at
    print(f"camera stopped: /diagnostics WARN '{stopped.message}' after {took:.1f} s (input_timeout 1.5 s)")
    assert took < 15  # input_timeout 1.5 s + one period; generous under load
    assert float(values(stopped)["since_last_image_s"]) >= 1.5


# -- the lifecycle variant --------------------------------------------------------------------------
LC = "/lc/segmentation"


def _transition(client, transition_id: int) -> bool:
    from lifecycle_msgs.msg import Transition
    from lifecycle_msgs.srv import ChangeState

    request = ChangeState.Request(transition=Transition(id=transition_id))
    return client.call(ChangeState, f"{LC}/change_state", request, timeout=120).success


def _state(client) -> str:
    from lifecycle_msgs.srv import GetState

    return client.call(GetState, f"{LC}/get_state", GetState.Request(), retry_every=5).current_state.label


def test_lifecycle_transitions_through_real_services(ros_env, tiny_checkpoints, tmp_path):
    from lifecycle_msgs.msg import Transition

    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint")
    proc = start_node(ros_env, ["-r", "__ns:=/lc", "-r", "image:=/lc_cam/image_raw", "-r", "camera_info:=/lc_info",
                                "-p", f"weights:={garbage}", "-p", "device:=cpu"], tmp_path / "lc.log",
                      command=[sys.executable, "-m", "bisenet_ros.ros.lifecycle"])
    client = RosClient("test_lifecycle_client")
    try:
        client.subscribe(f"{LC}/labels", Image)
        client.subscribe("/diagnostics", DiagnosticArray)
        # unconfigured: parameter services answer at once, nothing is subscribed
        assert _state(client) == "unconfigured", proc.log
        assert client.get_parameter(LC, "weights") == str(garbage)
        assert client.node.count_subscribers("/lc_cam/image_raw") == 0
        # configure fails on a file that is not a checkpoint: stays unconfigured, one error line
        assert not _transition(client, Transition.TRANSITION_CONFIGURE)
        assert _state(client) == "unconfigured" and "configure failed" in proc.log
        assert client.set_parameters(LC, weights=str(tiny_checkpoints["bisenetv2"])).successful
        assert _transition(client, Transition.TRANSITION_CONFIGURE), proc.log
        assert _state(client) == "inactive"
        assert client.node.count_subscribers("/lc_cam/image_raw") == 0
        # activate: subscribes (camera_info where it is remapped to) and segments
        assert _transition(client, Transition.TRANSITION_ACTIVATE)
        assert _state(client) == "active"
        assert client.wait_matched("/lc_cam/image_raw", Image), proc.log
        assert client.wait_matched("/lc_info", CameraInfo)
        msg = client.publish_image("/lc_cam/image_raw", frame(64, 96, 7), "rgb8", "lc_frame")
        assert client.request("/lc_cam/image_raw", msg, f"{LC}/labels") is not None, proc.log
        # deactivate: subscriptions and publishers go, the model stays
        assert _transition(client, Transition.TRANSITION_DEACTIVATE)
        assert _state(client) == "inactive"
        assert client.wait_until(lambda: client.node.count_subscribers("/lc_cam/image_raw") == 0
                                 and client.node.count_publishers(f"{LC}/labels") == 0, 20)
        # cleanup: the model is released; /diagnostics says so
        assert _transition(client, Transition.TRANSITION_CLEANUP)
        assert _state(client) == "unconfigured"
        diag = client.wait_for("/diagnostics", lambda m: any(
            s.name.startswith(f"{LC}:") and s.message == "unconfigured: no model loaded" for s in m.status), 20)
        assert diag is not None
        # and again: configure + activate from scratch works
        assert _transition(client, Transition.TRANSITION_CONFIGURE)
        assert _transition(client, Transition.TRANSITION_ACTIVATE)
        assert client.wait_matched("/lc_cam/image_raw", Image)
    finally:
        client.close()
        rc = proc.stop()
    assert rc == 0 and "Traceback" not in proc.log, proc.log[-3000:]


def test_output_qos_overridden_from_a_parameter_file(ros_env, tiny_checkpoints, tmp_path):
    """Output publishers take QoS overrides the ROS 2 way (QoSOverridingOptions): a parameter file's
    ``qos_overrides.<topic>.publisher.reliability`` (nested or as one dotted key) applies to that
    publisher only; the others keep output_reliability/output_depth."""
    from rclpy.qos import ReliabilityPolicy

    ns = "/qos_test/segmentation"  # its own namespace: the module's node is /segmentation
    params = tmp_path / "qos.yaml"
    params.write_text(f"""{ns}:
  ros__parameters:
    weights: {tiny_checkpoints['bisenetv2']}
    device: cpu
    qos_overrides:
      {ns}/labels:
        publisher:
          reliability: best_effort
          depth: 4
    qos_overrides.{ns}/color.publisher.reliability: best_effort
""")
    proc = start_node(ros_env, ["-r", "__ns:=/qos_test", "-r", "image:=/qos_cam", "--params-file", str(params)],
                      tmp_path / "node.log")
    client = RosClient("test_qos_client")
    try:
        def reliability(kind):
            infos = client.node.get_publishers_info_by_topic(f"{ns}/{kind}")
            return infos[0].qos_profile.reliability if infos else None

        kinds = ("labels", "color", "overlay", "timing")
        assert client.wait_until(lambda: all(reliability(k) is not None for k in kinds), 120), proc.log
        assert [reliability(k) for k in kinds] == [ReliabilityPolicy.BEST_EFFORT, ReliabilityPolicy.BEST_EFFORT,
                                                   ReliabilityPolicy.RELIABLE, ReliabilityPolicy.RELIABLE]
        assert client.get_parameter(ns, f"qos_overrides.{ns}/labels.publisher.reliability") == "best_effort"
        assert client.get_parameter(ns, f"qos_overrides.{ns}/labels.publisher.depth") == 4
        assert client.get_parameter(ns, f"qos_overrides.{ns}/overlay.publisher.depth") == 1
    finally:
        client.close()
        rc = proc.stop()
    assert rc == 0 and "Traceback" not in proc.log, proc.log


def test_client_sends_an_idempotent_request_again_when_the_answer_does_not_come(ros_env, client):
    """``RosClient.call(retry_every=...)``: a request whose answer is lost (here: the server sits on
    the first one) is sent again, and the answer to the second is returned; without it, a timeout."""
    import threading

    from lifecycle_msgs.srv import GetState
    from rclpy.callback_groups import ReentrantCallbackGroup
    from rclpy.executors import MultiThreadedExecutor

    ctx = rclpy.Context()
    rclpy.init(context=ctx)
    server = rclpy.create_node("slow_state_server", context=ctx)
    release, calls, answered = threading.Event(), [], []

    def answer(request, response):
        calls.append(request)
        response.current_state.label = f"answer {len(calls)}"
        if len(calls) == 1:
            release.wait(20)  # the first answer comes only after the test
        answered.append(request)
        return response

    server.create_service(GetState, "/slow/get_state", answer, callback_group=ReentrantCallbackGroup())
    executor = MultiThreadedExecutor(num_threads=3, context=ctx)  # the next request while the first waits
    executor.add_node(server)
    spinner = threading.Thread(target=executor.spin, daemon=True)
    spinner.start()
    try:
        got = client.call(GetState, "/slow/get_state", GetState.Request(), timeout=20, retry_every=1.0)
        assert got.current_state.label == "answer 2" and len(calls) == 2
        with pytest.raises(TimeoutError, match="did not answer"):
            calls.clear()
            client.call(GetState, "/slow/get_state", GetState.Request(), timeout=2)
    finally:
        release.set()
        client.wait_until(lambda: len(answered) == 3, 10)
        executor.shutdown(timeout_sec=5)
        server.destroy_node()
        rclpy.try_shutdown(context=ctx)
        spinner.join(10)
