"""Series → volume: decode a series' slices into a geometry-aware volume, or say why not.

Slices are ordered by their position along the slice normal (PS3.3 C.7.6.2.1.1), never
by Instance Number, and stored values are mapped to physical units with Rescale
Slope/Intercept (per slice: Philips MR varies them). Compressed pixel data is decoded by
pydicom's pylibjpeg plugins (libjpeg: JPEG baseline/extended/lossless and JPEG-LS;
openjpeg: JPEG 2000 and HTJ2K; RLE): pure wheels from PyPI, no system library to
install beside the node, which is why they were chosen over GDCM.

Every rejection raises :class:`VolumeError` naming the series and the problem, so the
job that needed the volume records exactly what was wrong.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError

from dicom_node.dicom.frames import Frame, FrameError, number_of_frames, split
from dicom_node.dicom.truncation import incomplete
from inference.geometry import Geometry, Volume

MAX_PIXELS_PER_SLICE = 8192 * 8192
"""Rows × Columns above this is refused before any pixel memory is allocated."""
SPACING_TOLERANCE = 0.02
"""Relative deviation allowed between slice gaps (2 %, at least 0.01 mm)."""
ORIENTATION_TOLERANCE = 1e-3
GRAYSCALE = frozenset({"MONOCHROME1", "MONOCHROME2"})


class VolumeError(ValueError):
    """A series cannot be made into a volume; the message names the series and why."""


@dataclass(frozen=True)
class SeriesVolume:
    """A decoded series: the volume plus the headers of its slices in volume order."""

    volume: Volume
    headers: tuple[Dataset, ...]
    pixel_sha256: str
    frames: tuple[int | None, ...] = ()
    """Per slice, its frame number in a multi-frame source object (None: single-frame)."""

    def source_key(self, k: int) -> str:
        """Names slice ``k``'s source image: its SOP Instance UID, and its frame number
        when it is one frame of a multi-frame object."""
        uid = str(self.headers[k].SOPInstanceUID)
        frame = self.frames[k] if self.frames else None
        return uid if frame is None else f"{uid}#{frame}"

    @property
    def series_uid(self) -> str:
        return str(self.headers[0].SeriesInstanceUID)


def _read(path: Path, series_uid: str) -> Dataset:
    try:
        ds = pydicom.dcmread(path, force=False)
    except (InvalidDicomError, EOFError, OSError, ValueError, KeyError, TypeError) as exc:
        raise VolumeError(
            f"series {series_uid}: {path.name} is not readable DICOM ({exc})"
        ) from exc
    _check_parsed_whole(ds, path, series_uid)
    return ds


def _check_parsed_whole(ds: Dataset, path: Path, series_uid: str) -> None:
    problem = incomplete(ds, path)
    if problem is not None:
        raise VolumeError(f"{_where(series_uid, ds, path)}: {problem}")


def _where(series_uid: str, ds: Dataset, path: Path) -> str:
    """Names the instance and its file: a truncated file may have lost its UID."""
    return f"series {series_uid}, instance {ds.get('SOPInstanceUID', '?')} ({path.name})"


def _floats(ds: Dataset, keyword: str, n: int, where: str) -> np.ndarray:
    value = ds.get(keyword)
    try:
        arr = np.asarray([float(v) for v in value], dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise VolumeError(f"{where}: {keyword} is missing or not numeric") from exc
    if arr.shape != (n,) or not np.all(np.isfinite(arr)):
        raise VolumeError(f"{where}: {keyword} must hold {n} finite numbers")
    return arr


def _check_header(ds: Dataset, where: str) -> tuple[int, int]:
    if "PixelData" not in ds:
        raise VolumeError(f"{where}: no PixelData (not an image, or pixels stripped)")
    photometric = str(ds.get("PhotometricInterpretation", ""))
    if photometric not in GRAYSCALE or int(ds.get("SamplesPerPixel", 1)) != 1:
        raise VolumeError(
            f"{where}: photometric interpretation {photometric or 'missing'} is not grayscale"
        )
    try:
        rows, cols = int(ds.Rows), int(ds.Columns)
    except (AttributeError, TypeError, ValueError) as exc:
        raise VolumeError(f"{where}: Rows/Columns missing") from exc
    if rows < 1 or cols < 1 or rows * cols > MAX_PIXELS_PER_SLICE:
        raise VolumeError(f"{where}: Rows×Columns {rows}×{cols} out of range")
    return rows, cols


def _check_pixel_length(ds: Dataset, rows: int, cols: int, where: str) -> None:
    if ds.file_meta.TransferSyntaxUID.is_compressed:
        return
    frames = number_of_frames(ds)
    needed = frames * rows * cols * ((int(ds.get("BitsAllocated", 16)) + 7) // 8)
    have = len(ds.PixelData)
    if have < needed:
        raise VolumeError(
            f"{where}: PixelData holds {have} bytes, Rows×Columns"
            f"{'' if frames == 1 else f'×{frames} frames'} needs {needed} (truncated)"
        )


def _stored_frames(ds: Dataset, rows: int, cols: int, where: str) -> np.ndarray:
    """Every frame's stored values, (frames, rows, columns), decoded once per object."""
    try:
        stored = ds.pixel_array
    except Exception as exc:  # decoders raise many types; each means "cannot decode"
        raise VolumeError(
            f"{where}: cannot decode pixel data ({type(exc).__name__}: {exc})"
        ) from exc
    return stored.reshape(-1, rows, cols)


