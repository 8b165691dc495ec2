"""``resources/backends.yaml``, read once: what ``auto`` tries, tolerances, measurement and thread
settings. A module of its own so that the backends, the cache and the pipeline's thread settings
all read it without importing one another."""
from __future__ import annotations

from functools import lru_cache

from ..resources import RESOURCES
from ..safe_yaml import load_yaml_file

CONFIG_FILE = RESOURCES / "backends.yaml"


@lru_cache(maxsize=1)
def backend_config() -> dict:
    """The parsed ``resources/backends.yaml`` (auto order, tolerances, per-backend options)."""
    return load_yaml_file(CONFIG_FILE, "backends configuration")
