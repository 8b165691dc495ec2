"""The node in a robot's ROS 2 graph, with real processes: other hosts, camera drivers with their own
middleware settings, images lost in transport made visible.

Two hosts are two network namespaces joined by a veth pair (private test addresses, only inside
the namespaces made here; removed afterwards). Camera and viewer are ``graph_peers.py`` processes
that keep their own Fast DDS settings (plain defaults, ``FASTDDS_BUILTIN_TRANSPORTS=LARGE_DATA``,
or the profile docs/node.md recommends), as camera drivers and rviz2 do. The node runs as a user
starts it (``segmentation_node``) at its defaults.
"""
from __future__ import annotations

import itertools
import os
import queue
import random
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from bisenet_ros.ros import transport

pytestmark = pytest.mark.ros
PEERS = Path(__file__).with_name("graph_peers.py")
NODE_EXE = Path(sys.executable).with_name("segmentation_node")
WARN = 1
_names = itertools.count()


# -- processes ---------------------------------------------------------------------------------------
def middleware_env(base: dict, kind: str, discovery: str = "LOCALHOST") -> dict:
    """``base`` with the Fast DDS settings of ``kind``: defaults | large_data | profile | node.

    ``node`` leaves the choice to the node (its default tuning); the peers never tune themselves.
    """
    env = {k: v for k, v in base.items() if not k.startswith(("FASTRTPS_", "FASTDDS_", transport.SWITCH_VAR))}
    env["ROS_AUTOMATIC_DISCOVERY_RANGE"] = discovery
    if kind == "large_data":
        env[transport.BUILTIN_TRANSPORTS_VAR] = "LARGE_DATA"
    elif kind == "profile":
        env[transport.LEGACY_ENV_VAR] = str(transport.PROFILE)
    return env


class Proc:
    """A child process (optionally inside a network namespace) whose output lines are collected."""

    def __init__(self, argv: list[str], env: dict, netns: str | None = None, log: Path | None = None) -> None:
        prefix = ["ip", "netns", "exec", netns] if netns else []
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        self._log = open(log, "w") if log else None
        self.proc = subprocess.Popen(prefix + argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     text=True)
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            if self._log:
                self._log.write(line)
                self._log.flush()
            self.lines.put(line.rstrip("\n"))

    def drain(self) -> list[str]:
        while True:
            try:
                self.seen.append(self.lines.get_nowait())
            except queue.Empty:
                return self.seen

    def wait_line(self, pred, timeout: float) -> str | None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=min(0.2, max(0.01, deadline - time.monotonic())))
            except queue.Empty:
                continue
            self.seen.append(line)
            if pred(line):
                return line
        return None

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self._log:
            self._log.close()
        return self.proc.returncode


def start_node(env: dict, weights: Path, tmp: Path, *params: str, netns: str | None = None,
               image: str = "/cam/image_raw") -> Proc:
    """The node with its defaults but ``weights`` (and ``params``: name:=value)."""
    args = [arg for p in (f"weights:={weights}", *params) for arg in ("-p", p)]
    return Proc([str(NODE_EXE), "--ros-args", "-r", f"image:={image}", "-r",
                 f"camera_info:={image.rpartition('/')[0]}/camera_info", *args],
                env, netns, log=tmp / f"node{next(_names)}.log")


def start_viewer(env: dict, topic: str = "/segmentation/overlay", netns: str | None = None) -> Proc:
    viewer = Proc([sys.executable, str(PEERS), "viewer", "--topic", topic, "--timeout", "240"], env, netns)
    assert viewer.wait_line(lambda line: line == "ready", 120), viewer.drain()
    return viewer


def run_camera(env: dict, prefix: str, *args: str, netns: str | None = None, count: int = 12) -> None:
    cam = subprocess.run(["ip", "netns", "exec", netns] * bool(netns) + [
        sys.executable, str(PEERS), "camera", "--topic", "/cam/image_raw", "--prefix", prefix,
        "--count", str(count), "--timeout", "120", "--settle", "2", *args],
        env=env, capture_output=True, text=True, timeout=300)
    assert cam.returncode == 0 and f"sent {count}" in cam.stdout, cam.stdout + cam.stderr


