"""The node under hostile input (issue 13): what one message may cost, one bad frame never costs
another camera its frame, every failure is counted and reported, logs cannot be forged, wrong
stamps stay out of the latency statistics, a reload racing shutdown is quiet."""
from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
import tracemalloc

import cv2
import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")
from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from sensor_msgs.msg import CompressedImage, Image  # noqa: E402

from bisenet_ros.errors import ImageError  # noqa: E402
from bisenet_ros.data.images import check_compressed  # noqa: E402
from node_client import frame, start_node, values  # noqa: E402
from test_hostile_inputs import huge_jpeg  # noqa: E402

pytestmark = pytest.mark.ros
NODE = "/segmentation"


def _compressed(bgr: np.ndarray, frame_id: str, stamp_sec: int | None = None) -> CompressedImage:
    msg = CompressedImage(format="jpeg")
    msg.header.frame_id = frame_id
    if stamp_sec is not None:
        msg.header.stamp.sec = stamp_sec
    msg.data = cv2.imencode(".jpg", bgr)[1].tobytes()
    return msg


def test_hostile_jpeg_header_check_is_cheap():
    """The 630-byte JPEG claiming 32768x32768 is refused from its header: no pixel decoded."""
    data = huge_jpeg()
    assert len(data) < 700
    tracemalloc.start()
    with pytest.raises(ImageError, match="32768x32768"):
        check_compressed(data, "compressed image (jpeg)")
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 64 * 1024  # bytes: nothing image-sized is ever allocated


def test_hostile_frames_never_displace_a_good_camera(ros_env, tiny_checkpoints, tmp_path, client):
    """cameras good + bad, compressed input: the bad camera streams 32768^2 JPEG headers and frames
    with negative stamps; the good camera keeps its answers; failures turn /diagnostics WARN."""
    node = start_node(ros_env, ["-p", f"weights:={tiny_checkpoints['bisenetv2']}", "-p", "cameras:=[good, bad]",
                                "-p", "input_transport:=compressed", "-p", "max_frame_age_ms:=5000.0"],
                      tmp_path / "node.log")
    try:
        client.subscribe(f"{NODE}/good/labels", Image)
        client.subscribe(f"{NODE}/bad/labels", Image)
        client.subscribe("/diagnostics", DiagnosticArray)
        for cam in ("good", "bad"):
            assert client.wait_matched(f"/{cam}/image/compressed", CompressedImage, timeout=90), node.log
        good = _compressed(frame(48, 64, 1)[:, :, ::-1].copy(), "good_0")
        assert client.request("/good/image/compressed", good, f"{NODE}/good/labels", timeout=60), node.log
        hostile = CompressedImage(format="jpeg")
        hostile.data = huge_jpeg()
        negative = _compressed(frame(48, 64, 2), "negative", stamp_sec=-5)
        good_pub = client.publisher("/good/image/compressed", CompressedImage)
        bad_pub = client.publisher("/bad/image/compressed", CompressedImage)
        sent = 30
        for i in range(sent):  # one bad message per good frame (depth 1: a burst would keep only its last)
            if i % 3 == 2:
                bad_pub.publish(negative)  # waiting together with the good frame: one batch
            else:
                hostile.header.frame_id = f"hostile_{i}"
                bad_pub.publish(hostile)
            good.header.frame_id = f"good_{i + 1}"
            good.header.stamp = client.node.get_clock().now().to_msg()
            good_pub.publish(good)
            client.wait_for(f"{NODE}/good/labels", lambda m, fid=good.header.frame_id: m.header.frame_id == fid, 2.0)
        answered = {m.header.frame_id for m in client.messages(f"{NODE}/good/labels")}
        got = sum(f"good_{i + 1}" in answered for i in range(sent))
        assert got >= 0.95 * sent, f"good camera answered {got}/{sent}\n{node.log}"
        assert not client.messages(f"{NODE}/bad/labels")
        diag = client.wait_for("/diagnostics", lambda m: "bad:" in m.status[0].message, 15)
        assert diag is not None, node.log
        status = diag.status[0]
        assert status.level == status.WARN and "out of range" in status.message
        assert int(values(status)["rejected_frames"]) > 0
    finally:
        rc = node.stop()
    assert rc == 0 and "Traceback" not in node.log, node.log


