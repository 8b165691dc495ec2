"""Use the shipped Fast DDS profile (64 MB shared-memory segment, UDP on loopback).

Fast DDS reads its profile file from an environment variable when the first participant is
created, so :func:`apply_fastdds_profile` must run before ``rclpy.init``. The variable is
``FASTRTPS_DEFAULT_PROFILES_FILE`` for Fast DDS 2.x (ROS 2 Jazzy ships 2.14) and
``FASTDDS_DEFAULT_PROFILES_FILE`` for Fast DDS 3.x; both are set. If the user set either one,
nothing is changed.
"""
from __future__ import annotations

import os
from pathlib import Path

ENV_VAR = "FASTDDS_DEFAULT_PROFILES_FILE"  # Fast DDS >= 3
LEGACY_ENV_VAR = "FASTRTPS_DEFAULT_PROFILES_FILE"  # Fast DDS 2.x (Jazzy)
#: the profile inside the Python package (package data; also installed to share/bisenet_ros/config)
PROFILE = Path(__file__).resolve().parent.parent / "config" / "fastdds_profile.xml"


def apply_fastdds_profile() -> str | None:
    """Point Fast DDS at the shipped profile; return its path, or None if the user set their own."""
    if os.environ.get(ENV_VAR) or os.environ.get(LEGACY_ENV_VAR):
        return None
    if not PROFILE.is_file():  # broken install: run with Fast DDS defaults rather than fail
        return None
    os.environ[ENV_VAR] = str(PROFILE)
    os.environ[LEGACY_ENV_VAR] = str(PROFILE)
    return str(PROFILE)
