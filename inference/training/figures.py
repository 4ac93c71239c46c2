"""Side-by-side figures (PNG): rows of captioned, windowed grey-scale panels."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from inference.geometry import FloatArray

Panel = tuple[str, FloatArray, float, float]
"""(caption, 2-D image, window low, window high)."""


def _windowed(image: FloatArray, lo: float, hi: float, zoom: int) -> Image.Image:
    scaled = np.clip((image.astype(np.float32) - lo) / (hi - lo) * 255, 0, 255)
    picture = Image.fromarray(scaled.astype(np.uint8))
    return picture.resize((image.shape[1] * zoom, image.shape[0] * zoom), Image.Resampling.BILINEAR)


def panel_figure(rows: list[list[Panel]], path: Path, zoom: int = 2) -> Path:
    """Writes the panels, one list per row, each with its caption above it."""
    pictures = [[(c, _windowed(im, lo, hi, zoom)) for c, im, lo, hi in row] for row in rows]
    width = max(sum(p.width for _, p in row) for row in pictures)
    height = sum(max(p.height for _, p in row) + 16 for row in pictures)
    canvas = Image.new("L", (width, height), 0)
    draw = ImageDraw.Draw(canvas)
    y = 0
    for row in pictures:
        x = 0
        for caption, picture in row:
            draw.text((x + 3, y + 2), caption, fill=255)
            canvas.paste(picture, (x, y + 16))
            x += picture.width
        y += max(p.height for _, p in row) + 16
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path)
    return path
