"""User images to MNIST-style 28 x 28 inputs, for ``jaxmlp predict``.

MNIST digits are light strokes on a black background, scaled so that the digit's bounding box
fits 20 x 20 pixels and placed in a 28 x 28 frame with its centre of mass at the centre (LeCun
et al.'s preprocessing). A photo or drawing of a digit of any size looks nothing like that
until it gets the same treatment, so [`to_mnist`][jaxmlp.images.to_mnist] applies it:

1. flatten transparency onto the background and convert to 8-bit grayscale;
2. invert when the background is light (a dark digit on paper), judged from the border pixels;
3. subtract the background level and stretch the strokes to 0..255;
4. crop to the strokes' bounding box, scale the longer side to 20 pixels (aspect kept);
5. paste into 28 x 28 black so that the centre of mass lands on the centre.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

SIDE = 28
BOX = 20
INVERT_CHOICES = ("auto", "yes", "no")


class ImageError(ValueError):
    """An image file cannot be read or holds no visible digit."""


def read_grayscale(path: str | os.PathLike[str]) -> np.ndarray:
    """An image file as an (H, W) uint8 array; transparency is composited onto white.

    Images of more than ``PIL.Image.MAX_IMAGE_PIXELS`` pixels (about 89 megapixels) are refused
    before they are decoded: decoding one could take gigabytes of memory (a "decompression
    bomb"), and a digit needs a few hundred pixels a side at most.
    """
    path = Path(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            opened = Image.open(path)  # reads the header only; PIL checks the size here
        with opened as image:
            image.load()
            if image.mode in ("RGBA", "LA") or (image.mode == "P" and "transparency" in image.info):
                rgba = image.convert("RGBA")
                background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
                image = Image.alpha_composite(background, rgba)
            if image.mode == "F" or image.mode.startswith("I"):
                return _scale_to_uint8(path, np.asarray(image, np.float64), image.mode == "F")
            gray = ImageOps.grayscale(image.convert("RGB")) if image.mode != "L" else image
            return np.asarray(gray, dtype=np.uint8)
    except FileNotFoundError:
        raise ImageError(f"{path}: no such image file") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise ImageError(
            f"{path}: too large to decode safely ({str(e).rstrip('.')}); scale it down first: "
            "a digit needs a few hundred pixels a side at most"
        ) from None
    except (UnidentifiedImageError, OSError) as e:
        raise ImageError(f"{path}: cannot read as an image ({e})") from None


def _scale_to_uint8(path: Path, values: np.ndarray, floating: bool) -> np.ndarray:
    """Floating-point or 16/32-bit pixels, refused if not finite; integer pixels that fit in
    0..255 are kept, others are scaled by their own range."""
    bad = int(values.size - np.count_nonzero(np.isfinite(values)))
    if bad:
        raise ImageError(f"{path}: {bad} NaN or infinite pixel values; expected finite pixels")
    low, high = float(values.min(initial=0.0)), float(values.max(initial=0.0))
    if not floating and low >= 0 and high <= 255:
        return values.astype(np.uint8)
    span = high - low
    if span == 0:
        return np.zeros(values.shape, np.uint8)
    return np.round((values - low) / span * 255).astype(np.uint8)


def light_background(gray: np.ndarray) -> bool:
    """Whether the image's border (outer 5% on each side) is brighter than mid-gray."""
    h, w = gray.shape
    band = max(1, round(0.05 * min(h, w)))
    border = np.concatenate(
        [gray[:band].ravel(), gray[-band:].ravel(), gray[:, :band].ravel(), gray[:, -band:].ravel()]
    )
    return float(np.median(border)) > 127.5


def to_mnist(gray: np.ndarray, *, invert: str = "auto", source: str = "image") -> np.ndarray:
    """A grayscale image (H, W) uint8 as a (28, 28) uint8 MNIST-style digit (light on dark).

    ``invert``: ``"auto"`` inverts when the border is light, ``"yes"`` always, ``"no"`` never.
    Raises [`ImageError`][jaxmlp.images.ImageError] if nothing stands out from the background.
    """
    if invert not in INVERT_CHOICES:
        raise ValueError(f"invert={invert!r}; expected one of {', '.join(INVERT_CHOICES)}")
    if gray.ndim != 2 or gray.size == 0:
        raise ImageError(f"{source}: expected a 2-D grayscale image, got shape {gray.shape}")
    flip = light_background(gray) if invert == "auto" else invert == "yes"
    x = (255.0 - gray.astype(np.float64)) if flip else gray.astype(np.float64)
    # Paper is rarely pure white: remove the background level so only strokes remain.
    x = np.clip(x - np.median(x), 0.0, None)
    peak = x.max()
    if peak < 16:
        raise ImageError(f"{source}: no digit found (the image is nearly uniform)")
    x = x * (255.0 / peak)
    mask = x > 0.2 * 255.0
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    x = x[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    h, w = x.shape
    scale = BOX / max(h, w)
    new_size = (max(1, round(w * scale)), max(1, round(h * scale)))
    small = Image.fromarray(x.astype(np.uint8)).resize(new_size, Image.Resampling.LANCZOS)
    digit = np.asarray(small, dtype=np.float64)
    out = np.zeros((SIDE, SIDE), np.float64)
    top, left = (SIDE - digit.shape[0]) // 2, (SIDE - digit.shape[1]) // 2
    out[top : top + digit.shape[0], left : left + digit.shape[1]] = digit
    out = _center_of_mass_shift(out)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def _center_of_mass_shift(image: np.ndarray) -> np.ndarray:
    """Translate by whole pixels so that the intensity-weighted centre is the frame's centre."""
    total = image.sum()
    if total == 0:
        return image
    ys, xs = np.indices(image.shape)
    cy, cx = (ys * image).sum() / total, (xs * image).sum() / total
    dy, dx = round((SIDE - 1) / 2 - cy), round((SIDE - 1) / 2 - cx)
    shifted = np.zeros_like(image)
    src_y = slice(max(0, -dy), min(SIDE, SIDE - dy))
    src_x = slice(max(0, -dx), min(SIDE, SIDE - dx))
    dst_y = slice(max(0, dy), min(SIDE, SIDE + dy))
    dst_x = slice(max(0, dx), min(SIDE, SIDE + dx))
    shifted[dst_y, dst_x] = image[src_y, src_x]
    return shifted


def load_digit(path: str | os.PathLike[str], *, invert: str = "auto") -> np.ndarray:
    """An image file as a (28, 28) uint8 MNIST-style digit; see
    [`to_mnist`][jaxmlp.images.to_mnist]."""
    return to_mnist(read_grayscale(path), invert=invert, source=str(path))
