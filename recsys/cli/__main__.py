"""``python -m recsys.cli``: the ``recsys`` command."""

import sys

from recsys.cli import main

sys.exit(main())
