"""Draws the sample digit images used by the predict tests and the documentation.

Run from the repository root: ``python tests/assets/digits/draw.py``. The images imitate what a
user might draw: different sizes, dark ink on light paper or light strokes on a dark screen, a
JPEG, and a PNG with a transparent background.
"""

from pathlib import Path

from PIL import Image, ImageDraw

HERE = Path(__file__).parent


def seven() -> Image.Image:
    image = Image.new("L", (300, 400), 245)  # off-white paper, portrait
    draw = ImageDraw.Draw(image)
    draw.line([(70, 90), (230, 85)], fill=20, width=40)
    draw.line([(225, 90), (120, 330)], fill=20, width=40)
    return image


def zero() -> Image.Image:
    image = Image.new("L", (220, 220), 0)  # black screen, white stroke
    ImageDraw.Draw(image).ellipse([60, 30, 160, 190], outline=255, width=26)
    return image


def one() -> Image.Image:
    image = Image.new("RGB", (160, 240), (232, 228, 220))  # grey-beige paper, photographed
    ImageDraw.Draw(image).line([(88, 40), (74, 205)], fill=(30, 30, 60), width=24)
    return image


def three() -> Image.Image:
    image = Image.new("RGBA", (256, 256), (0, 0, 0, 0))  # transparent background, dark ink
    draw = ImageDraw.Draw(image)
    draw.arc([70, 30, 180, 130], start=200, end=90, fill=(10, 10, 10, 255), width=28)
    draw.arc([65, 115, 185, 230], start=270, end=160, fill=(10, 10, 10, 255), width=28)
    return image


if __name__ == "__main__":
    seven().save(HERE / "seven_dark_on_light.png")
    zero().save(HERE / "zero_light_on_dark.png")
    one().save(HERE / "one_dark_on_light.jpg", quality=90)
    three().save(HERE / "three_transparent.png")
