"""Visible marks on synthetic images: a DICOM overlay plane, or text burned into pixels.

``overlay`` adds an Overlay Plane (PS3.3 C.9.2, group 6000) that viewers draw on top of
the image and leaves every pixel value untouched — right for a synthetic CT used for
dose calculation. ``burn_in`` writes the text into the pixels (Burned In Annotation =
YES), so that it shows in any viewer and any screenshot — right for images read by eye,
such as a synthetic FLAIR. The text is drawn with a small built-in bitmap font, so no
font files or imaging libraries are needed.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydicom.dataset import Dataset
from pydicom.pixels import pack_bits

VisibleMark = Literal["overlay", "burn_in", "none"]
MARK_TEXT = "SYNTHETIC"
OVERLAY_GROUP = 0x6000

_GLYPHS: dict[str, tuple[str, ...]] = {
    "A": (".###.", "#...#", "#...#", "#####", "#...#", "#...#", "#...#"),
    "C": (".###.", "#...#", "#....", "#....", "#....", "#...#", ".###."),
    "D": ("####.", "#...#", "#...#", "#...#", "#...#", "#...#", "####."),
    "E": ("#####", "#....", "#....", "####.", "#....", "#....", "#####"),
    "H": ("#...#", "#...#", "#...#", "#####", "#...#", "#...#", "#...#"),
    "I": (".###.", "..#..", "..#..", "..#..", "..#..", "..#..", ".###."),
    "N": ("#...#", "##..#", "#.#.#", "#..##", "#...#", "#...#", "#...#"),
    "O": (".###.", "#...#", "#...#", "#...#", "#...#", "#...#", ".###."),
    "R": ("####.", "#...#", "#...#", "####.", "#.#..", "#..#.", "#...#"),
    "S": (".####", "#....", "#....", ".###.", "....#", "....#", "####."),
    "T": ("#####", "..#..", "..#..", "..#..", "..#..", "..#..", "..#.."),
    "Y": ("#...#", "#...#", ".#.#.", "..#..", "..#..", "..#..", "..#.."),
    " ": (".....",) * 7,
    "-": (".....", ".....", ".....", "#####", ".....", ".....", "....."),
}


def text_bitmap(text: str, scale: int = 1) -> np.ndarray:
    """A boolean (rows, cols) bitmap of ``text``; refuses characters the font lacks."""
    missing = sorted({c for c in text if c not in _GLYPHS})
    if missing:
        raise ValueError(f"text {text!r}: no glyph for {missing}")
    if scale < 1:
        raise ValueError("scale must be at least 1")
    columns = []
    for char in text:
        glyph = np.array([[c == "#" for c in row] for row in _GLYPHS[char]], dtype=bool)
        columns.extend([glyph, np.zeros((7, 1), dtype=bool)])
    bitmap = np.hstack(columns[:-1])
    return np.kron(bitmap, np.ones((scale, scale), dtype=bool)).astype(bool)


def _placed(shape: tuple[int, int], text: str) -> np.ndarray:
    """The text bitmap at the top-left of an image of ``shape``, scaled to about a
    third of its width (never larger than the image)."""
    rows, cols = shape
    base = text_bitmap(text)
    scale = max(1, min(cols // (3 * base.shape[1]), rows // (6 * base.shape[0])))
    while scale > 1 and (base.shape[0] * scale + 2 > rows or base.shape[1] * scale + 2 > cols):
        scale -= 1
    bitmap = text_bitmap(text, scale)
    mask = np.zeros(shape, dtype=bool)
    margin = max(1, scale)
    h = min(bitmap.shape[0], rows - margin)
    w = min(bitmap.shape[1], cols - margin)
    mask[margin : margin + h, margin : margin + w] = bitmap[:h, :w]
    return mask


def add_overlay(ds: Dataset, text: str = MARK_TEXT, frames: int = 1) -> None:
    """Adds overlay plane 6000 carrying ``text``; pixel data are not touched. With
    ``frames`` above 1 it is a multi-frame overlay (PS3.3 C.9.2.1.3) over every frame of
    a multi-frame image, the same text on each."""
    rows, cols = int(ds.Rows), int(ds.Columns)
    mask = np.tile(_placed((rows, cols), text), (frames, 1))
    g = OVERLAY_GROUP << 16
    ds.add_new(g | 0x0010, "US", rows)
    ds.add_new(g | 0x0011, "US", cols)
    if frames > 1:
        ds.add_new(g | 0x0015, "IS", frames)
        ds.add_new(g | 0x0051, "US", 1)
    ds.add_new(g | 0x0022, "LO", f"{text} - not an acquired image")
    ds.add_new(g | 0x0040, "CS", "G")
    ds.add_new(g | 0x0050, "SS", [1, 1])
    ds.add_new(g | 0x0100, "US", 1)
    ds.add_new(g | 0x0102, "US", 0)
    ds.add_new(g | 0x1500, "LO", text)
    ds.add_new(g | 0x3000, "OW", pack_bits(mask.ravel()))


def burn_in(pixels: np.ndarray, value_range: tuple[int, int], text: str = MARK_TEXT) -> np.ndarray:
    """``pixels`` with ``text`` drawn at the brightest value of ``value_range``, outlined
    in its darkest so that it reads on any background."""
    mask = _placed((pixels.shape[-2], pixels.shape[-1]), text)
    outline = np.zeros_like(mask)
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            outline |= np.roll(np.roll(mask, dy, axis=0), dx, axis=1)
    outline &= ~mask
    out = pixels.copy()
    out[..., outline] = value_range[0]
    out[..., mask] = value_range[1]
    return out


def default_mark(modality: str) -> VisibleMark:
    """CT keeps its pixels for dose calculation (overlay); MR is read by eye (burn-in)."""
    return "overlay" if modality == "CT" else "burn_in"
