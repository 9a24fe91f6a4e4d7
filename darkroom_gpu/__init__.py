"""darkroom-gpu: a GPU-first real-time image proxy with Darkroom's URL grammar."""

__version__ = "0.1.0"
