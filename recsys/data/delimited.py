"""Reading a delimited rating table as its author wrote it: the delimiter and the header are found, not assumed.

* Delimiter: ``::`` (MovieLens-1M's ``ratings.dat``), tab (MovieLens-100k's ``u.data``, RecBole's atomic files),
  comma, semicolon, ``|``, or runs of whitespace: the first that splits every one of the first lines into the
  same number (two or more) of fields, in that order. ``sep`` overrides it.
* Header: the first line is a header when one of its fields names a rating-table column (``user_id``,
  ``item_id``, ``score``, ``split``, a name mapped by ``--columns``, or an alias below), or when a column that is
  numeric on every later line is not numeric on the first. ``header=False`` (``--no-header``) says there is none.
* A headerless table gets its columns by position: user_id, item_id, score and, with a fourth column, timestamp
  (MovieLens' ``u.data`` and ``ratings.dat``); the loader prints one line saying so.
* Header names: RecBole's type suffixes are dropped (``user_id:token`` -> ``user_id``), and when the table lacks
  a needed column one well-known spelling of it stands in (``rating`` for score, ``userId`` for user_id,
  ``movieId`` or ``itemId`` for item_id, as in MovieLens' ``ratings.csv``), again with one printed line.
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from recsys.errors import UserError

#: delimiters tried in this order; "whitespace" is any run of spaces and tabs
DELIMITERS = ("::", "\t", ",", ";", "|", "whitespace")
#: names ``--sep`` accepts for delimiters that are awkward to type
SEP_NAMES = {
    "tab": "\t",
    "\\t": "\t",
    "comma": ",",
    "semicolon": ";",
    "pipe": "|",
    "whitespace": "whitespace",
}
SEP_NAMES |= {"space": "whitespace"}
#: lines read to find the delimiter and the header
SNIFF_LINES = 50
#: stands in for a delimiter of several characters (it cannot occur in text)
UNIT_SEPARATOR = "\x1f"
#: a headerless table's columns by position
POSITIONAL_COLUMNS = ("user_id", "item_id", "score", "timestamp")
#: well-known spellings standing in for a needed column the table lacks (compared in lower case)
ALIASES = {
    "user_id": ("userid",),
    "item_id": ("itemid", "movieid", "movie_id"),
    "score": ("rating",),
}
RATING_COLUMNS = ("user_id", "item_id", "score", "split")
#: RecBole atomic files write ``name:type``
RECBOLE_SUFFIX = re.compile(r":(token|token_seq|float|float_seq)$")


@dataclass
class TableFormat:
    """How a delimited table was read: its delimiter, whether it had a header, and what was renamed."""

    sep: str
    header: bool
    renamed: dict[str, str] = field(default_factory=dict)  # the file's name -> the column it stands for

    def notes(self, path: Path) -> list[str]:
        """One line per thing the reader decided that the user did not say (printed by the loader)."""
        lines = []
        if not self.header:
            lines.append(
                f"{path.name}: no header line; columns read by position as {', '.join(self.renamed.values())} "
                "(add a header or pass --columns if that is wrong)"
            )
        elif self.renamed:
            pairs = ", ".join(f"{old} as {new}" for old, new in self.renamed.items())
            lines.append(f"{path.name}: read column(s) {pairs}")
        return lines


def parse_sep(text: str | None) -> str | None:
    """``--sep``: a delimiter as typed (``,`` ``;`` ``::``) or named (tab, comma, semicolon, pipe, whitespace)."""
    if text is None:
        return None
    sep = SEP_NAMES.get(text.lower(), text)
    if not sep or sep.isalnum() or '"' in sep:
        raise UserError(
            f"--sep {text!r}: expected a delimiter such as , ; :: | or one of {', '.join(SEP_NAMES)}"
        )
    return sep


def _read_lines(path: Path, limit: int) -> tuple[list[str], str]:
    """The first ``limit`` non-empty lines and the encoding that reads them (UTF-8, else Latin-1)."""
    for encoding in ("utf-8-sig", "latin-1"):
        try:
            with open(path, encoding=encoding, newline="") as fh:
                lines = []
                for line in fh:
                    if line.strip():
                        lines.append(line.rstrip("\r\n"))
                    if len(lines) >= limit:
                        break
            return lines, encoding
        except UnicodeDecodeError:
            continue
    raise UserError(f"{path}: cannot be decoded as UTF-8 or Latin-1 text")


def split_line(line: str, sep: str) -> list[str]:
    """The fields of one line under ``sep`` (quotes respected for one-character delimiters)."""
    if sep == "whitespace":
        return line.split()
    if len(sep) == 1:
        return next(csv.reader([line], delimiter=sep))
    return line.split(sep)


def sniff_sep(lines: list[str]) -> str | None:
    """The first of ``DELIMITERS`` that splits every line into the same number (two or more) of fields."""
    for sep in DELIMITERS:
        counts = {len(split_line(line, sep)) for line in lines}
        if len(counts) == 1 and counts.pop() >= 2:
            return sep
    return None


def _numeric(value: str) -> bool:
    try:
        float(value)
    except ValueError:
        return False
    return True


def normalise_name(name: str) -> str:
    """A header name without surrounding whitespace and without a RecBole type suffix."""
    return RECBOLE_SUFFIX.sub("", str(name).strip())


def looks_like_header(rows: list[list[str]], known: set[str]) -> bool:
    """True when the first row names a known column, or is not numeric in a column numeric on every other row."""
    first, rest = rows[0], rows[1:]
    names = {normalise_name(v).lower() for v in first}
    if names & {k.lower() for k in known}:
        return True
    for column, value in enumerate(first):
        below = [r[column] for r in rest if column < len(r)]
        if below and all(_numeric(v) for v in below) and not _numeric(value):
            return True
    return False


def known_names(columns: dict[str, str] | None) -> set[str]:
    """Every name that marks a first line as a header: the rating columns, their aliases, ``--columns``'s."""
    names = set(RATING_COLUMNS) | {alias for spellings in ALIASES.values() for alias in spellings}
    return names | set((columns or {}).values())


