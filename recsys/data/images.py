"""Opening an image, file or bytes, in one place: decompression bombs and non-regular files are refused.

Every image the suite decodes (the atlas's thumbnails, ``features embed`` and ``--encoder``, ``rank``'s new
images, the service's uploads, the MLLM scorer) goes through ``open_image``. Its size is read from the header
and an image of more than ``PIL.Image.MAX_IMAGE_PIXELS`` pixels (about 89 million by default, e.g. 9,459 x
9,459) is refused before any pixel is decoded: a small file that declares a huge canvas would otherwise take
gigabytes of memory. A path must be a regular file: a FIFO put among the images would block a decoding thread
forever. Each refusal is a ``UserError`` naming the file.
"""

from __future__ import annotations

import io
import os
import stat
import warnings
from pathlib import Path

from PIL import Image

from recsys.errors import UserError


def _quiet_bomb_warning() -> None:
    """PIL warns (and decodes) between MAX_IMAGE_PIXELS and twice that; ``open_image`` refuses those images
    itself, in one line, so the multi-line warning would only repeat it. Checked on every call: a filter set
    at import time is lost when the import ran inside ``warnings.catch_warnings``."""
    for action, _, category, _, _ in warnings.filters:
        if category is Image.DecompressionBombWarning and action == "ignore":
            return
    warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)


class ImageTooLarge(UserError):
    """An image whose header declares more pixels than ``PIL.Image.MAX_IMAGE_PIXELS``."""


class NotAnImageFile(UserError, OSError):
    """A path among the images that is not a regular file (a FIFO, a device, a folder)."""


def pixel_limit() -> int | None:
    """The most pixels an image may have (``PIL.Image.MAX_IMAGE_PIXELS``; None: no limit)."""
    return Image.MAX_IMAGE_PIXELS


def _too_large(where: str, pixels: str, limit: int) -> ImageTooLarge:
    return ImageTooLarge(
        f"{where}: {pixels} pixels, more than the {limit:,} an image may have (a decompression bomb?); shrink or "
        "remove the image"
    )


def open_image(source: str | Path | bytes, where: str | None = None) -> Image.Image:
    """The decoded image at a path or in encoded bytes (the file is closed when this returns).

    Raises:
        ImageTooLarge: more pixels than ``pixel_limit()``, refused from the header.
        NotAnImageFile: a path that is not a regular file.
        OSError, ValueError: a missing file, or data PIL cannot decode (``UnidentifiedImageError`` is an
            OSError), as ``PIL.Image.open`` raises them.
    """
    if isinstance(source, bytes | bytearray | memoryview):
        where = where or "image bytes"
        handle = io.BytesIO(source)
    else:
        where = where or str(source)
        fd = os.open(source, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            os.close(fd)
            raise NotAnImageFile(f"{where}: not a regular file; an image must be a file")
        handle = os.fdopen(fd, "rb")
    limit = pixel_limit()
    _quiet_bomb_warning()
    with handle:
        try:
            image = Image.open(handle)
        except Image.DecompressionBombError:
            # PIL refuses beyond twice its limit before returning: read the declared size from its message
            raise _too_large(where, f"over {2 * (limit or 0):,}", limit or 0) from None
        width, height = image.size
        if limit is not None and width * height > limit:
            image.close()
            raise _too_large(where, f"{width} x {height} = {width * height:,}", limit)
        image.load()  # decode now, while the file is open: a truncated file fails here, not in a later use
    return image
