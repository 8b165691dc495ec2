"""Transport: the shipped Fast DDS profile (contents, when it is applied and when the user's settings
win), input reliability auto, and 1080p frames across processes."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import xml.etree.ElementTree as ET

import pytest

from bisenet_ros.ros import transport as fastdds

NS = {"f": "http://www.eprosima.com/XMLSchemas/fastRTPS_Profiles"}


def test_profile_has_large_shm_segment_and_udp_on_every_interface():
    root = ET.parse(fastdds.PROFILE).getroot()
    transports = {d.findtext("f:transport_id", namespaces=NS): d
                  for d in root.iterfind("f:transport_descriptors/f:transport_descriptor", NS)}
    shm = [d for d in transports.values() if d.findtext("f:type", namespaces=NS) == "SHM"]
    udp = [d for d in transports.values() if d.findtext("f:type", namespaces=NS) == "UDPv4"]
    assert len(shm) == 1 and int(shm[0].findtext("f:segment_size", namespaces=NS)) == 64 * 1024 * 1024
    assert len(udp) == 1
    # never confined to loopback (or any interface): other hosts must reach the node
    assert udp[0].find("f:interfaceWhiteList", NS) is None
    assert int(udp[0].findtext("f:receiveBufferSize", namespaces=NS)) >= 4 * 1024 * 1024
    participant = root.find("f:participant", NS)
    assert participant.get("is_default_profile") == "true"
    assert participant.findtext("f:rtps/f:useBuiltinTransports", namespaces=NS) == "false"
    used = [t.text for t in participant.iterfind("f:rtps/f:userTransports/f:transport_id", NS)]
    assert sorted(used) == sorted(transports)
    assert root.find(".//f:initialPeersList", NS) is None and root.find(".//f:discovery_config", NS) is None


def test_profile_is_installed_as_package_data_and_share_file():
    setup_py = (fastdds.PROFILE.parents[2] / "setup.py").read_text()
    assert '"resources/*.xml"' in setup_py  # package_data
    assert 'f"{PACKAGE}/resources/fastdds_profile.xml"' in setup_py  # share/bisenet_ros/config


def test_apply_sets_both_variables_in_a_plain_environment(tmp_path):
    env = {"ROS_DOMAIN_ID": "3"}
    assert fastdds.apply_fastdds_profile(env) == str(fastdds.PROFILE)
    assert env[fastdds.ENV_VAR] == env[fastdds.LEGACY_ENV_VAR] == str(fastdds.PROFILE)
    assert fastdds.apply_fastdds_profile(env) == str(fastdds.PROFILE)  # ours again: stays ours
    for rmw in ("rmw_fastrtps_cpp", "rmw_fastrtps_dynamic_cpp"):
        assert fastdds.tuning_decision({"RMW_IMPLEMENTATION": rmw}, tmp_path).profile == str(fastdds.PROFILE)


@pytest.mark.parametrize("var, value, says", [
    ("FASTRTPS_DEFAULT_PROFILES_FILE", "/my/profile.xml", "/my/profile.xml"),
    ("FASTDDS_DEFAULT_PROFILES_FILE", "/my/profile.xml", "/my/profile.xml"),
    ("FASTDDS_BUILTIN_TRANSPORTS", "LARGE_DATA", "LARGE_DATA"),
    ("RMW_IMPLEMENTATION", "rmw_cyclonedds_cpp", "rmw_cyclonedds_cpp"),
    ("RMW_IMPLEMENTATION", "rmw_zenoh_cpp", "rmw_zenoh_cpp"),
    ("BISENET_ROS_TRANSPORT_TUNING", "off", "off"),
    ("BISENET_ROS_TRANSPORT_TUNING", "0", "BISENET_ROS_TRANSPORT_TUNING=0"),
])
def test_the_users_middleware_choice_is_left_alone(var, value, says, tmp_path):
    env = {var: value}
    decision = fastdds.tuning_decision(env, tmp_path)
    assert decision.profile is None and says in decision.reason
    assert fastdds.apply_fastdds_profile(env) is None
    assert env == {var: value}  # nothing added or changed


def test_a_profile_in_the_working_directory_is_left_alone(tmp_path, monkeypatch):
    (tmp_path / "DEFAULT_FASTRTPS_PROFILES.xml").write_text("<profiles/>")
    assert fastdds.tuning_decision({}, tmp_path).profile is None
    monkeypatch.chdir(tmp_path)
    env: dict[str, str] = {}
    assert fastdds.apply_fastdds_profile(env) is None and env == {}


# One process publishes 1080p rgb8 best-effort at 30 Hz, the other counts what arrives.
CHILD = textwrap.dedent("""
    import sys, time
    import numpy as np
    import rclpy
    from rclpy.qos import qos_profile_sensor_data
    from sensor_msgs.msg import Image
    from bisenet_ros.ros.conversions import array_to_image_msg
    role, n = sys.argv[1], int(sys.argv[2])
    rclpy.init()
    node = rclpy.create_node("fastdds_" + role)
    if role == "pub":
        pub = node.create_publisher(Image, "fastdds_check", qos_profile_sensor_data)
        deadline = time.monotonic() + 20
        while pub.get_subscription_count() == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.5)  # let the reader's side of the match settle too
        image = np.random.default_rng(0).integers(0, 255, (1080, 1920, 3), dtype=np.uint8)
        t0 = time.perf_counter()
        for i in range(n):
            pub.publish(array_to_image_msg(image, "rgb8"))
            time.sleep(max(0.0, t0 + (i + 1) / 30 - time.perf_counter()))
        time.sleep(1.0)
    else:
        got = []
        def on_image(msg):
            got.append(msg.width * msg.height if len(msg.data) == msg.step * msg.height else 0)
        node.create_subscription(Image, "fastdds_check", on_image, qos_profile_sensor_data)
        print("ready", flush=True)
        deadline = time.monotonic() + 40
        while len(got) < n and time.monotonic() < deadline:
            count = len(got)
            rclpy.spin_once(node, timeout_sec=0.2)
            if len(got) > count:  # after the first frame, give up 3 s after the last one
                deadline = min(deadline, time.monotonic() + 3)
        print("received", sum(1 for g in got if g == 1920 * 1080), flush=True)
    node.destroy_node()
    rclpy.shutdown()