def read_delimited(
    path: Path,
    *,
    sep: str | None = None,
    header: bool | None = None,
    columns: dict[str, str] | None = None,
) -> tuple[pd.DataFrame, TableFormat]:
    """A delimited rating table and how it was read (see the module docstring).

    Raises:
        UserError: no delimiter splits the first lines alike, a headerless table has a number of columns other
            than 3 or 4, or pandas cannot parse the file.
    """
    lines, encoding = _read_lines(path, SNIFF_LINES)
    if not lines:
        raise UserError(f"{path}: the file is empty")
    if sep is None:
        sep = sniff_sep(lines)
        if sep is None:
            raise UserError(
                f"{path}: cannot tell the delimiter (tried :: tab , ; | and whitespace: the first lines split into "
                "different numbers of fields); pass --sep"
            )
    rows = [split_line(line, sep) for line in lines]
    if header is None:
        header = len(rows) > 1 and looks_like_header(rows, known_names(columns))
    source: Path | io.StringIO = path
    options: dict = {"header": 0 if header else None}
    if sep == "whitespace":
        options["sep"] = r"\s+"
    elif len(sep) > 1:  # pandas' C parser takes one character: a unit separator stands in (7x faster)
        source = io.StringIO(path.read_text(encoding=encoding).replace(sep, UNIT_SEPARATOR))
        options["sep"] = UNIT_SEPARATOR
    else:
        options |= {"sep": sep, "encoding": encoding}
    try:
        table = pd.read_csv(source, **options)
    except Exception as err:  # pandas raises many types for unreadable files
        raise UserError(f"{path}: cannot be read as a table ({type(err).__name__}: {err})") from None
    fmt = TableFormat(sep, header)
    if not header:
        if table.shape[1] not in (3, 4):
            raise UserError(
                f"{path}: {table.shape[1]} column(s) and no header line; a headerless table has user, item, score "
                "and optionally timestamp, in that order: add a header (user_id, item_id, score) and --columns "
                "for other names"
            )
        fmt.renamed = dict(zip(table.columns, POSITIONAL_COLUMNS, strict=False))
        table.columns = list(fmt.renamed.values())
        return table, fmt
    table.columns = [normalise_name(c) for c in table.columns]
    return table, fmt


def apply_aliases(table: pd.DataFrame, fmt: TableFormat) -> pd.DataFrame:
    """``table`` with a well-known spelling renamed to each needed column it lacks (after ``--columns``), and
    the renames recorded in ``fmt``."""
    lower = {str(c).lower(): c for c in table.columns}
    renames = {}
    for column, spellings in ALIASES.items():
        if column in table.columns:
            continue
        found = [lower[s] for s in spellings if s in lower]
        if len(found) == 1:
            renames[found[0]] = column
    fmt.renamed |= renames
    return table.rename(columns=renames)
