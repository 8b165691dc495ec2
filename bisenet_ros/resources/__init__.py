"""The files the package ships (read at run time, installed as package data): dataset presets
(``presets/``), class remaps (``remaps/``), what the ``auto`` backend tries and its tolerances
(``backends.yaml``), the public checkpoints by name (``weights.yaml``), training defaults
(``training.yaml``) and the node's Fast DDS profile (``fastdds_profile.xml``, also installed to
``share/bisenet_ros/config``)."""
from pathlib import Path

RESOURCES = Path(__file__).resolve().parent
