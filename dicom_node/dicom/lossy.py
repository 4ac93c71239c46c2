"""Whether the images a synthetic series was made from were ever lossy compressed.

PS3.3 C.7.6.1.1.5: once an image has been through lossy compression its Lossy Image
Compression (0028,2110) is "01" and stays so, and an image derived from lossy sources is
lossy too (stated so for Segmentation, C.8.20.2.2, and the only honest reading for a
synthetic image). The node's models lose accuracy on heavily compressed inputs
(docs/models.md, robustness table), so a physicist looking at a synthetic CT must be able
to see that its T1 came through JPEG 2000 at 20:1.

A source counts as lossy when its header says "01", when it arrived in a transfer syntax
that is lossy by definition (JPEG baseline and extended, JPEG-LS near-lossless), or when
it arrived as JPEG 2000 / HTJ2K whose code stream uses the irreversible 9-7 wavelet, which
cannot reproduce the original values (a sender may compress so and not set the
attribute; pydicom's encoder does not). It counts as known-lossless only when its header
says "00" and nothing above contradicts it; otherwise its history is unknown.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from pydicom.dataset import Dataset
from pydicom.encaps import generate_frames
from pydicom.multival import MultiValue

LOSSY_BY_DEFINITION = {
    "1.2.840.10008.1.2.4.50": "ISO_10918_1",
    "1.2.840.10008.1.2.4.51": "ISO_10918_1",
    "1.2.840.10008.1.2.4.81": "ISO_14495_1",
}
"""Transfer syntax → the Lossy Image Compression Method (CID 7073 defined terms) it implies."""

WAVELET_TRANSFER_SYNTAXES = {
    "1.2.840.10008.1.2.4.91": "ISO_15444_1",
    "1.2.840.10008.1.2.4.203": "ISO_15444_15",
}
"""JPEG 2000 and HTJ2K transfer syntaxes that may be lossy or lossless: the code stream says."""

_SOC, _COD = b"\xff\x4f", b"\xff\x52"
_IRREVERSIBLE_9_7 = 0


@dataclass(frozen=True)
class LossyHistory:
    """What the sources say about lossy compression: "01" with the methods and ratios
    they name (in first-seen order), or "00" when every source says it never was."""

    value: str
    methods: tuple[str, ...] = ()
    ratios: tuple[str, ...] = ()

    def describe(self) -> str:
        """A phrase for the Derivation Description of an output from lossy sources."""
        how = ", ".join(self.methods) or "method not stated"
        if self.ratios:
            how += f", ratio {'/'.join(self.ratios)}:1"
        return f"from lossy-compressed input ({how})"


def _irreversible_code_stream(ds: Dataset) -> bool:
    """The first frame's JPEG 2000 COD marker names the 9-7 irreversible wavelet."""
    try:
        frames = generate_frames(ds.PixelData, number_of_frames=int(ds.get("NumberOfFrames", 1)))
        frame = next(frames)
    except (StopIteration, ValueError, TypeError, AttributeError):
        return False
    start = frame.find(_SOC)
    cod = frame.find(_COD, start) if start >= 0 else -1
    # COD (ISO/IEC 15444-1 A.6.1): marker (2), Lcod (2), Scod (1), SGcod (4), then SPcod:
    # levels, code-block width, height, style (4), and the transformation byte.
    at = cod + 2 + 2 + 1 + 4 + 4
    return cod >= 0 and len(frame) > at and frame[at] == _IRREVERSIBLE_9_7


def implied_method(ds: Dataset) -> str | None:
    """The method a lossy transfer syntax or code stream implies; None if it implies none
    (or ``ds`` holds no Pixel Data to tell)."""
    meta = getattr(ds, "file_meta", None)
    syntax = str(meta.get("TransferSyntaxUID", "")) if meta is not None else ""
    if syntax in LOSSY_BY_DEFINITION:
        return LOSSY_BY_DEFINITION[syntax]
    if syntax in WAVELET_TRANSFER_SYNTAXES and "PixelData" in ds and _irreversible_code_stream(ds):
        return WAVELET_TRANSFER_SYNTAXES[syntax]
    return None


def _values(ds: Dataset, keyword: str) -> list[str]:
    value = ds.get(keyword)
    if value is None or value == "":
        return []
    items = list(value) if isinstance(value, MultiValue | list | tuple) else [value]
    return [str(v) for v in items]


def _ratios(ds: Dataset) -> list[str]:
    """The stated ratios as plain numbers ("20", "12.5"); values that are none are left out."""
    out = []
    for value in _values(ds, "LossyImageCompressionRatio"):
        try:
            out.append(f"{float(value):g}")
        except ValueError:
            continue
    return out


def state_implied_history(source: Dataset, header: Dataset) -> None:
    """Writes into ``header``, made from ``source`` without its Pixel Data (a frame's
    header), the Lossy Image Compression "01" and method that ``source``'s code stream
    implies and may not state, so that :func:`lossy_history` of the header finds it."""
    method = implied_method(source)
    if method is None:
        return
    header.add_new("LossyImageCompression", "CS", "01")
    stated = _values(source, "LossyImageCompressionMethod")
    if method not in stated:
        header.add_new("LossyImageCompressionMethod", "CS", [*stated, method])


def lossy_history(headers: Iterable[Dataset]) -> LossyHistory | None:
    """The history the output inherits from the source ``headers``; None when unknown
    (no source lossy, not every source stating "00")."""
    methods: dict[str, None] = {}
    ratios: dict[str, None] = {}
    lossy = False
    all_stated_lossless = True
    seen = False
    for ds in headers:
        seen = True
        stated = str(ds.get("LossyImageCompression", "") or "")
        implied = implied_method(ds)
        if stated == "01" or implied is not None:
            lossy = True
            methods.update(dict.fromkeys(_values(ds, "LossyImageCompressionMethod")))
            ratios.update(dict.fromkeys(_ratios(ds)))
            if implied is not None:
                methods[implied] = None
        if stated != "00" or implied is not None:
            all_stated_lossless = False
    if lossy:
        return LossyHistory("01", tuple(methods), tuple(ratios))
    if seen and all_stated_lossless:
        return LossyHistory("00")
    return None