""")


FAULTS_SCRIPT = textwrap.dedent("""
    import resource, sys, threading
    from bisenet_ros.ros.transport import keep_large_buffers
    kept = keep_large_buffers() if sys.argv[1] == "keep" else False

    def receive():  # as a collector's executor thread takes 720p labels, colour and overlay
        for i in range(60):
            color, labels, overlay = b"\x01" * 2_764_800, b"\x02" * 921_600, b"\x03" * 2_764_800
            del color, labels, overlay

    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    thread = threading.Thread(target=receive)
    thread.start()
    thread.join()
    print(kept, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
""")


def _faults(mode: str, env: dict[str, str]) -> tuple[str, int]:
    out = subprocess.run([sys.executable, "-c", FAULTS_SCRIPT, mode], capture_output=True, text=True, env=env,
                         timeout=60, check=True).stdout.split()
    return out[0], int(out[1])


def test_keep_large_buffers_stops_the_page_faults_of_each_large_message():
    env = {k: v for k, v in os.environ.items() if k not in fastdds.MALLOC_ENV_VARS}
    kept, faults_kept = _faults("keep", env)
    _, faults_default = _faults("default", env)
    pages = (2 * 2_764_800 + 921_600) // 4096  # of one frame's three messages
    assert kept == "True"
    assert faults_default > 30 * pages  # 60 frames: glibc maps and unmaps every block, each page faults
    assert faults_kept < 3 * pages  # the first frame's pages only
    # the user's own malloc settings stay theirs
    kept, _ = _faults("keep", {**env, "MALLOC_TRIM_THRESHOLD_": "1000000"})
    assert kept == "False"


@pytest.mark.ros
def test_1080p_frames_cross_processes_best_effort(ros_env):
    assert ros_env.get(fastdds.LEGACY_ENV_VAR) == str(fastdds.PROFILE)
    n = 45
    sub = subprocess.Popen([sys.executable, "-c", CHILD, "sub", str(n)], env=ros_env,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert sub.stdout.readline().strip() == "ready"
        pub = subprocess.run([sys.executable, "-c", CHILD, "pub", str(n)], env=ros_env,
                             capture_output=True, text=True, timeout=60)
        assert pub.returncode == 0, pub.stderr
        out, _ = sub.communicate(timeout=60)
    finally:
        sub.kill()
    received = int(out.strip().splitlines()[-1].split()[-1])
    print(f"{received} of {n} 1080p frames received")
    # with Fast DDS' default 512 KB segment almost none arrive; with the profile nearly all do
    assert received >= 0.6 * n, out


def test_input_reliability_auto_follows_the_publishers():
    from rclpy.qos import ReliabilityPolicy as R

    from bisenet_ros.ros.inputs import follow_publishers

    assert follow_publishers([R.RELIABLE]) == R.RELIABLE
    assert follow_publishers([R.RELIABLE, R.RELIABLE]) == R.RELIABLE
    assert follow_publishers([R.RELIABLE, R.BEST_EFFORT]) == R.BEST_EFFORT  # reaches both
    assert follow_publishers([R.BEST_EFFORT]) == R.BEST_EFFORT
    assert follow_publishers([]) == R.BEST_EFFORT  # no publisher yet: connect to whatever comes
