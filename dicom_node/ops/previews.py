"""A picture of one slice of an output series for a person to look at: three panels side
by side, the source slice | the synthetic slice | their difference.

The difference panel is the signed difference of the two *windowed* images (synthetic
minus source, each scaled 0-1 by its own window; mid grey = 0). It is a visual check that
anatomy lines up and that nothing was invented or lost, never an error map: a synthetic
CT and its source MR have different contrasts, so the difference is not zero where the
model is right.

Windows: a CT is shown in a brain window (W 80 / L 40 HU) unless the bone window (W 2000
/ L 400) is asked for; an MR in the 1st to 99th percentile of its whole series, so every
slice of a series is shown alike. The pure part (windows, panels, PNG) takes arrays; the
loading part finds the output's slices and its source's slice at the same position.
"""

from __future__ import annotations

import io
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import numpy.typing as npt
import pydicom
from PIL import Image
from sqlalchemy import select
from sqlalchemy.orm import Session

from dicom_node.dicom.frames import FrameError, number_of_frames
from dicom_node.dicom.sop_classes import ENHANCED_SOP_CLASSES, VOLUME_IMAGE_SOP_CLASSES
from dicom_node.synthesize.volume import VolumeError, load_series
from inference.geometry import Volume
from storage.models import Instance, Job, OutputSeries, Series
from storage.spool import Spool

CtWindow = Literal["brain", "bone"]
Slice = npt.NDArray[np.floating]


@dataclass(frozen=True)
class Window:
    """A display window: values from ``level - width/2`` (black) to ``level + width/2``
    (white)."""

    width: float
    level: float

    def apply(self, values: Slice) -> npt.NDArray[np.float32]:
        """``values`` scaled to 0-1 through the window, clipped."""
        low = self.level - self.width / 2
        return np.clip((values.astype(np.float32) - low) / self.width, 0.0, 1.0)


CT_WINDOWS: dict[str, Window] = {"brain": Window(80.0, 40.0), "bone": Window(2000.0, 400.0)}
"""The CT windows a preview offers, brain first (the default)."""


class PreviewError(ValueError):
    """No preview can be made; the message names the output and why."""


class UnknownOutput(PreviewError):
    """There is no output series with that id."""


class SliceOutOfRange(PreviewError):
    """The slice asked for is not in the series; the message gives the range."""


def percentile_window(values: Slice, low: float = 1.0, high: float = 99.0) -> Window:
    """The window spanning the ``low``-th to ``high``-th percentile of ``values`` (an MR
    series has no absolute units, so its own distribution sets its window)."""
    lo, hi = (float(v) for v in np.percentile(values, [low, high]))
    width = max(hi - lo, 1e-6)
    return Window(width, lo + width / 2)


def window_for(modality: str, volume: Slice, ct_window: CtWindow = "brain") -> Window:
    """The window a series of ``modality`` is shown in: a CT window by name, else the
    series' 1st-99th percentile."""
    return CT_WINDOWS[ct_window] if modality == "CT" else percentile_window(volume)


def _resized(image: npt.NDArray[np.float32], shape: tuple[int, int]) -> npt.NDArray[np.float32]:
    if image.shape == shape:
        return image
    resized = Image.fromarray(image, mode="F").resize(
        (shape[1], shape[0]), Image.Resampling.BILINEAR
    )
    return np.asarray(resized, dtype=np.float32)


def panels(
    source: Slice, synthetic: Slice, source_window: Window, synthetic_window: Window
) -> npt.NDArray[np.uint8]:
    """The three panels side by side as one 8-bit image, (rows, 3 × columns) of the
    synthetic slice: source (resized to the synthetic's shape if its grid differs),
    synthetic, and 0.5 + (synthetic − source) / 2 of the windowed images."""
    shown = synthetic_window.apply(synthetic)
    base = _resized(source_window.apply(source), shown.shape)
    difference = 0.5 + (shown - base) / 2
    row = np.concatenate([base, shown, difference], axis=1)
    return np.round(row * 255).astype(np.uint8)


def png(image: npt.NDArray[np.uint8]) -> bytes:
    """A greyscale PNG of an 8-bit image."""
    buffer = io.BytesIO()
    Image.fromarray(image, mode="L").save(buffer, format="PNG")
    return buffer.getvalue()


