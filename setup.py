"""ament_python package definition; also installable with ``pip install -e .``."""
from glob import glob

from setuptools import find_packages, setup

PACKAGE = "bisenet_ros"


def share(subdir: str, pattern: str = "*") -> tuple[str, list[str]]:
    """Install ``subdir/pattern`` files into ``share/bisenet_ros/subdir``."""
    return (f"share/{PACKAGE}/{subdir}", sorted(p for p in glob(f"{subdir}/{pattern}")))


setup(
    name=PACKAGE,
    version="0.1.0",
    packages=find_packages(exclude=["test", "test.*"]),
    package_data={PACKAGE: ["resources/*.yaml", "resources/*.xml", "resources/presets/*.yaml", "resources/remaps/*.yaml"]},
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        share("launch", "*.launch.py"),
        share("config", "*.yaml"),
        share("config", "*.xml"),
        (f"share/{PACKAGE}/config", [f"{PACKAGE}/resources/fastdds_profile.xml"]),  # Fast DDS profile
        share("config", "*.rviz"),
        share("models", "*"),
    ],
    python_requires=">=3.10",
    install_requires=[
        "numpy>=1.24",
        "numba>=0.58",  # the exact cheap postprocess kernel (bisenet_ros.inference.postprocess)
        "opencv-python-headless>=4.8",
        "pyyaml>=6.0",
        "torch>=2.1",
        "safetensors>=0.4",
        "rosbags>=0.10",
        "tqdm>=4.60",
        "matplotlib>=3.7",
    ],
    extras_require={
        "onnx": ["onnx>=1.15", "onnxruntime>=1.17"],
        "openvino": ["openvino>=2024.0"],  # bf16/int8 on the CPU (bisenet_ros.inference.backends)
        "video": ["av>=12"],  # H.264 videos (PyAV ships FFmpeg with libx264)
        "foxglove": ["foxglove-sdk>=0.30"],  # the live view of the node (foxglove_port)
        "ray": ["ray[client]>=2.9"],  # eval-bag --ray: one task per bag on a Ray cluster
        "test": ["pytest>=7"],
    },
    zip_safe=False,
    maintainer="bisenet_ros maintainers",
    maintainer_email="maintainers@bisenet-ros.dev",
    description="BiSeNet V1/V2 real-time semantic segmentation for ROS 2",
    license="Apache-2.0",
    entry_points={
        "console_scripts": [
            "segmentation_node = bisenet_ros.ros.node:main",
            "segmentation_lifecycle_node = bisenet_ros.ros.lifecycle:main",
            "bisenet-ros = bisenet_ros.cli:main",
        ],
    },
)