def _physical(stored: np.ndarray, header: Dataset) -> np.ndarray:
    """Stored values → physical units with the slice's (or frame's) Rescale Slope and
    Intercept (Modality LUT, PS3.3 C.11.1)."""
    slope = float(header.get("RescaleSlope", 1) or 1)
    intercept = float(header.get("RescaleIntercept", 0) or 0)
    return stored.astype(np.float32) * np.float32(slope) + np.float32(intercept)


def _spacing(positions: np.ndarray, series_uid: str, fallback: float) -> float:
    if len(positions) == 1:
        return fallback
    gaps = np.diff(positions)
    if np.any(gaps < 1e-3):
        i = int(np.argmin(gaps))
        raise VolumeError(
            f"series {series_uid}: two slices at the same position ({positions[i]:.2f} mm); "
            "several stacks, echoes or phases in one series are not supported"
        )
    median = float(np.median(gaps))
    tol = max(0.01, SPACING_TOLERANCE * median)
    bad = np.flatnonzero(np.abs(gaps - median) > tol)
    if bad.size:
        i = int(bad[0])
        kind = "missing slice" if gaps[i] > 1.5 * median else "non-uniform spacing"
        raise VolumeError(
            f"series {series_uid}: {kind}: gap of {gaps[i]:.3f} mm between slices at "
            f"{positions[i]:.2f} and {positions[i + 1]:.2f} mm (typical gap {median:.3f} mm)"
        )
    return median


@dataclass(frozen=True)
class _Slice:
    """One slice of the volume to be: a classic image, or one frame of an enhanced one."""

    frame: Frame
    dataset: Dataset
    path: Path
    where: str


def _slices(datasets: Sequence[Dataset], paths: Sequence[Path], series_uid: str) -> list[_Slice]:
    out: list[_Slice] = []
    for ds, path in zip(datasets, paths, strict=True):
        where = _where(series_uid, ds, path)
        try:
            frames = split(ds)
        except FrameError as exc:
            raise VolumeError(f"{where}: {exc}") from exc
        out.extend(_Slice(frame, ds, path, where) for frame in frames)
    return out


