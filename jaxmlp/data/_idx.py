"""IDX file format (the MNIST container), parsed with numpy.

An IDX file is a big-endian header followed by the raw array:

* bytes 0-1: zero, byte 2: element type (0x08 = unsigned byte), byte 3: number of dimensions;
* then one uint32 per dimension (the sizes);
* then ``prod(sizes)`` elements in C order.

``train-images-idx3-ubyte`` has magic ``0x00000803`` and sizes (60000, 28, 28);
``train-labels-idx1-ubyte`` has magic ``0x00000801`` and sizes (60000,).

Nothing here knows the official checksums: [`read_idx`][jaxmlp.data.read_idx] and
[`read_idx_pair`][jaxmlp.data.read_idx_pair] read any IDX file.
"""

from __future__ import annotations

import gzip
import os
import struct
import zlib
from pathlib import Path

import numpy as np

from jaxmlp.data._errors import FormatError

IMAGES_MAGIC = 0x00000803
LABELS_MAGIC = 0x00000801

# Only unsigned bytes occur in MNIST-like data; the other IDX types are listed so that a file of
# another type gets a precise error instead of being misread.
_IDX_DTYPES = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def read_bytes(path: str | os.PathLike[str]) -> bytes:
    """Returns the file's content, gunzipped when its name ends in ``.gz``.

    Raises:
        FormatError: the gzip stream is truncated or corrupt (message names the file).
    """
    path = Path(path)
    raw = path.read_bytes()
    if path.suffix != ".gz":
        return raw
    return gunzip(raw, path)


def gunzip(raw: bytes, path: str | os.PathLike[str]) -> bytes:
    """Decompresses a gzip file held in memory; errors name ``path``."""
    try:
        return gzip.decompress(raw)
    except (EOFError, OSError, zlib.error) as e:
        raise FormatError(
            f"{path}: not a complete gzip file ({len(raw)} bytes; {e}); expected a gzip-compressed "
            "IDX file, possibly truncated by an interrupted download"
        ) from e


def parse_idx(
    data: bytes,
    path: str | os.PathLike[str] = "<bytes>",
    *,
    expected_magic: int | None = None,
    expected_shape: tuple[int, ...] | None = None,
) -> np.ndarray:
    """Parses IDX bytes into a read-only numpy array sharing ``data``'s memory.

    Args:
        data: the uncompressed IDX content.
        path: used only in error messages.
        expected_magic: e.g. ``IMAGES_MAGIC``; checked when given.
        expected_shape: checked when given.

    Returns:
        An array of the header's shape and type (``uint8`` for MNIST), in file order.

    Raises:
        FormatError: bad magic, wrong shape, or a size that disagrees with the header.
    """
    if len(data) < 4:
        raise FormatError(f"{path}: {len(data)} bytes, too short for an IDX header")
    zero, type_code, ndim = struct.unpack(">HBB", data[:4])
    magic = int.from_bytes(data[:4], "big")
    if expected_magic is not None and magic != expected_magic:
        raise FormatError(
            f"{path}: IDX magic number 0x{magic:08x}, expected 0x{expected_magic:08x} "
            f"({_magic_name(expected_magic)})"
        )
    if zero != 0 or type_code not in _IDX_DTYPES or ndim == 0:
        raise FormatError(
            f"{path}: not an IDX file (magic number 0x{magic:08x}; expected 0x0000TTDD with a "
            "known type TT and at least one dimension DD)"
        )
    header = 4 + 4 * ndim
    if len(data) < header:
        raise FormatError(f"{path}: {len(data)} bytes, too short for a {ndim}-d IDX header")
    shape = struct.unpack(f">{ndim}I", data[4:header])
    if expected_shape is not None and tuple(shape) != tuple(expected_shape):
        raise FormatError(f"{path}: IDX header says shape {shape}, expected {expected_shape}")
    dtype = _IDX_DTYPES[type_code]
    expected_len = header + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(data) != expected_len:
        raise FormatError(
            f"{path}: {len(data)} bytes, but the IDX header (shape {shape}) implies "
            f"{expected_len} bytes"
        )
    return np.frombuffer(data, dtype=dtype, offset=header).reshape(shape)


def describe_idx(data: bytes) -> str:
    """One line on what an IDX blob's header says, for error messages; never raises."""
    try:
        arr = parse_idx(data)
    except FormatError as e:
        return str(e).removeprefix("<bytes>: ")
    magic = int.from_bytes(data[:4], "big")
    return f"IDX magic 0x{magic:08x} ({_magic_name(magic)}), shape {arr.shape}"


def _magic_name(magic: int) -> str:
    return {IMAGES_MAGIC: "uint8 images, 3-d", LABELS_MAGIC: "uint8 labels, 1-d"}.get(
        magic, "unknown"
    )


def read_idx(path: str | os.PathLike[str]) -> np.ndarray:
    """Reads any IDX file (gzip-compressed when the name ends in ``.gz``); no checksum.

    Returns:
        The array in file order, e.g. ``(N, 28, 28)`` uint8 images or ``(N,)`` uint8 labels.

    Raises:
        FileNotFoundError: no such file.
        FormatError: truncated gzip, bad magic number, or size disagreeing with the header.
    """
    path = Path(path)
    return parse_idx(read_bytes(path), path)


def read_idx_pair(
    images_path: str | os.PathLike[str], labels_path: str | os.PathLike[str]
) -> tuple[np.ndarray, np.ndarray]:
    """Reads an images file and a labels file and checks that they belong together; no checksum.

    Returns:
        ``(images, labels)``: ``(N, H, W)`` uint8 and ``(N,)`` uint8, in file order.

    Raises:
        FormatError: bad files, wrong magic numbers, or image and label counts that differ.
    """
    images_path, labels_path = Path(images_path), Path(labels_path)
    images = parse_idx(read_bytes(images_path), images_path, expected_magic=IMAGES_MAGIC)
    labels = parse_idx(read_bytes(labels_path), labels_path, expected_magic=LABELS_MAGIC)
    if images.shape[0] != labels.shape[0]:
        raise FormatError(
            f"{images_path} has {images.shape[0]} images but {labels_path} has "
            f"{labels.shape[0]} labels; expected the same count"
        )
    return images, labels