def received(viewer: Proc, prefix: str, count: int, idle: float = 6.0) -> int:
    """Frames with ``prefix`` the viewer got (waits until all arrived or none came for ``idle`` s)."""
    ids = {line[4:] for line in viewer.drain() if line.startswith(f"got {prefix}")}
    while len(ids) < count:
        line = viewer.wait_line(lambda ln: ln.startswith(f"got {prefix}"), idle)
        if line is None:
            break
        ids.add(line[4:])
    return len(ids)


@dataclass
class Diag:
    level: int
    lost: int  # frames_lost_in_transport
    dropped: int  # dropped_frames (the node's newest-frame policy)
    processed: int
    message: str


def transport_warning(d: Diag) -> bool:
    """A WARN other than the input check's: between the cameras of these tests the input really
    stops for a few seconds, and /diagnostics rightly says so (input_timeout)."""
    return d.level >= WARN and not d.message.startswith(("input stopped", "no image yet"))


def diagnostics(viewer: Proc) -> list[Diag]:
    """Every /diagnostics status of the node the viewer saw so far."""
    out = []
    for line in viewer.drain():
        if line.startswith("diag "):
            level, lost, dropped, processed, message = (line[5:].split(" ", 4) + [""])[:5]
            out.append(Diag(int(level), int(lost), int(dropped), int(processed), message))
    return out


def saw_loss_warning(viewer: Proc, timeout: float) -> bool:
    """Whether the node's /diagnostics said WARN about images lost in transport (so far, or within
    ``timeout`` seconds)."""
    if any(d.level >= WARN and "lost in transport" in d.message for d in diagnostics(viewer)):
        return True
    return viewer.wait_line(lambda ln: ln.startswith(f"diag {WARN} ") and "lost in transport" in ln, timeout) is not None


def wait_transport_warning(viewer: Proc, done, timeout: float) -> Diag | None:
    """The newest transport WARN the node published, waiting up to ``timeout`` seconds for one that
    satisfies ``done`` (the count keeps growing while the lost frames' camera_info arrives)."""
    deadline, last = time.monotonic() + timeout, None
    while True:
        last = next((d for d in reversed(diagnostics(viewer)) if transport_warning(d)), last)
        if (last is not None and done(last)) or time.monotonic() > deadline:
            return last
        viewer.wait_line(lambda ln: ln.startswith("diag "), 1.0)  # seen lines stay in viewer.seen


# -- two hosts --------------------------------------------------------------------------------------
@dataclass
class Hosts:
    a: str
    b: str
    veth_a: str
    veth_b: str

    def veth_bytes(self) -> int:
        """Bytes B's interface received plus sent: what crossed between the hosts."""
        total = 0
        for counter in ("rx_bytes", "tx_bytes"):
            out = subprocess.run(["ip", "netns", "exec", self.b, "cat",
                                  f"/sys/class/net/{self.veth_b}/statistics/{counter}"], capture_output=True, text=True)
            total += int(out.stdout.strip() or 0)
        return total


