"""Reading user images for ``jaxmlp predict``: what cannot be decoded safely is refused."""

import struct
import zlib

import pytest

from jaxmlp import images


def _png_header(path, width, height):
    """A PNG that declares ``width`` x ``height`` grey pixels (its pixel data is never read)."""

    def chunk(kind, data):
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IEND", b""))
    return path


@pytest.mark.parametrize("side", [30000, 12000])  # over twice PIL's limit, and just over it
def test_an_image_too_large_to_decode_safely_is_refused_before_decoding(tmp_path, side):
    path = _png_header(tmp_path / "huge.png", side, side)
    with pytest.raises(images.ImageError, match=r"huge.png: too large to decode safely"):
        images.read_grayscale(path)
