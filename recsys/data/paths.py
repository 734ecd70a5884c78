"""Image files named by the data stay inside the dataset's image folder.

A data file names its images: PAMELA's ``image_path``, PARA's ``sessionId``/``imageName``, LAPIS's
``image_filename``, FLICKR-AES's ``imagePair``, the ``path`` column of a table's ``items.csv``. Each name is
joined to the folder the layout reads it from and resolved (symlinks and ``..``); the file must then lie inside
the dataset's image folder, itself resolved, so that a symlinked ``images/`` folder works while an absolute
name, a ``../`` or a link inside the folder that leads out of it does not. Such a name is a problem naming the
file, the row and the name (``recsys data validate`` lists it; loading stops at it), so that no command (the
atlas's thumbnails, ``--encoder``, the MLLM scorer) ever opens a file the data point outside the dataset.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

#: the most escaping rows named in one problem line (the rest are counted)
_NAMED = 3


def _is_name(value) -> bool:
    return isinstance(value, str) and bool(value.strip())


def resolve_inside(folder: Path, name: str, inside: Path) -> Path | None:
    """``folder / name`` with symlinks and ``..`` resolved, or None when that is outside ``inside`` (resolved),
    or when ``name`` is absolute."""
    if os.path.isabs(name) or Path(name).drive:
        return None
    resolved = (folder / name).resolve()
    return resolved if resolved.is_relative_to(inside.resolve()) else None


def image_paths(
    names: Sequence,
    labels: Sequence[str],
    *,
    folder: Path,
    inside: Path | None = None,
    where: str,
    problems: list[str],
    existing: bool = True,
) -> list[str | None]:
    """The resolved path (str) of each image named in ``names``, checked to lie inside ``inside`` (default
    ``folder``), the image folder of the dataset.

    Args:
        names: per image, a name relative to ``folder``, or a tuple of candidate names (the first that is a file
            wins); None or blank: the image has no file.
        labels: per image, where its name was read (``row 12``, ``entry 3``), for the problem line.
        where: the file the names come from.
        problems: one problem is appended naming the escaping rows and their count (none when all stay in).
        existing: None for a name whose file does not exist (else its resolved path all the same).
    """
    inside = folder if inside is None else inside
    out: list[str | None] = []
    escaping: list[str] = []
    for name, label in zip(names, labels, strict=True):
        candidates = [n for n in (name if isinstance(name, tuple) else (name,)) if _is_name(n)]
        found = None
        for candidate in candidates:
            resolved = resolve_inside(folder, str(candidate), inside)
            if resolved is None:
                escaping.append(f"{candidate!r} at {label}")
                break
            if not existing or resolved.is_file():
                found = str(resolved)
                break
        out.append(found)
    if escaping:
        named = "; ".join(escaping[:_NAMED])
        more = f" (and {len(escaping) - _NAMED} more)" if len(escaping) > _NAMED else ""
        problems.append(
            f"{where}: image path {named}{more} leads outside the image folder {inside}; image paths must be "
            "relative and stay inside it (no absolute path, no '..', no link out of it)"
        )
    return out
