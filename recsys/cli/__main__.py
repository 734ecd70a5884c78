"""``python -m recsys.cli``: the ``recsys`` command (``recsys.cli.console.run``: interrupts end it with 130)."""

from recsys.cli.console import run

run()