def test_forged_log_lines_and_implausible_stamps(ros_env, tiny_checkpoints, tmp_path, client):
    node = start_node(ros_env, ["-r", "image:=/cam", "-p", f"weights:={tiny_checkpoints['bisenetv2']}"],
                      tmp_path / "node.log")
    try:
        client.subscribe(f"{NODE}/labels", Image)
        client.subscribe("/diagnostics", DiagnosticArray)
        assert client.wait_matched("/cam", Image, timeout=90), node.log
        forged = "cam\n[ERROR] [0.0] [segmentation]: forged line \x1b[31mred" + "A" * 200_000
        # re-sent until logged: the first one can meet input_reliability auto's switch to reliable
        for _ in range(20):
            client.publish_image("/cam", frame(8, 8, 3)[:, :, 0], "bayer_rggb8", forged)
            if client.wait_until(lambda: "unsupported encoding" in node.log, 1.0):
                break
        lines = [ln for ln in node.log.splitlines() if "forged line" in ln]
        assert lines, node.log
        for line in lines:  # every mention is the escaped, shortened frame_id: no forged line of its own
            assert "unsupported encoding" in line and len(line) < 1000, line[:2000]
            assert "\\n[ERROR]" in line and "\\x1b[31m" in line, line[:2000]
        # a frame stamped -5 s and one far in the future: answered, but not in the latency figures
        img = frame(48, 64, 4)
        for sec in (-5, 2_000_000_000):
            msg = Image(height=48, width=64, encoding="rgb8", step=64 * 3, data=img.tobytes())
            msg.header.stamp.sec = sec
            msg.header.frame_id = f"stamp_{sec}"
            assert client.request("/cam", msg, f"{NODE}/labels"), node.log
        diag = client.wait_for("/diagnostics", lambda m: int(values(m.status[0]).get("frames_processed", -1)) >= 2, 15)
        assert diag is not None, node.log
        assert values(diag.status[0])["latency_ms_max"] == ""  # no plausible latency at all
    finally:
        rc = node.stop()
    assert rc == 0 and "Traceback" not in node.log, node.log