@dataclass(frozen=True)
class PreviewVolumes:
    """An output series and its (first) source series, decoded, with their modalities."""

    output_id: int
    synthetic: Volume
    synthetic_modality: str
    source: Volume
    source_modality: str
    source_window: Window
    """The source's window when it is not a CT (computed once over the whole series)."""
    synthetic_percentiles: Window

    @property
    def slices(self) -> int:
        """How many slices the output has, in position order along its slice normal."""
        return self.synthetic.geometry.shape[0]

    def slice_pair(self, n: int) -> tuple[Slice, Slice]:
        """Output slice ``n`` (0-based) and the source slice at its position: the same
        index on the same grid (outputs are written on their source's), else the source
        slice nearest the position along the source's normal."""
        if not 0 <= n < self.slices:
            raise SliceOutOfRange(
                f"output {self.output_id} has slices 0 to {self.slices - 1}; no slice {n}"
            )
        out, src = self.synthetic.geometry, self.source.geometry
        if out.same_grid(src):
            k = n
        else:
            position = np.asarray(out.slice_origin(n)) - np.asarray(src.origin)
            offset = float(np.dot(position, np.asarray(src.slice_direction)))
            k = int(np.clip(round(offset / src.spacing[0]), 0, src.shape[0] - 1))
        return self.source.array[k], self.synthetic.array[n]

    def render(self, n: int, ct_window: CtWindow = "brain") -> bytes:
        """The PNG of slice ``n``: source | synthetic | difference."""
        source, synthetic = self.slice_pair(n)
        source_window = (
            CT_WINDOWS[ct_window] if self.source_modality == "CT" else self.source_window
        )
        synthetic_window = (
            CT_WINDOWS[ct_window] if self.synthetic_modality == "CT" else self.synthetic_percentiles
        )
        return png(panels(source, synthetic, source_window, synthetic_window))


def _series_files(session: Session, spool: Spool, series_uid: str) -> tuple[list[Path], str]:
    rows = session.execute(
        select(Instance.spool_key, Series.modality)
        .join(Series, Series.id == Instance.series_id)
        .where(
            Series.series_uid == series_uid,
            Instance.sop_class_uid.in_(VOLUME_IMAGE_SOP_CLASSES),
        )
        .order_by(Instance.id)
    ).all()
    return [spool.path(key) for key, _ in rows], (rows[0][1] if rows else "")


def _volume(
    session: Session, spool: Spool, series_uid: str, what: str, output_id: int
) -> tuple[Volume, str]:
    paths, modality = _series_files(session, spool, series_uid)
    if not paths:
        raise PreviewError(f"output {output_id}: its {what} series {series_uid} has no images")
    try:
        return load_series(paths, series_uid).volume, modality
    except (VolumeError, OSError) as exc:
        raise PreviewError(f"output {output_id}: its {what} series cannot be read: {exc}") from exc


def load_preview(session: Session, spool: Spool, output_id: int) -> PreviewVolumes:
    """Decodes output ``output_id`` and its job's first input series from the spool;
    raises :class:`UnknownOutput` or :class:`PreviewError` saying why not."""
    output = session.get(OutputSeries, output_id)
    if output is None:
        raise UnknownOutput(f"no output {output_id}")
    job = session.get(Job, output.job_id)
    if job is None or not job.input_series:
        raise PreviewError(f"output {output_id}: its job and source series are gone")
    synthetic, synthetic_modality = _volume(session, spool, output.series_uid, "own", output_id)
    source, source_modality = _volume(session, spool, job.input_series[0], "source", output_id)
    return PreviewVolumes(
        output_id,
        synthetic,
        synthetic_modality,
        source,
        source_modality,
        percentile_window(source.array),
        percentile_window(synthetic.array),
    )


def slice_count(session: Session, spool: Spool, output: OutputSeries) -> int | None:
    """How many slices output series ``output`` has: its instances, or the frames of a
    multi-frame (enhanced) one, read from its header; None when a header is unreadable."""
    rows = session.execute(
        select(Instance.spool_key, Instance.sop_class_uid)
        .join(Series, Series.id == Instance.series_id)
        .where(
            Series.series_uid == output.series_uid,
            Instance.sop_class_uid.in_(VOLUME_IMAGE_SOP_CLASSES),
        )
    ).all()
    count = 0
    for key, sop_class in rows:
        if sop_class not in ENHANCED_SOP_CLASSES:
            count += 1
            continue
        try:
            header = pydicom.dcmread(spool.path(key), stop_before_pixels=True)
            count += number_of_frames(header)
        except (OSError, ValueError, FrameError):
            return None
    return count


class PreviewCache:
    """The last few decoded outputs, so that paging through a series' slices decodes it
    once; an entry is keyed by the output's version (a re-run's new pixels miss)."""

    def __init__(self, size: int = 4) -> None:
        self.size = size
        self._entries: OrderedDict[tuple[int, str], PreviewVolumes] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, session: Session, spool: Spool, output_id: int) -> PreviewVolumes:
        """The output's volumes, decoded now or earlier for the same version."""
        output = session.get(OutputSeries, output_id)
        if output is None:
            raise UnknownOutput(f"no output {output_id}")
        key = (output_id, f"{output.instance_count}:{output.provenance.get('created_at')}")
        with self._lock:
            if key in self._entries:
                self._entries.move_to_end(key)
                return self._entries[key]
        volumes = load_preview(session, spool, output_id)
        with self._lock:
            self._entries[key] = volumes
            while len(self._entries) > self.size:
                self._entries.popitem(last=False)
        return volumes
