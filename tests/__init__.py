"""The test suite.

Triton decides whether to compile or to interpret a kernel when the kernel is defined, and
defines its own library functions (``tl.zeros`` among them) when ``triton.language`` is first
imported, which importing torchvision does. So ``TRITON_INTERPRET`` is set here, before pytest
imports conftest.py or any test module. Without CUDA the interpreter is the only way to run the
project's kernels; with CUDA they are compiled, unless the variable was set already.
"""

import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