def test_a_burst_overwriting_the_input_queue_is_counted_frame_for_frame(ros_env, tiny_checkpoints, tmp_path,
                                                                      client):
    """200 frames published at once by one reliable camera: the node's keep-last queue of depth 1
    keeps few of them; the publisher's sequence numbers count the others, so every frame is
    segmented, dropped or lost in transport, none unaccounted and none counted twice."""
    from rclpy.qos import QoSProfile, ReliabilityPolicy

    node = start_node(ros_env, ["-r", "image:=/cam_burst", "-p", f"weights:={tiny_checkpoints['bisenetv2']}",
                                "-p", "backend:=torch", "-p", "max_frame_age_ms:=60000.0",
                                "-p", "diagnostics_period:=0.5"], tmp_path / "node.log")
    keys = ("frames_processed", "dropped_frames", "rejected_frames", "failed_frames", "frames_lost_in_transport")
    try:
        client.subscribe(f"{NODE}/labels", Image)
        client.subscribe("/diagnostics", DiagnosticArray)
        pub = client.publisher("/cam_burst", Image, QoSProfile(depth=200, reliability=ReliabilityPolicy.RELIABLE))
        assert client.wait_matched("/cam_burst", Image), node.log
        first = client.publish_image("/cam_burst", frame(48, 64, 0), "rgb8", "burst_first")
        assert client.request("/cam_burst", first, f"{NODE}/labels", timeout=60), node.log

        def ours(m):
            return m.status and m.status[0].name.endswith("segmentation")

        def settled(m):  # the node followed our reliable publisher: its input refresh has run
            return ours(m) and values(m.status[0]).get("input_reliability") == "reliable"
        assert client.wait_for("/diagnostics", settled, 30) is not None, node.log
        ready = client.publish_image("/cam_burst", frame(48, 64, 0), "rgb8", "burst_ready")
        assert client.request("/cam_burst", ready, f"{NODE}/labels", timeout=60), node.log  # after the
        seen = len(client.messages("/diagnostics", ours))  # re-subscription: the numbers count from here
        assert client.wait_until(lambda: len(client.messages("/diagnostics", ours)) > seen, 10), node.log
        before = values(client.messages("/diagnostics", ours)[-1].status[0])
        images = [frame(48, 64, i + 1) for i in range(200)]
        for i, image in enumerate(images):  # back to back through the same (depth 200) publisher
            client.publish_image("/cam_burst", image, "rgb8", f"burst_{i}")
        sent = len(images)

        def accounted(m):
            if not ours(m):
                return False
            now = values(m.status[0])
            return sum(int(now[k]) - int(before[k]) for k in keys) >= sent
        got = client.wait_for("/diagnostics", accounted, 60)
        assert got is not None, f"{values(client.messages('/diagnostics', ours)[-1].status[0])}\n{node.log}"
        seen = len(client.messages("/diagnostics", ours))  # a late or double count shows in the next ones
        assert client.wait_until(lambda: len(client.messages("/diagnostics", ours)) >= seen + 2, 10), node.log
        after = values(client.messages("/diagnostics", ours)[-1].status[0])
        delta = {k: int(after[k]) - int(before[k]) for k in keys}
        assert sum(delta.values()) == sent, delta
        assert delta["frames_lost_in_transport"] > 0 and delta["frames_processed"] >= 1, delta
    finally:
        rc = node.stop()
    assert rc == 0 and "Traceback" not in node.log, node.log


# -- in-process: the node class with its own context -----------------------------------------------


@pytest.fixture
def inproc(ros_env, tiny_checkpoints):
    from bisenet_ros.ros.node import SegmentationNode

    ctx = rclpy.Context()
    rclpy.init(context=ctx)
    node = SegmentationNode(context=ctx, parameter_overrides=[
        Parameter("weights", value=str(tiny_checkpoints["bisenetv2"])),
        Parameter("cameras", value=["a", "b"])])
    yield node, ctx
    node.close()
    rclpy.try_shutdown(context=ctx)


def test_one_failing_frame_costs_no_other_camera_and_is_reported(inproc):
    """A worker exception (here MemoryError for camera b's frame) is isolated from the batch,
    counted per camera and reported by /diagnostics as WARN with the reason."""
    from bisenet_ros.ros.cameras import Frame

    node, _ = inproc
    cam_a, cam_b = node.core.cameras
    published, diagnostics = [], []
    node.core.outputs.publish = lambda cam, frame, res, n, pipe: published.append(cam.label)
    node.core.diagnostics.publisher.publish = diagnostics.append
    real = node.core.pipeline.start

    def start(images, encodings, outputs=()):  # the model pass of a batch with b's frame fails
        if any(img.shape[0] == 40 for img in images):
            raise MemoryError("cannot allocate 3.5 GB")
        return real(images, encodings, outputs)

    node.core.pipeline.start = start
    frames = []
    for cam, h in ((cam_a, 48), (cam_b, 40)):
        msg = Image(height=h, width=64, encoding="rgb8", step=64 * 3, data=frame(h, 64, 5).tobytes())
        msg.header.frame_id = f"{cam.label}_frame"
        f = Frame(msg, time.perf_counter(), image=frame(h, 64, 5), encoding="rgb8")
        frames.append((cam, f))
    node.core.worker.process(frames)
    assert published == ["a"]
    assert (cam_a.failed, cam_b.failed) == (0, 1)
    node.core.diagnostics.publish()
    status = diagnostics[-1].status[0]
    assert status.level == status.WARN and "b: 1 frames failed (cannot allocate 3.5 GB)" in status.message
    assert values(status)["failed_frames"] == "1"
    node.core.diagnostics.publish()  # reported once: the next period is clean again
    assert "frames failed" not in diagnostics[-1].status[0].message


