"""The ``recsys`` command: one module per command group, each with ``add_parsers(subparsers)``.

    common       argument types, the data flags, ``--params``, the help formatter
    data         data simulate | validate
    models       models, explain
    leaderboard  leaderboard (--tuned through experiments.tuning.run_tuned_leaderboard)
    retrieval    similar-users, similar-images, rank, recommend, serve
    atlas        atlas (an HTML report of a model's taste groups)
    experiments  tune, study
    features     features embed | encoders

Only this package imports the command groups' libraries; nothing outside it imports ``recsys.cli``.
Errors a user can cause (``recsys.errors.UserError``) print one line (``error: ...``) and exit with status 2; so
does a command that needs an extra that is not installed (``recsys.extras``: the line names the pip command), and
so do file-system errors the user can fix (a read-only or full workspace, a path in the way:
``recsys.workspace.storage_error``), naming the path and the options that choose another place.
"""

from __future__ import annotations

import argparse
import os
import sys

from recsys.cli.common import HelpFormatter, add_commands
from recsys.errors import UserError
from recsys.extras import extra_providing, missing_reason
from recsys.workspace import storage_error


def command_groups() -> tuple:
    """The command group modules, in the order ``recsys --help`` lists them. Imported here, not when this
    package is: they import numpy, pandas and the rest, and ``recsys.cli.console`` installs its interrupt
    handlers before that."""
    from recsys.cli import atlas, data, experiments, features, leaderboard, models, retrieval

    return (data, models, leaderboard, retrieval, atlas, experiments, features)


def version() -> str:
    """The installed version of the ``recsys-pamela`` distribution (pyproject's when not installed)."""
    from importlib import metadata

    try:
        return metadata.version("recsys-pamela")
    except metadata.PackageNotFoundError:
        return "0.1.0"


def build_parser() -> argparse.ArgumentParser:
    """The ``recsys`` parser with every command."""
    parser = argparse.ArgumentParser(
        prog="recsys",
        description="Personalised image-rating prediction and similar-user search.",
        epilog="example:\n  recsys data simulate --out data/sim\n  recsys leaderboard --data data/sim --models baselines",
        formatter_class=HelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"recsys {version()}")
    sub = add_commands(parser, "command", "recsys")
    for group in command_groups():
        group.add_parsers(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one command; returns the exit status (2 for an error the user can fix, 130 when interrupted)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except UserError as err:
        # one line, whatever the message holds (an error quoted from a library may span several)
        message = " ".join(line.strip() for line in str(err).splitlines() if line.strip())
        print(f"error: {message}", file=sys.stderr)
        return 2
    except ModuleNotFoundError as err:  # an optional package that no explicit check asked for first
        extra = extra_providing(err.name)
        if extra is None:
            raise
        top = (err.name or "").partition(".")[0]
        print(f"error: {missing_reason(extra, f'recsys {args.command}', [top])}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # the reader went away (`recsys features encoders | head -1`): no traceback; stdout goes to devnull
        # so that the interpreter's final flush does not fail again (as the Python docs on SIGPIPE advise)
        _stdout_to_devnull()
        return 0
    except OSError as err:  # a read-only, full or unusable disk, a path in the way: one line, what to do
        line = storage_error(err, _elsewhere(args))
        if line is None:
            raise
        print(f"error: {line}", file=sys.stderr)
        return 2


def _elsewhere(args: argparse.Namespace) -> str:
    """How the running command lets the user write somewhere else: the options it declares."""
    options = [
        f"--{name.replace('_', '-')}" for name in ("out", "workspace", "cache_dir") if hasattr(args, name)
    ]
    return f"choose another {' or '.join(options)}" if options else ""


def _stdout_to_devnull() -> None:
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):  # a replaced stdout (tests) has no descriptor
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, fd)
    os.close(devnull)
