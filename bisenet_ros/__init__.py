"""bisenet_ros: real-time semantic segmentation with BiSeNet V1/V2 for ROS 2.

The core (models, checkpoint loading, preprocessing, dataset presets, metrics) imports without
rclpy; the ROS adapters live in :mod:`bisenet_ros.ros.node` and :mod:`bisenet_ros.ros.conversions`.
"""

__version__ = "0.1.0"