def test_reload_racing_shutdown_is_quiet(inproc, tiny_checkpoints):
    """SIGINT right after a weights change: the context goes away while the reload runs."""
    import bisenet_ros.ros.reconfigure as node_module

    node, ctx = inproc
    started, release = threading.Event(), threading.Event()
    real = node_module.build_pipeline

    def slow_build(*args, **kwargs):
        started.set()
        release.wait(30)
        return real(*args, **kwargs)

    errors = []
    old_hook = threading.excepthook
    threading.excepthook = lambda info: errors.append(info)
    node_module.build_pipeline = slow_build
    try:
        assert node.set_parameters([Parameter("weights", value=str(tiny_checkpoints["bisenetv1"]))])[0].successful
        assert started.wait(30)
        rclpy.try_shutdown(context=ctx)  # what SIGINT does
        release.set()
        node.core.reconfigure.thread.join(60)
    finally:
        node_module.build_pipeline = real
        threading.excepthook = old_hook
    assert not errors, [str(e.exc_value) for e in errors]


def test_worker_memory_per_frame_is_bounded(tiny_checkpoints, tmp_path):
    """Peak memory of one frame at the pixel budget, measured in a child process (RSS high-water
    mark); the frame one pixel row over the budget costs nothing."""
    script = tmp_path / "peak.py"
    script.write_text(f"""
import resource, sys, numpy as np
from bisenet_ros.errors import ImageError
from bisenet_ros.pipeline import build_pipeline
side = 1024
pipe = build_pipeline(weights={str(tiny_checkpoints['bisenetv2'])!r}, device="cpu", backend="torch",
                      max_pixels=side * side)
pipe(np.zeros((64, 64, 3), np.uint8), "rgb8")
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
try:
    pipe(np.zeros((side + 1, side, 3), np.uint8), "rgb8", outputs=("color", "overlay", "confidence"))
    sys.exit("over the budget but not refused")
except ImageError:
    pass
assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss == before
pipe(np.zeros((side, side, 3), np.uint8), "rgb8", outputs=("color", "overlay", "confidence"))
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
print(peak * 1024 / (side * side))
""")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr
    bytes_per_pixel = float(out.stdout.strip().splitlines()[-1])
    # 5 classes: logits, softmax and outputs at camera resolution, about 200 bytes per pixel
    assert bytes_per_pixel < 400, bytes_per_pixel


@pytest.mark.parametrize("args,message", [
    (["-p", "weights:={nan}"], "non-finite values"),
    (["-p", "weights:={ints}"], "weights must be floating point"),
    (["-p", "weights:={v2}", "-p", "mean:=[.nan, 0.4, 0.4]"], "mean must be finite"),
    (["-p", "weights:={v2}", "-p", "std:=[.inf, 0.2, 0.2]"], "std must be finite"),
    (["-p", "weights:={v2}", "-p", "max_pixels:=0"], "max_pixels"),
    (["-p", "weights:={sidecar}"], "checkpoint sidecar"),
])
def test_node_hostile_start_table(ros_env, tiny_checkpoints, tmp_path, args, message):
    """The node's row of the hostile-input table: one [ERROR] line, exit 2, no traceback."""
    import shutil

    import torch

    from node_client import NODE_EXE

    state = torch.load(tiny_checkpoints["bisenetv2"], weights_only=True)
    nan = {k: (v.clone().fill_(float("nan")) if k.endswith("running_mean") else v) for k, v in state.items()}
    torch.save(nan, tmp_path / "nan.pth")
    torch.save({k: (v.to(torch.int32) if v.is_floating_point() else v) for k, v in state.items()}, tmp_path / "ints.pth")
    shutil.copy(tiny_checkpoints["bisenetv2"], tmp_path / "side.pth")
    (tmp_path / "side.yaml").write_bytes(b"num_classes: \xff\xfe\n")
    args = [a.format(nan=tmp_path / "nan.pth", ints=tmp_path / "ints.pth", v2=tiny_checkpoints["bisenetv2"],
                     sidecar=tmp_path / "side.pth") for a in args]
    proc = subprocess.run([str(NODE_EXE), "--ros-args", *args], env=ros_env, capture_output=True, text=True,
                          timeout=180)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2 and "Traceback" not in out, out
    errors = [line for line in out.splitlines() if "[ERROR]" in line]
    assert len(errors) == 1 and message in errors[0], out


