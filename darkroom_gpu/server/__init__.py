"""The aiohttp server: application factory, routes and middleware."""

from darkroom_gpu.server.app import create_app

__all__ = ("create_app",)
