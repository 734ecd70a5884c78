"""What the torchrun tests launch: registers the tiny test encoder (``clip:recsys-test-tiny/random``), then runs
``recsys`` with the arguments, as ``torchrun ... -m recsys.cli ARGS`` would."""

from __future__ import annotations

import sys

from features.encoders import TINY_ARCHITECTURE, register_architecture
from recsys.cli import main

if __name__ == "__main__":
    register_architecture("recsys-test-tiny", TINY_ARCHITECTURE)
    sys.exit(main(sys.argv[1:]))
