"""bisenet_ros: real-time semantic segmentation with BiSeNet V1/V2 for ROS 2.

The core (models, checkpoint loading, preprocessing, dataset presets, metrics) imports without
rclpy; the ROS adapters live in :mod:`bisenet_ros.ros.node` and :mod:`bisenet_ros.ros.conversions`.
"""

import os as _os

__version__ = "0.1.0"

# OpenCV refuses to decode images whose header claims more pixels than this (set before cv2 is
# first imported): a hard ceiling for formats whose header bisenet_ros does not parse itself
# (see bisenet_ros.data.images.MAX_PIXELS_LIMIT).
_os.environ.setdefault("OPENCV_IO_MAX_IMAGE_PIXELS", str(8192 * 8192))
# a broken file is reported by bisenet_ros in one line; OpenCV's own warnings would add more
_os.environ.setdefault("OPENCV_LOG_LEVEL", "ERROR")
