"""Reading the files a user hands over or leaves in a folder, without hanging or recursing without bound.

* ``regular_file`` / ``read_text``: a file the suite finds by name in a data folder, a saved model or a cache
  (state.json, config.json, a manifest, a sidecar) must be a regular file. A FIFO there would block the read
  forever and a device would never end; either is refused in one line. Files named on the command line
  (``--references <(...)``) are read as they are: a pipe is a legitimate input there.
* ``loads`` / ``read_json``: JSON is parsed by the standard library, then its nesting depth is checked against
  ``MAX_JSON_DEPTH`` (level by level, without recursion). The standard decoder itself raises RecursionError
  near the interpreter's recursion limit, and every consumer that walks the result (``repr``, ``json.dumps``,
  the saved-state decoder) recurses too; both become a ``JSONDepthError``. ``JSONDepthError`` is a
  ``json.JSONDecodeError``, so a caller's ``except json.JSONDecodeError`` words it like any malformed file.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

from recsys.errors import UserError

#: the deepest nesting of arrays and objects accepted in any JSON the suite reads (its own files nest < 10)
MAX_JSON_DEPTH = 100


class NotARegularFile(UserError):
    """A file the suite looks for by name is a FIFO, a socket, a device or a folder."""


class JSONDepthError(json.JSONDecodeError):
    """JSON nested deeper than ``MAX_JSON_DEPTH`` levels (a malformed or hostile file)."""

    def __init__(self, doc: str, limit: int) -> None:
        super().__init__(f"nested deeper than {limit} levels", doc, _depth_position(doc, limit))


def _kind(mode: int) -> str:
    for test, name in (
        (stat.S_ISDIR, "a folder"),
        (stat.S_ISFIFO, "a FIFO (named pipe)"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
    ):
        if test(mode):
            return name
    return "not a regular file"


def regular_file(path: str | Path, what: str = "") -> Path:
    """``path`` when it is a regular file (symlinks followed); a one-line ``NotARegularFile`` naming what it is
    otherwise. ``what`` says what the file should have been (e.g. "a saved model's state"). A missing file
    raises ``FileNotFoundError`` as ``open`` would."""
    path = Path(path)
    mode = os.stat(path).st_mode
    if not stat.S_ISREG(mode):
        should = f"; {what} must be a regular file" if what else "; expected a regular file"
        raise NotARegularFile(f"{path}: is {_kind(mode)}{should}")
    return path


def read_bytes(path: str | Path, what: str = "") -> bytes:
    """The bytes of a regular file. Opened without blocking and checked on the open descriptor, so that a
    FIFO put in place between a check and the read cannot hang the reader either."""
    path = Path(path)
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            should = f"; {what} must be a regular file" if what else "; expected a regular file"
            raise NotARegularFile(f"{path}: is {_kind(mode)}{should}")
        with os.fdopen(fd, "rb", closefd=False) as handle:
            return handle.read()
    finally:
        os.close(fd)


def read_text(path: str | Path, what: str = "", encoding: str = "utf-8") -> str:
    """The text of a regular file (see ``read_bytes``)."""
    return read_bytes(path, what).decode(encoding)


def json_depth(value: Any, limit: int = MAX_JSON_DEPTH) -> int:
    """The nesting depth of parsed JSON (a scalar 0, ``[]`` 1, ``[[1]]`` 2), counted level by level without
    recursion; the count stops at ``limit + 1``."""
    level = [value] if type(value) in (list, dict) else []
    depth = 0
    while level and depth <= limit:
        depth += 1
        children: list = []
        for item in level:
            values = item.values() if type(item) is dict else item
            children.extend([v for v in values if type(v) is dict or type(v) is list])
        level = children
    return depth


def check_depth(value: Any, where: str, limit: int = MAX_JSON_DEPTH) -> Any:
    """``value`` (parsed JSON or any nest of lists and dicts, e.g. an Optuna attribute) when it nests at most
    ``limit`` levels; a one-line ``UserError`` naming ``where`` otherwise."""
    if json_depth(value, limit) > limit:
        raise UserError(f"{where}: nested deeper than {limit} levels; a malformed or tampered value")
    return value


def loads(text: str | bytes, limit: int = MAX_JSON_DEPTH) -> Any:
    """``json.loads`` with a depth limit: ``JSONDepthError`` (a ``json.JSONDecodeError``) beyond ``limit``."""
    if isinstance(text, bytes | bytearray):
        text = text.decode("utf-8")
    try:
        value = json.loads(text)
    except RecursionError:
        raise JSONDepthError(text, limit) from None
    if json_depth(value, limit) > limit:
        raise JSONDepthError(text, limit)
    return value


def read_json(path: str | Path, what: str = "", limit: int = MAX_JSON_DEPTH) -> Any:
    """The JSON in a regular file (``read_text``), depth-limited (``loads``)."""
    return loads(read_text(path, what), limit)


def _depth_position(doc: str, limit: int) -> int:
    """Where the first bracket beyond ``limit`` levels opens (strings skipped); 0 if none does (a decoder
    RecursionError at a lower depth). Only runs on the error path."""
    depth, in_string, escaped = 0, False, False
    for position, char in enumerate(doc):
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            if depth > limit:
                return position
        elif char in "]}":
            depth -= 1
    return 0
