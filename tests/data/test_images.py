"""Decompression bombs and non-regular files are refused wherever an image is opened, in one line naming it:
``open_image`` itself, the atlas's thumbnails and the embedding pipeline (files and bytes)."""

from __future__ import annotations

import os
import resource
import struct
import warnings
import zlib

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from features.embed import embed_image_bytes, embed_images
from features.encoders import TINY_ARCHITECTURE, load_encoder, register_architecture
from recsys.atlas import thumbnails
from recsys.data.images import ImageTooLarge, NotAnImageFile, open_image
from recsys.errors import UserError


def png_bomb(width: int, height: int) -> bytes:
    """A valid PNG header declaring ``width`` x ``height`` pixels, with a few bytes of image data: what a
    decompression bomb looks like before it is decoded."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + chunk(b"IEND", b"")
    )


@pytest.fixture()
def bomb(tmp_path):
    path = tmp_path / "bomb.png"
    path.write_bytes(png_bomb(100_000, 100_000))  # 10^10 pixels: 30 GB decoded, 100 bytes on disk
    return path


@pytest.fixture()
def small(tmp_path):
    path = tmp_path / "small.png"
    Image.fromarray(np.full((40, 30, 3), 200, np.uint8)).save(path)
    return path


def test_a_bomb_file_is_refused_from_its_header(bomb):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(ImageTooLarge, match=rf"{bomb}: over 178,956,970 pixels, more than the 89,478,485 an"):
        open_image(bomb)
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 100_000  # KiB: nothing decoded


def test_an_image_between_the_limit_and_twice_it_is_refused_too(small, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 30 x 40 = 1200: PIL itself would only warn
    with warnings.catch_warnings(record=True) as shown:  # the filters in force, recorded instead of printed
        with pytest.raises(ImageTooLarge, match=r"small.png: 30 x 40 = 1,200 pixels, more than the 1,000"):
            open_image(small)
    assert not [w for w in shown if issubclass(w.category, Image.DecompressionBombWarning)]  # one line only
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1200)
    assert open_image(small).size == (30, 40)


def test_bytes_and_fifos(small, tmp_path, deadline):
    assert open_image(small.read_bytes()).size == (30, 40)
    with pytest.raises(ImageTooLarge, match="upload 3: over"):
        open_image(png_bomb(50_000, 50_000), "upload 3")
    fifo = tmp_path / "fifo.png"
    os.mkfifo(fifo)
    with deadline(20), pytest.raises(NotAnImageFile, match="fifo.png: not a regular file"):
        open_image(fifo)


def test_atlas_thumbnails_leave_a_bomb_out_with_one_line(bomb, small, capsys):
    dataset = type("Data", (), {"images": pd.DataFrame({"path": [str(small), str(bomb), None]})})()
    out = thumbnails(dataset, [0, 1, 2])
    assert list(out) == [0] and out[0].startswith("data:image/jpeg;base64,")
    err = capsys.readouterr().err.splitlines()
    assert (
        len(err) == 1
        and err[0].startswith(f"warning: {bomb}: over ")
        and "shown without a thumbnail" in err[0]
    )


@pytest.fixture(scope="module")
def encoder():
    register_architecture("recsys-test-tiny", TINY_ARCHITECTURE)
    return load_encoder("clip:recsys-test-tiny/random", device="cpu")


def test_embedding_refuses_a_bomb_file_in_one_line_or_skips_it(encoder, bomb, small, tmp_path):
    paths, ids = [small, bomb], np.array([1, 2])
    options = {"cache_dir": tmp_path / "cache", "progress": False, "num_workers": 2}
    with pytest.raises(UserError) as caught:
        embed_images(paths, ids, encoder, **options)
    message = str(caught.value)
    assert (
        "\n" not in message and f"1 image file(s) missing or unreadable: {bomb} (over 178,956,970" in message
    )
    result = embed_images(paths, ids, encoder, skip_bad_images=True, **options)
    assert result.image_id.tolist() == [1] and result.bad[0].path == str(bomb)
    assert "decompression bomb" in result.bad[0].reason


def test_embedding_bytes_refuses_a_bomb(encoder, small, tmp_path):
    items = [("a", small.read_bytes(), "upload 0"), ("b", png_bomb(60_000, 60_000), "upload 1")]
    with pytest.raises(UserError, match=r"1 image\(s\) missing or unreadable: upload 1 \(over 178,956,970"):
        embed_image_bytes(items, encoder, cache_dir=tmp_path / "cache", progress=False, num_workers=0)
