"""Configuration: a YAML file plus ``DARKROOM_*`` environment overrides, validated at start."""

from darkroom_gpu.config.loader import load_settings
from darkroom_gpu.config.reader import ConfigError, ConfigReader
from darkroom_gpu.config.settings import (
    DEFAULT_SAMPLES_ROOT,
    LOG_FORMATS,
    BatchSettings,
    CacheSettings,
    CircuitBreakerSettings,
    Limits,
    LoggingSettings,
    ServerSettings,
    Settings,
    SharedStoreSettings,
    SourceSettings,
)

__all__ = (
    "DEFAULT_SAMPLES_ROOT",
    "LOG_FORMATS",
    "BatchSettings",
    "CacheSettings",
    "CircuitBreakerSettings",
    "ConfigError",
    "ConfigReader",
    "Limits",
    "LoggingSettings",
    "ServerSettings",
    "Settings",
    "SharedStoreSettings",
    "SourceSettings",
    "load_settings",
)