# -- issue 23 (reliability, pass three): run-time requests never end the node --------------------


def _bad_remaps(root) -> dict[str, str]:
    """class_remap YAML files that once escaped the on-set callback as TypeError/ValueError/...
    (the node exited 2: "cannot start: 'int' object is not iterable")."""
    rest = "  - {name: other, color: [1, 2, 3], from: rest}\n"
    texts = {
        "from_int": "classes:\n  - {name: a, color: [1, 2, 3], from: 3}\n" + rest,
        "colour_300": "classes:\n  - {name: a, color: [300, 0, 0], from: [0]}\n" + rest,
        "colour_red": "classes:\n  - {name: a, color: red, from: [0]}\n" + rest,
        "ragged": "classes:\n  - {name: a, color: [1, 2], from: [0]}\n" + rest,
    }
    paths = {}
    for name, text in texts.items():
        paths[name] = root / f"{name}.yaml"
        paths[name].write_text(text)
    paths["bad_utf8"] = root / "bad_utf8.yaml"
    paths["bad_utf8"].write_bytes(b"classes:\n  - {name: \xff\xfe, from: rest}\n")
    return {k: str(v) for k, v in paths.items()}


def test_row1_a_bad_class_remap_at_run_time_is_refused_and_labels_keep_flowing(ros_env, tiny_checkpoints,
                                                                                 tmp_path, client):
    """Row 1: every hostile class_remap is a refused set with a one-line reason; the node answers
    the next frame and exits 0 at the end."""
    node = start_node(ros_env, ["-r", "image:=/cam_remap", "-p", f"weights:={tiny_checkpoints['bisenetv2']}",
                                "-p", "backend:=torch"], tmp_path / "node.log")
    try:
        client.subscribe(f"{NODE}/labels", Image)
        assert client.wait_matched("/cam_remap", Image, timeout=120), node.log
        for i, (name, path) in enumerate(_bad_remaps(tmp_path).items()):
            result = client.set_parameters(NODE, class_remap=path)
            assert not result.successful, (name, node.log[-2000:])
            assert "class_remap" in result.reason and "\n" not in result.reason and len(result.reason) < 700, \
                (name, result.reason)
            msg = client.publish_image("/cam_remap", frame(48, 64, i), "rgb8", f"after_{name}")
            assert client.request("/cam_remap", msg, f"{NODE}/labels", timeout=60) is not None, (name, node.log[-3000:])
        assert client.get_parameter(NODE, "class_remap") == ""
    finally:
        rc = node.stop()
    assert rc == 0 and "Traceback" not in node.log and "cannot start" not in node.log, node.log[-3000:]


