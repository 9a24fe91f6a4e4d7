"""Allow ``python -m darkroom_gpu serve``."""

import sys

from darkroom_gpu.cli import main

sys.exit(main())
