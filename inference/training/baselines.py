"""The simple baseline every model is measured against: intensity-lookup regression.

Inside the head (the evaluation gives it the true head mask, which favours the
baseline), for each bin of the normalised input intensities (one input: 1-D bins; two inputs: a
2-D grid) the baseline predicts the mean truth of the training voxels in that bin. It
is what a tissue-class or lookup-table method achieves: it maps intensity to value but
knows no anatomy, so it cannot tell bone from air where both are dark on MR.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from scipy import ndimage

from inference.geometry import FloatArray


class IntensityLookup:
    """Mean truth per bin of 1 or 2 normalised input channels."""

    def __init__(self, channels: int, bins: int = 64, low: float = -0.5, high: float = 2.0):
        if channels not in (1, 2):
            raise ValueError(f"a lookup takes 1 or 2 input channels, not {channels}")
        self.channels, self.bins, self.low, self.high = channels, bins, low, high
        self.sums = np.zeros((bins,) * channels)
        self.counts = np.zeros((bins,) * channels)
        self.table: npt.NDArray[np.float64] | None = None

    def _index(self, x: FloatArray) -> tuple[npt.NDArray[np.intp], ...]:
        """x: (channels, ...) → one bin index array per channel."""
        scaled = (x - self.low) / (self.high - self.low) * self.bins
        idx = np.clip(scaled.astype(np.intp), 0, self.bins - 1)
        return tuple(idx[c].ravel() for c in range(self.channels))

    def fit(self, x: FloatArray, truth: FloatArray) -> IntensityLookup:
        """Adds (channels, ...) normalised inputs and their truth (...) to the table."""
        idx = self._index(x)
        np.add.at(self.sums, idx, truth.ravel().astype(np.float64))
        np.add.at(self.counts, idx, 1)
        table = np.full(self.sums.shape, np.nan)
        seen = self.counts > 0
        table[seen] = self.sums[seen] / self.counts[seen]
        if (~seen).any():
            nearest = ndimage.distance_transform_edt(
                ~seen, return_distances=False, return_indices=True
            )
            table = table[tuple(nearest)]
        self.table = table
        return self

    def predict(self, x: FloatArray) -> FloatArray:
        if self.table is None:
            raise RuntimeError("the lookup has not been fitted")
        shape = x.shape[1:]
        return self.table[self._index(x)].reshape(shape).astype(np.float32)