@pytest.fixture
def two_hosts(request):
    """Hosts A and B: network namespaces joined by a veth pair on 10.200.<n>.0/24 (removed after)."""
    if shutil.which("ip") is None:
        pytest.skip("two-host tests need iproute2's ip (network namespaces)")
    if os.geteuid() != 0:
        pytest.skip("two-host tests need root to create network namespaces (ip netns)")
    tag = f"{os.getpid() % 100000}x{next(_names)}"
    hosts = Hosts(f"bsn{tag}a", f"bsn{tag}b", f"bsv{tag}a", f"bsv{tag}b")
    request.addfinalizer(lambda: [subprocess.run(["ip", "netns", "del", ns], capture_output=True)
                                  for ns in (hosts.a, hosts.b)])
    net = random.randint(1, 254)
    steps = [["ip", "netns", "add", hosts.a], ["ip", "netns", "add", hosts.b],
             ["ip", "link", "add", hosts.veth_a, "netns", hosts.a, "type", "veth", "peer", "name", hosts.veth_b,
              "netns", hosts.b]]
    for ns, dev, host in ((hosts.a, hosts.veth_a, 1), (hosts.b, hosts.veth_b, 2)):
        steps += [["ip", "-n", ns, "addr", "add", f"10.200.{net}.{host}/24", "dev", dev],
                  ["ip", "-n", ns, "link", "set", "lo", "up"], ["ip", "-n", ns, "link", "set", dev, "up"],
                  ["ip", "-n", ns, "route", "add", "224.0.0.0/4", "dev", dev]]  # DDS discovery multicast
    for step in steps:
        proc = subprocess.run(step, capture_output=True, text=True)
        if proc.returncode != 0:
            pytest.skip(f"network namespaces not permitted here ({' '.join(step[:3])}: {proc.stderr.strip()})")
    return hosts


def test_two_hosts_both_directions_and_lost_images_warn(two_hosts, ros_env, tiny_checkpoints, tmp_path):
    """Node on host A at its defaults; viewers (rviz2 on a laptop) on B and on A; every peer keeps
    Fast DDS defaults, discovery across the subnet; 5 Hz 320x240.

    1. camera on A (reliable): the viewer on B gets the node's overlays;
    2. camera on B (best effort): the node gets the images, the viewer on A its overlays;
    both without a warning. 3. A's interface then takes no full-size packets (a path-MTU black
    hole): the fragmented images from B are lost while the small camera_info and discovery get
    through, and /diagnostics must say WARN, naming cause and fix."""
    env_node, env_peer = middleware_env(ros_env, "node", "SUBNET"), middleware_env(ros_env, "defaults", "SUBNET")
    node = start_node(env_node, tiny_checkpoints["bisenetv2"], tmp_path, netns=two_hosts.a)
    viewers: list[Proc] = []
    try:
        viewers += [start_viewer(env_peer, netns=two_hosts.b), start_viewer(env_peer, netns=two_hosts.a)]
        remote_viewer, local_viewer = viewers
        for camera_host, qos, viewer in ((two_hosts.a, "reliable", remote_viewer),
                                         (two_hosts.b, "best_effort", local_viewer)):
            before = two_hosts.veth_bytes()
            run_camera(env_peer, qos, "--rate", "5", "--size", "240x320", "--camera-info",
                       *["--best-effort"] * (qos == "best_effort"), count=20, netns=camera_host)
            got = received(viewer, qos, 20)
            crossed = two_hosts.veth_bytes() - before
            diags = diagnostics(local_viewer)
            print(f"two hosts, camera on {'A' if camera_host == two_hosts.a else 'B'} ({qos}): {got} of 20 "
                  f"frames reached the viewer on {'B' if viewer is remote_viewer else 'A'}; {crossed / 1e6:.1f} MB "
                  f"crossed between the hosts; node: {diags[-1] if diags else None}")
            assert got >= 10, (diags, node.drain()[-20:])  # done when: at least half
            assert crossed > 20 * 320 * 240 * 3 * 0.5  # the images or overlays really went over the network
            assert diags and all(not transport_warning(d) for d in diags), diags
        subprocess.run(["ip", "-n", two_hosts.a, "link", "set", two_hosts.veth_a, "mtu", "1280"], check=True)
        run_camera(env_peer, "lossy", "--rate", "10", "--size", "240x320", "--camera-info", "--best-effort",
                   "--linger", "0", count=60, netns=two_hosts.b)
        assert saw_loss_warning(local_viewer, 20), diagnostics(local_viewer)
        last = wait_transport_warning(local_viewer, lambda d: d.lost >= 20, 20)
        print(f"lossy camera: {last}")
        assert last.lost >= 20 and "publishes best effort" in last.message and "LARGE_DATA" in last.message
    finally:
        for proc in (*viewers, node):
            proc.stop()
    node.wait_line(lambda ln: False, 2)
    assert any("transport: Fast DDS profile" in line for line in node.seen), node.seen[:5]


