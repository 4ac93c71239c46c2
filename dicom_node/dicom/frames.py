"""Enhanced (multi-frame) images → one classic-looking header per frame.

Enhanced MR, Enhanced CT and the Legacy Converted Enhanced classes keep each frame's
geometry and rescale in functional groups (PS3.3 C.7.6.16): a macro found in a frame's
item of the Per-Frame Functional Groups Sequence applies to that frame, one found in the
Shared Functional Groups Sequence to every frame. This module writes, for each frame,
the classic attributes the volume reader and the synthetic-series writer already use:
Image Position and Orientation (Patient) (Plane Position / Plane Orientation, C.7.6.16.2.3
and .4), Pixel Spacing and Slice Thickness (Pixel Measures, C.7.6.16.2.1), Rescale Slope
and Intercept (Pixel Value Transformation, C.7.6.16.2.9).

One multi-frame object may hold several stacks — echoes, temporal positions, diffusion
weightings, magnitude and phase (C.7.6.17, Multi-frame Dimension Module). A model
takes one volume, and no rule could say which of them a route meant, so such an object
is refused with the dimension that varies named, rather than mixed into one volume.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from pydicom.dataset import Dataset

from dicom_node.dicom.lossy import state_implied_history
from dicom_node.dicom.sop_classes import ENHANCED_SOP_CLASSES

SHARED = "SharedFunctionalGroupsSequence"
PER_FRAME = "PerFrameFunctionalGroupsSequence"
_MULTI_FRAME_ONLY = frozenset({0x52009229, 0x52009230, 0x00280008, 0x7FE00010})
"""Shared and Per-Frame Functional Groups, Number of Frames, Pixel Data."""

GEOMETRY = (
    ("PlanePositionSequence", ("ImagePositionPatient",)),
    ("PlaneOrientationSequence", ("ImageOrientationPatient",)),
    ("PixelMeasuresSequence", ("PixelSpacing", "SliceThickness", "SpacingBetweenSlices")),
    ("PixelValueTransformationSequence", ("RescaleSlope", "RescaleIntercept", "RescaleType")),
)
"""Functional group macro → the classic attributes it carries for its frames."""

STACK_DIMENSIONS = (
    ("Stack ID", "FrameContentSequence", "StackID"),
    ("Temporal Position Index", "FrameContentSequence", "TemporalPositionIndex"),
    ("Effective Echo Time", "MREchoSequence", "EffectiveEchoTime"),
    ("Diffusion b-value", "MRDiffusionSequence", "DiffusionBValue"),
    ("Complex Image Component", "MRImageFrameTypeSequence", "ComplexImageComponent"),
    ("Frame Type", "MRImageFrameTypeSequence", "FrameType"),
    ("Frame Type", "CTImageFrameTypeSequence", "FrameType"),
)
"""Attributes that tell stacks apart: frames differing in any of them are not one volume."""


class FrameError(ValueError):
    """A multi-frame object cannot be read as one stack; the message says why."""


@dataclass(frozen=True)
class Frame:
    """One frame: its 1-based number in the object (None for a single-frame image) and a
    header holding the classic attributes for it."""

    number: int | None
    header: Dataset


def is_enhanced(ds: Dataset) -> bool:
    """Whether ``ds`` keeps its geometry in functional groups."""
    return str(ds.get("SOPClassUID", "")) in ENHANCED_SOP_CLASSES


def number_of_frames(ds: Dataset) -> int:
    try:
        return int(ds.get("NumberOfFrames", 1) or 1)
    except (TypeError, ValueError) as exc:
        raise FrameError("Number of Frames is not a number") from exc


def _macro(groups: Iterable[Dataset | None], keyword: str) -> Dataset | None:
    """The first item of ``keyword`` in the frame's groups, then in the shared ones."""
    for group in groups:
        if group is not None and keyword in group and len(group[keyword].value):
            item: Dataset = group[keyword].value[0]
            return item
    return None


def _items(ds: Dataset, frames: int) -> tuple[Dataset | None, list[Dataset]]:
    shared = ds[SHARED].value[0] if SHARED in ds and len(ds[SHARED].value) else None
    per_frame = list(ds[PER_FRAME].value) if PER_FRAME in ds else []
    if len(per_frame) != frames:
        raise FrameError(
            f"Per-Frame Functional Groups Sequence has {len(per_frame)} items for {frames} frames"
        )
    return shared, per_frame


def _stack_key(groups: tuple[Dataset | None, Dataset | None]) -> tuple[str, ...]:
    key = []
    for _, macro, keyword in STACK_DIMENSIONS:
        item = _macro(groups, macro)
        value = item.get(keyword) if item is not None else None
        key.append("\\".join(map(str, value)) if isinstance(value, list) else str(value or ""))
    return tuple(key)


def _single_stack(keys: list[tuple[str, ...]]) -> None:
    distinct = sorted(set(keys))
    if len(distinct) == 1:
        return
    varying = [
        (name, sorted({k[i] for k in distinct}))
        for i, (name, _, _) in enumerate(STACK_DIMENSIONS)
        if len({k[i] for k in distinct}) > 1
    ]
    described = "; ".join(
        f"{name} {', '.join(v or '(none)' for v in values)}" for name, values in varying
    )
    raise FrameError(
        f"holds {len(distinct)} stacks ({described}); a model takes one volume: send each "
        "stack as its own series, or export one echo / time point / weighting"
    )


def split(ds: Dataset) -> list[Frame]:
    """The frames of ``ds`` with a classic header each; a single-frame image is itself.

    Raises :class:`FrameError` for a multi-frame object of a class without functional
    groups, one whose groups do not cover every frame, or one holding several stacks."""
    frames = number_of_frames(ds)
    if not is_enhanced(ds):
        if frames != 1:
            raise FrameError(
                f"a multi-frame {ds.SOPClassUID.name} object ({frames} frames) has no "
                "functional groups to place its frames; only Enhanced and Legacy Converted "
                "Enhanced CT, MR and PET objects are read frame by frame"
            )
        return [Frame(None, ds)]
    shared, per_frame = _items(ds, frames)
    base = Dataset()
    base.update({e.tag: e for e in ds if int(e.tag) not in _MULTI_FRAME_ONLY})
    base.file_meta = ds.file_meta
    state_implied_history(ds, base)
    out, keys = [], []
    for number, item in enumerate(per_frame, start=1):
        groups = (item, shared)
        header = Dataset()
        header.update(base)
        header.file_meta = ds.file_meta
        for macro, keywords in GEOMETRY:
            found = _macro(groups, macro)
            for keyword in keywords:
                if found is not None and keyword in found:
                    header[keyword] = found[keyword]
        if "ImagePositionPatient" not in header:
            raise FrameError(f"frame {number} has no Plane Position (Patient) functional group")
        if "ImageOrientationPatient" not in header:
            raise FrameError(f"frame {number} has no Plane Orientation (Patient) functional group")
        keys.append(_stack_key(groups))
        out.append(Frame(number, header))
    _single_stack(keys)
    return out
