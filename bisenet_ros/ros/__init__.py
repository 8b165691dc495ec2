"""The ROS 2 layer: the only modules that import rclpy (``test/test_layout.py`` enforces it)."""