def test_row7_lifecycle_refuses_an_unavailable_transition_and_keeps_running(ros_env, tiny_checkpoints, tmp_path,
                                                                           client):
    """Row 7: change_state with transition id 3 (activate) while unconfigured ended the lifecycle
    node ("Failed to trigger lifecycle state machine transition", exit 2). Now refused in one line
    naming what is available; configure and activate work afterwards and labels are served."""
    from lifecycle_msgs.msg import Transition
    from lifecycle_msgs.srv import ChangeState, GetState

    lc = "/lc23/segmentation"
    proc = start_node(ros_env, ["-r", "__ns:=/lc23", "-r", "image:=/lc23_cam", "-p", "backend:=torch",
                                "-p", f"weights:={tiny_checkpoints['bisenetv2']}"], tmp_path / "lc.log",
                      command=[sys.executable, "-m", "bisenet_ros.ros.lifecycle"])

    def change(transition: Transition) -> bool:
        response = client.call(ChangeState, f"{lc}/change_state", ChangeState.Request(transition=transition),
                               timeout=120)
        assert response is not None, proc.log[-3000:]
        return response.success

    def state() -> str:
        return client.call(GetState, f"{lc}/get_state", GetState.Request(), retry_every=5).current_state.label

    try:
        client.subscribe(f"{lc}/labels", Image)
        assert state() == "unconfigured", proc.log
        assert not change(Transition(id=Transition.TRANSITION_ACTIVATE))  # 3: not registered while unconfigured
        assert not change(Transition(id=99))
        assert not change(Transition(label="jump\nto [ERROR] active"))
        assert state() == "unconfigured" and proc.proc.poll() is None, proc.log[-3000:]
        assert "change_state refused: transition id 3 is not available in state 'unconfigured'" in proc.log
        assert "\nto [ERROR]" not in proc.log
        assert change(Transition(id=Transition.TRANSITION_CONFIGURE)), proc.log[-3000:]
        assert not change(Transition(id=Transition.TRANSITION_CONFIGURE))  # again, now inactive: refused
        assert change(Transition(id=Transition.TRANSITION_ACTIVATE)) and state() == "active"
        assert client.wait_matched("/lc23_cam", Image, 60), proc.log
        msg = client.publish_image("/lc23_cam", frame(48, 64, 3), "rgb8", "lc23_frame")
        assert client.request("/lc23_cam", msg, f"{lc}/labels", timeout=60) is not None, proc.log[-3000:]
    finally:
        rc = proc.stop()
    assert rc == 0 and "Traceback" not in proc.log, proc.log[-3000:]


def test_row20_a_failed_reload_warns_for_a_while_in_one_line_then_ok(inproc, tmp_path, monkeypatch):
    """Row 20: a failed weights reload kept /diagnostics at WARN for the rest of the run. Now WARN
    with the package's one line for RELOAD_WARN_S, then OK; the old model serves throughout."""
    import bisenet_ros.ros.diagnostics as diagnostics_module

    node, _ = inproc
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint at all\n" * 100)
    diagnostics = []
    node.core.diagnostics.publisher.publish = diagnostics.append
    old_weights = node.core.pipeline.info["weights"]
    assert node.set_parameters([Parameter("weights", value=str(garbage))])[0].successful
    node.core.reconfigure.thread.join(60)
    assert node.get_parameter("weights").value == old_weights  # reverted
    node.core.diagnostics.publish()
    status = diagnostics[-1].status[0]
    assert status.level == status.WARN and status.message.startswith(f"reload with weights={garbage} failed, keeping")
    assert "\n" not in status.message and len(status.message) <= 500
    assert status.message.endswith("not a PyTorch checkpoint (neither a zip nor a pickle of tensors, or truncated)")
    assert "Weights only load failed" not in status.message and "weights_only" not in status.message
    monkeypatch.setattr(diagnostics_module, "RELOAD_WARN_S", 0.0)  # the documented period has passed
    node.core.diagnostics.publish()
    status = diagnostics[-1].status[0]
    assert status.level == status.OK and "reload" not in status.message, status.message
    assert values(status)["last_error"].startswith("reload with weights=")  # still said, as a value


