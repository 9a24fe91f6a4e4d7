"""Manipulators turn source bytes plus options into result bytes, on one device each."""

from darkroom_gpu.manipulators.base import ImageJob, ImageResult, Manipulator
from darkroom_gpu.manipulators.cpu import CpuManipulator
from darkroom_gpu.manipulators.select import create_manipulator

__all__ = ("CpuManipulator", "ImageJob", "ImageResult", "Manipulator", "create_manipulator")
