"""The node's default Fast DDS tuning, applied only where the user has not chosen their own.

Fast DDS' default shared-memory segment (512 KB) is smaller than one camera image. By default the
node points Fast DDS at the shipped profile (``resources/fastdds_profile.xml``: 64 MB shared-memory
segment, UDPv4 on every interface with larger socket buffers), so local viewers get its outputs
over shared memory and other hosts still reach it. Fast DDS reads the profile from an environment
variable when the first participant is created, so :func:`apply_fastdds_profile` must run before
``rclpy.init``: ``FASTRTPS_DEFAULT_PROFILES_FILE`` for Fast DDS 2.x (Jazzy ships 2.14) and
``FASTDDS_DEFAULT_PROFILES_FILE`` for 3.x; both are set.

Nothing is changed -- the user's middleware setup wins -- when any of these holds
(:func:`tuning_decision` says which):

- ``BISENET_ROS_TRANSPORT_TUNING`` is ``off`` (also ``0``, ``false``, ``no``): the documented switch;
- ``RMW_IMPLEMENTATION`` names another middleware than Fast DDS (rmw_cyclonedds_cpp, rmw_zenoh_cpp, ...);
- a Fast DDS profile file is set (either variable) or ``DEFAULT_FASTRTPS_PROFILES.xml`` /
  ``DEFAULT_FASTDDS_PROFILES.xml`` is in the working directory (Fast DDS loads those by itself);
- ``FASTDDS_BUILTIN_TRANSPORTS`` is set (e.g. ``LARGE_DATA``).

:func:`keep_large_buffers` is the process side of large messages: glibc's ``malloc`` hands a
multi-megabyte block (a received image, its Python ``bytes``) to the kernel when it is freed, so the
next message's block is a fresh mapping whose every page faults on first touch. The tools'
collectors take messages on an executor thread, whose heap glibc also shrinks after each such
free; node-bench's collector spent a tenth of a core (80,000 page faults/s) receiving three 720p
outputs at 20 Hz.
"""
from __future__ import annotations

import ctypes
import os
from dataclasses import dataclass
from pathlib import Path
from typing import MutableMapping

from ..resources import RESOURCES

ENV_VAR = "FASTDDS_DEFAULT_PROFILES_FILE"  # Fast DDS >= 3
LEGACY_ENV_VAR = "FASTRTPS_DEFAULT_PROFILES_FILE"  # Fast DDS 2.x (Jazzy)
BUILTIN_TRANSPORTS_VAR = "FASTDDS_BUILTIN_TRANSPORTS"
SWITCH_VAR = "BISENET_ROS_TRANSPORT_TUNING"
OFF_VALUES = ("off", "0", "false", "no")
FASTDDS_RMWS = ("rmw_fastrtps_cpp", "rmw_fastrtps_dynamic_cpp")
CWD_PROFILES = ("DEFAULT_FASTRTPS_PROFILES.xml", "DEFAULT_FASTDDS_PROFILES.xml")
#: the profile inside the Python package (package data; also installed to share/bisenet_ros/config)
PROFILE = RESOURCES / "fastdds_profile.xml"


@dataclass(frozen=True)
class TuningDecision:
    """Whether the node applies its profile, and why (one line for the log and /diagnostics)."""

    profile: str | None  # the profile to apply, or None
    reason: str


def tuning_decision(environ: MutableMapping[str, str] | None = None, cwd: Path | None = None) -> TuningDecision:
    """What :func:`apply_fastdds_profile` would do in ``environ`` (default: this process')."""
    env = os.environ if environ is None else environ
    switch = env.get(SWITCH_VAR, "").strip().lower()
    if switch in OFF_VALUES:
        return TuningDecision(None, f"off ({SWITCH_VAR}={env[SWITCH_VAR]}): middleware defaults")
    rmw = env.get("RMW_IMPLEMENTATION", "").strip()
    if rmw and rmw not in FASTDDS_RMWS:
        return TuningDecision(None, f"left to RMW_IMPLEMENTATION={rmw}")
    for var in (LEGACY_ENV_VAR, ENV_VAR, BUILTIN_TRANSPORTS_VAR):
        if env.get(var) and env[var] != str(PROFILE):  # ours, set by an earlier call or a parent process
            return TuningDecision(None, f"left to your {var}={env[var]}")
    here = Path.cwd() if cwd is None else cwd
    for name in CWD_PROFILES:
        if (here / name).is_file():
            return TuningDecision(None, f"left to {here / name} (Fast DDS loads it from the working directory)")
    if not PROFILE.is_file():  # broken install: run with Fast DDS defaults rather than fail
        return TuningDecision(None, f"Fast DDS defaults ({PROFILE} is missing)")
    return TuningDecision(str(PROFILE), f"Fast DDS profile {PROFILE} (64 MB shared memory, UDPv4 on every "
                                        f"interface; {SWITCH_VAR}=off turns it off)")


def apply_fastdds_profile(environ: MutableMapping[str, str] | None = None) -> str | None:
    """Point Fast DDS at the shipped profile unless the user chose their own middleware settings.

    Returns the profile's path, or None when nothing was changed (see :func:`tuning_decision`).
    """
    env = os.environ if environ is None else environ
    decision = tuning_decision(env)
    if decision.profile is not None:
        env[ENV_VAR] = decision.profile
        env[LEGACY_ENV_VAR] = decision.profile
    return decision.profile


#: glibc ``mallopt`` parameters and the values :func:`keep_large_buffers` sets
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
MMAP_THRESHOLD = 32 * 1024 * 1024  # glibc's largest allowed value on 64-bit (HEAP_MAX_SIZE / 2)
TRIM_THRESHOLD = 128 * 1024 * 1024
MALLOC_ENV_VARS = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")


def keep_large_buffers(environ: MutableMapping[str, str] | None = None) -> bool:
    """Keep freed blocks of up to 32 MB (and up to 128 MB of free heap) in the process for the next
    message instead of returning them to the kernel (see the module docstring). True when set; False
    on a C library without glibc's ``mallopt``, or when the user set ``MALLOC_MMAP_THRESHOLD_`` or
    ``MALLOC_TRIM_THRESHOLD_`` (their choice stays). Process-wide; call it once, early."""
    env = os.environ if environ is None else environ
    if any(env.get(var) for var in MALLOC_ENV_VARS):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