def test_row18_idle_cameras_cost_no_periodic_work(ros_env, tiny_checkpoints):
    """Row 18: 200 configured cameras, none publishing, took 85% of a core: every second each
    camera's two inputs queried the ROS graph (input_reliability auto) and every 0.5 s each
    camera's ~/points subscribers were counted, and each executor wake-up walked 28 event handlers
    per camera. Now that work runs only after a matched event: idle, the only periodic callback is
    /diagnostics, no graph query is made, and a camera has at most 8 event handlers. A camera that
    starts publishing is still followed (its subscription turns reliable)."""
    from rclpy.executors import SingleThreadedExecutor

    from bisenet_ros.ros.node import SegmentationNode

    cameras = [f"c{i}" for i in range(60)]
    ctx = rclpy.Context()
    rclpy.init(context=ctx)
    node = SegmentationNode(context=ctx, parameter_overrides=[
        Parameter("weights", value=str(tiny_checkpoints["bisenetv2"])), Parameter("backend", value="torch"),
        Parameter("cameras", value=cameras)])
    executor = SingleThreadedExecutor(context=ctx)
    executor.add_node(node)
    counts = {"graph": 0, "timers": {}}
    real_query = node.get_publishers_info_by_topic

    def query(topic):
        counts["graph"] += 1
        return real_query(topic)

    node.get_publishers_info_by_topic = query
    for timer in node.timers:
        def counted(callback=timer.callback, name=getattr(timer.callback, "__name__", "timer")):
            counts["timers"][name] = counts["timers"].get(name, 0) + 1
            return callback()
        timer.callback = counted

    def spin(seconds):
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            executor.spin_once(timeout_sec=0.1)

    try:
        # what every executor wake-up walks: event handlers (a few per camera, none on most outputs)
        assert len(list(node.waitables)) <= 8 * len(cameras) + 10, len(list(node.waitables))
        spin(3.0)  # start-up: every input looks at its publishers once
        assert counts["graph"] >= 2 * len(cameras)
        counts["graph"], counts["timers"] = 0, {}
        spin(4.0)  # idle
        assert counts["graph"] == 0, counts
        diagnostics = node.core.diagnostics.publish.__name__  # the /diagnostics timer
        assert set(counts["timers"]) <= {diagnostics}, counts
        assert counts["timers"].get(diagnostics, 0) <= 6, counts
        # a camera starts publishing (reliable): its input follows within a refresh period
        pub = node.create_publisher(Image, "/c7/image", 10)  # the client side, in the same context
        try:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and reliability_of(node, "c7") != "reliable":
                spin(0.2)
            assert reliability_of(node, "c7") == "reliable"
            assert reliability_of(node, "c8") == "best_effort"
        finally:
            node.destroy_publisher(pub)
    finally:
        executor.shutdown()
        node.close()
        rclpy.try_shutdown(context=ctx)


def reliability_of(node, camera: str) -> str:
    from bisenet_ros.ros.inputs import reliability_name

    cam = next(c for c in node.core.cameras if c.name == camera)
    return reliability_name(cam.inputs[0].reliability)


def test_row19_the_node_names_itself_when_its_callback_thread_is_the_bottleneck(inproc):
    """Row 19 in the node: with images lost and the callback thread busy (the diagnostics timer
    samples its CPU time), /diagnostics says the node, not the network, is the bottleneck."""
    node, _ = inproc
    diagnostics = []
    node.core.diagnostics.publisher.publish = diagnostics.append
    cam = node.core.cameras[0]
    for i in range(100):  # a fast camera; later every other image never reached the callback
        if i < 40 or i % 2 == 0:
            cam.loss.on_image(1_000_000_000 + i * 1_000_000)
    node.core.diagnostics._callback_load.sample = lambda now, cpu: 0.97
    node.core.diagnostics.publish()
    status = diagnostics[-1].status[0]
    assert status.level == status.WARN, status.message
    assert "a: " in status.message and "97% busy, so the node itself, not the network, is the bottleneck" in \
        status.message and "lost in transport" not in status.message
