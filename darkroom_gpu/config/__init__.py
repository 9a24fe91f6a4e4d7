"""Configuration: a YAML file plus ``DARKROOM_*`` environment overrides, validated at start."""

from darkroom_gpu.config.loader import load_settings
from darkroom_gpu.config.reader import ConfigError, ConfigReader
from darkroom_gpu.config.settings import (
    DEFAULT_SAMPLES_ROOT,
    BatchSettings,
    CacheSettings,
    CircuitBreakerSettings,
    Limits,
    ServerSettings,
    Settings,
    SharedStoreSettings,
    SourceSettings,
)

__all__ = (
    "DEFAULT_SAMPLES_ROOT",
    "BatchSettings",
    "CacheSettings",
    "CircuitBreakerSettings",
    "ConfigError",
    "ConfigReader",
    "Limits",
    "ServerSettings",
    "Settings",
    "SharedStoreSettings",
    "SourceSettings",
    "load_settings",
)