def load_series(paths: Sequence[Path], series_uid: str) -> SeriesVolume:
    """Decodes the files of one series — single-frame images, or the frames of Enhanced
    and Legacy Converted Enhanced objects (:mod:`dicom_node.dicom.frames`) — into a volume on
    its own grid, with the same checks either way."""
    if not paths:
        raise VolumeError(f"series {series_uid}: no instances")
    datasets = [_read(p, series_uid) for p in paths]
    shapes = set()
    for ds, path in zip(datasets, paths, strict=True):
        shapes.add(_check_header(ds, _where(series_uid, ds, path)))
    if len(shapes) != 1:
        raise VolumeError(f"series {series_uid}: slices differ in Rows×Columns {sorted(shapes)}")
    rows, cols = shapes.pop()
    slices = _slices(datasets, paths, series_uid)

    first = f"series {series_uid}"
    iop = _floats(slices[0].frame.header, "ImageOrientationPatient", 6, first)
    row_dir, col_dir = iop[:3], iop[3:]
    if abs(np.linalg.norm(row_dir) - 1) > 0.01 or abs(np.linalg.norm(col_dir) - 1) > 0.01:
        raise VolumeError(f"{first}: ImageOrientationPatient is not made of unit vectors")
    if abs(float(np.dot(row_dir, col_dir))) > 0.01:
        raise VolumeError(f"{first}: ImageOrientationPatient rows and columns are not orthogonal")
    row_dir /= np.linalg.norm(row_dir)
    col_dir /= np.linalg.norm(col_dir)
    normal = np.cross(row_dir, col_dir)
    spacing_rc = _floats(slices[0].frame.header, "PixelSpacing", 2, first)
    if np.any(spacing_rc <= 0):
        raise VolumeError(f"{first}: PixelSpacing must be positive")

    keyed = []
    for s in slices:
        header = s.frame.header
        other = _floats(header, "ImageOrientationPatient", 6, s.where)
        if np.max(np.abs(other - iop)) > ORIENTATION_TOLERANCE * 10:
            raise VolumeError(f"series {series_uid}: slices have different orientations")
        if np.max(np.abs(_floats(header, "PixelSpacing", 2, s.where) - spacing_rc)) > 1e-3:
            raise VolumeError(f"series {series_uid}: slices have different PixelSpacing")
        position = _floats(header, "ImagePositionPatient", 3, s.where)
        keyed.append((float(np.dot(position, normal)), position, s))
    keyed.sort(key=lambda k: k[0])
    positions = np.asarray([k[0] for k in keyed])
    thickness = float(slices[0].frame.header.get("SliceThickness", 1.0) or 1.0)
    dz = _spacing(positions, series_uid, thickness)

    if len(keyed) > 1:
        step = (keyed[-1][1] - keyed[0][1]) / (positions[-1] - positions[0])
        slice_dir = step / np.linalg.norm(step)
        dz *= float(np.linalg.norm(step))  # along slice_dir: longer than dz when tilted
    else:
        slice_dir = normal

    # Every object's pixel data is checked against its header before the volume is
    # allocated: a header may declare an image far larger than the bytes it carries.
    for ds, path in zip(datasets, paths, strict=True):
        _check_pixel_length(ds, rows, cols, _where(series_uid, ds, path))
    try:
        stack = np.empty((len(keyed), rows, cols), dtype=np.float32)
    except MemoryError as exc:
        raise VolumeError(
            f"series {series_uid}: {len(keyed)}×{rows}×{cols} voxels do not fit in memory"
        ) from exc
    digest = hashlib.sha256()
    decoded: dict[int, np.ndarray] = {}
    for k, (_, _, s) in enumerate(keyed):
        if id(s.dataset) not in decoded:
            decoded[id(s.dataset)] = _stored_frames(s.dataset, rows, cols, s.where)
        stored = decoded[id(s.dataset)][(s.frame.number or 1) - 1]
        digest.update(np.ascontiguousarray(stored).astype(stored.dtype.newbyteorder("<")).tobytes())
        stack[k] = _physical(stored, s.frame.header)

    geometry = Geometry(
        origin=_vec3(keyed[0][1]),
        row_direction=_vec3(row_dir),
        column_direction=_vec3(col_dir),
        slice_direction=_vec3(slice_dir),
        spacing=(dz, float(spacing_rc[0]), float(spacing_rc[1])),
        shape=(len(keyed), rows, cols),
    )
    headers = tuple(_without_pixels(k[2].frame.header) for k in keyed)
    frames = tuple(k[2].frame.number for k in keyed)
    volume = Volume(stack, geometry, {"series_uid": series_uid})
    return SeriesVolume(
        volume=volume, headers=headers, pixel_sha256=digest.hexdigest(), frames=frames
    )


def _vec3(v: np.ndarray) -> tuple[float, float, float]:
    return (float(v[0]), float(v[1]), float(v[2]))


def _without_pixels(ds: Dataset) -> Dataset:
    header = Dataset()
    header.update({e.tag: e for e in ds if e.tag != 0x7FE00010})
    header.file_meta = ds.file_meta
    return header