#: (camera middleware, camera reliability) -> what must reach the node; 12 frames 640x480 rgb8
#: (921 KB, larger than Fast DDS' default 512 KB shared-memory segment), 4 Hz, camera_info alongside
FAST_MODEL = ("input_width:=96", "input_height:=64", "output_resolution:=model")
LARGE_FRAME_CAMERAS = [("defaults", "reliable"), ("large_data", "reliable"), ("profile", "best_effort"),
                       ("defaults", "best_effort")]


def segmented(viewer: Proc, node: Proc, middleware: str, qos: str, env: dict) -> int:
    run_camera(middleware_env(env, middleware), f"{middleware}_{qos}_", "--rate", "4", "--size", "480x640",
               "--camera-info", *["--best-effort"] * (qos == "best_effort"))
    got = received(viewer, f"{middleware}_{qos}_", 12)
    diags = diagnostics(viewer)
    print(f"camera with {middleware} ({qos}): {got} of 12 large frames segmented; node: {diags[-1] if diags else None}")
    return got


def test_large_frames_from_cameras_with_their_own_middleware_settings(ros_env, tiny_checkpoints, tmp_path):
    """One node at its defaults; camera drivers one after another with Fast DDS defaults, LARGE_DATA
    (camera only) or the recommended profile, reliable and best effort (the node's input follows)."""
    # a small model input keeps the pipeline faster than the camera on a loaded CPU: every frame
    # that arrives is segmented (none skipped by the newest-frame policy)
    node = start_node(middleware_env(ros_env, "node"), tiny_checkpoints["bisenetv2"], tmp_path, *FAST_MODEL)
    viewer = None
    try:
        viewer = start_viewer(middleware_env(ros_env, "defaults"), topic="/segmentation/labels")
        for middleware, qos in LARGE_FRAME_CAMERAS:
            got = segmented(viewer, node, middleware, qos, ros_env)
            if (middleware, qos) == ("defaults", "best_effort"):  # lossy by nature: delivered or reported
                assert got >= 11 or saw_loss_warning(viewer, 12), diagnostics(viewer)
            else:
                assert got >= 11, (diagnostics(viewer), node.drain()[-10:])
                assert all(not transport_warning(d) for d in diagnostics(viewer)), diagnostics(viewer)
        assert any("subscribed best_effort" in line for line in node.drain())  # auto followed the cameras
        assert any("subscribed reliable" in line for line in node.seen)
    finally:
        for proc in (viewer, node):
            if proc is not None:
                proc.stop()


def test_large_frames_with_large_data_on_both_sides(ros_env, tiny_checkpoints, tmp_path):
    """FASTDDS_BUILTIN_TRANSPORTS=LARGE_DATA exported for camera and node (as the Fast DDS docs
    advise): the node keeps it instead of forcing its own profile."""
    env = middleware_env(ros_env, "large_data")
    node = start_node(env, tiny_checkpoints["bisenetv2"], tmp_path, *FAST_MODEL)
    viewer = None
    try:
        viewer = start_viewer(env, topic="/segmentation/labels")
        assert segmented(viewer, node, "large_data", "reliable", ros_env) >= 11, diagnostics(viewer)
    finally:
        for proc in (viewer, node):
            if proc is not None:
                proc.stop()
    node.wait_line(lambda ln: False, 2)
    assert any("transport: left to your FASTDDS_BUILTIN_TRANSPORTS=LARGE_DATA" in ln for ln in node.seen), node.seen[:5]
