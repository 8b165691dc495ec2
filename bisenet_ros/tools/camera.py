"""``bisenet-ros camera SOURCE``: publish a video file, an image folder or a V4L2 device as a ROS 2
camera (``sensor_msgs/Image`` + ``CameraInfo``), for users without a ROS camera driver.

See :mod:`bisenet_ros.ros.camera` (publishing) and :mod:`bisenet_ros.data.camera_source` (frames,
camera_info_manager YAML). Runs until the source ends (``--once``) or Ctrl-C (exit 0).
"""
from __future__ import annotations

import argparse
import sys

from ..errors import ConfigError
from ..data.images import MAX_PIXELS, MAX_PIXELS_LIMIT
from .common import number
from .make_bag import TOPIC_NAME

HELP = "publish a video file, an image folder or a V4L2 camera as sensor_msgs/Image + CameraInfo"
EXAMPLES = """\
  bisenet-ros camera drive.mp4 --camera-info camera.yaml
  bisenet-ros camera frames/ --fps 5 --once --wait-subscriber 30
  bisenet-ros camera /dev/video0 --camera-info ~/.ros/camera_info/usb_cam.yaml --topic /usb_cam/image_raw
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("source", metavar="SOURCE",
                        help="a video file, a folder of images (sorted by name), one image, or a V4L2 "
                             "device (/dev/video0 or 0)")
    parser.add_argument("--camera-info", default=None, metavar="YAML",
                        help="calibration in the camera_info_manager format (camera_calibration's output); "
                             "default: none, the CameraInfo says uncalibrated (all-zero K)")
    parser.add_argument("--fps", type=number(float, 0.01, 1000), default=None,
                        help="frames per second published (default: the video's rate, else 10; a device "
                             "delivers at its own rate and is not faster than this)")
    parser.add_argument("--once", action="store_true",
                        help="play a file or folder once and exit 0 (default: loop until Ctrl-C)")
    parser.add_argument("--max-frames", type=number(int, 0), default=0, help="stop after N frames (0 = no limit)")
    parser.add_argument("--topic", default="/camera/image_raw", help="image topic")
    parser.add_argument("--info-topic", default=None,
                        help="CameraInfo topic (default: camera_info beside the image topic)")
    parser.add_argument("--frame-id", default="camera", help="header frame_id")
    parser.add_argument("--best-effort", action="store_true",
                        help="publish best effort (default: reliable, as rclcpp camera drivers)")
    parser.add_argument("--depth", type=number(int, 1, 1000), default=5, help="publisher queue depth")
    parser.add_argument("--wait-subscriber", type=number(float, 0, 3600), default=0.0, metavar="SEC",
                        help="wait up to SEC seconds for a subscriber before the first frame (default 0)")
    parser.add_argument("--max-pixels", type=number(int, 1, MAX_PIXELS_LIMIT), default=MAX_PIXELS,
                        help=f"refuse frames with more pixels than this (default {MAX_PIXELS} = 4096x2048)")


def _topics(args: argparse.Namespace) -> tuple[str, str]:
    for opt, topic in (("--topic", args.topic), ("--info-topic", args.info_topic)):
        if topic is not None and not TOPIC_NAME.fullmatch(topic):
            raise ConfigError(f"{opt} '{topic}' is not a valid ROS 2 topic name")
    info = args.info_topic or f"{args.topic.rpartition('/')[0]}/camera_info".lstrip("/")
    if args.topic.startswith("/") and not info.startswith("/"):
        info = "/" + info
    return args.topic, info


def run(args: argparse.Namespace) -> int:
    from ..data.camera_source import open_source, read_calibration
    from ..errors import terminate_as_interrupt

    terminate_as_interrupt()  # SIGTERM ends it like Ctrl-C: exit 0
    image_topic, info_topic = _topics(args)
    calibration = read_calibration(args.camera_info) if args.camera_info else None
    source = open_source(args.source, args.max_pixels)
    try:
        source.check_calibration(calibration)
    except BaseException:
        source.close()
        raise
    from ..ros.camera import CameraSettings, run_camera_node

    settings = CameraSettings(image_topic=image_topic, info_topic=info_topic, frame_id=args.frame_id,
                              rate=args.fps, loop=not args.once, max_frames=args.max_frames,
                              reliable=not args.best_effort, depth=args.depth, wait_subscriber=args.wait_subscriber)
    rate = args.fps or source.fps or 10.0
    print(f"camera: {args.source} ({source.kind}) -> {image_topic} + {info_topic} at {rate:g} Hz, "
          f"{'calibrated from ' + args.camera_info if calibration else 'uncalibrated'}"
          f"{'' if settings.loop and not source.live else ', once' if not source.live else ''}", file=sys.stderr)
    try:
        sent = run_camera_node(source, calibration, settings)
    except KeyboardInterrupt:
        return 0
    finally:
        source.close()
    print(f"camera: published {sent} frames", file=sys.stderr)
    return 0
