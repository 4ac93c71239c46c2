"""The reference models: what each takes and returns (its card), its network and its
training schedule, and the units its truth is measured in.

A recipe plus seeds is everything needed to reproduce a shipped model from scratch:
``python -m inference.training train <name>``.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import numpy.typing as npt

from inference.card import (
    InputSpec,
    LinearNorm,
    ModelCard,
    OutputSpec,
    PercentileNorm,
    Spatial25D,
)
from inference.geometry import FloatArray
from inference.training.simulate import Acquisition, Subject
from inference.training.unet import UNetConfig

MR_REFERENCE_LEVEL = 1000.0
"""MR truth is expressed in units where the head's 99.5th percentile is this value:
MR has no absolute unit, so a synthetic MR series is made to this scale."""

TRAIN_SEEDS = range(1000, 1024)
"""Subjects the shipped models were trained on."""

HELD_OUT_SEEDS = range(9000, 9010)
"""Subjects never seen in training: the quality report and the tests use these."""


@dataclass(frozen=True)
class Schedule:
    steps: int = 3000
    batch: int = 12
    crop: int = 96
    """Square training crops (a multiple of the network's tile); inference is whole-slice."""
    learning_rate: float = 2e-3
    seed: int = 7


@dataclass(frozen=True)
class Recipe:
    card: ModelCard
    network: UNetConfig
    schedule: Schedule
    acquisition: Acquisition = field(default_factory=Acquisition)

    @property
    def name(self) -> str:
        return self.card.id

    def truth(self, subject: Subject) -> FloatArray:
        """The subject's output-role image in the card's units (HU, or MR reference)."""
        return reference_units(subject, self.card.output.role)

    def target(self, subject: Subject) -> FloatArray:
        """What the network is trained to output: the truth before denormalisation."""
        norm = self.card.output.denormalization
        return ((self.truth(subject) - norm.offset) / norm.scale).astype(np.float32)

    def with_schedule(self, **changes: Any) -> Recipe:
        return replace(self, schedule=replace(self.schedule, **changes))


def to_reference(image: FloatArray, head: npt.NDArray[np.bool_]) -> FloatArray:
    """An MR image scaled so that the head's 99.5th percentile reads
    :data:`MR_REFERENCE_LEVEL`."""
    level = float(np.percentile(image[head], 99.5)) or 1.0
    return (image * np.float32(MR_REFERENCE_LEVEL / level)).astype(np.float32)


def reference_units(subject: Subject, role: str) -> FloatArray:
    """CT in HU as simulated; MR in reference units (:func:`to_reference`)."""
    image = subject.images[role].array
    return image if role == "CT" else to_reference(image, subject.head)


_MR_INPUT = PercentileNorm(low=0.5, high=99.5, floor=None, clip=(-0.5, 2.0))
_SPACING = (Acquisition().pixel_spacing_mm, Acquisition().pixel_spacing_mm)
_SIMULATED = (
    "simulated subjects only: the MNI152 2009c template (nilearn) with skull, scalp, "
    "CSF, frontal sinus and white-matter lesions added, per-subject affine and smooth "
    "deformation, tissue properties, bias field, Rician noise and gain; "
    f"T1w/T2w spin echo and FLAIR signal equations, CT in HU with partial volume; "
    f"training seeds {TRAIN_SEEDS.start}-{TRAIN_SEEDS.stop - 1}, axial slices of "
    f"{_SPACING[0]} mm, {Acquisition().slice_thickness_mm} mm thick"
)
_USE = (
    "Research and demonstration of the dicom-node pipeline. Trained on simulated heads "
    "only; not validated on patients: not for diagnosis, treatment planning or dose "
    "calculation."
)

SCT = Recipe(
    card=ModelCard(
        id="mr-t1-to-ct",
        version="1.0.0",
        inputs=(InputSpec(role="T1", normalization=_MR_INPUT),),
        output=OutputSpec(
            role="CT",
            modality="CT",
            units="HU",
            denormalization=LinearNorm(scale=1000.0, offset=0.0),
            value_range=(-1024.0, 3071.0),
        ),
        spatial=Spatial25D(slices=3),
        pixel_spacing_mm=_SPACING,
        tile_multiple=UNetConfig(3).tile_multiple,
        intended_use="Synthetic head CT from a T1w MR series. " + _USE,
        training_data=_SIMULATED,
    ),
    network=UNetConfig(in_channels=3),
    schedule=Schedule(),
)

FLAIR = Recipe(
    card=ModelCard(
        id="mr-t1t2-to-flair",
        version="1.0.0",
        inputs=(
            InputSpec(role="T1", normalization=_MR_INPUT),
            InputSpec(role="T2", normalization=_MR_INPUT),
        ),
        output=OutputSpec(
            role="FLAIR",
            modality="MR",
            units=f"arbitrary (head 99.5th percentile = {MR_REFERENCE_LEVEL:g})",
            denormalization=LinearNorm(scale=MR_REFERENCE_LEVEL, offset=0.0),
            value_range=(0.0, 4095.0),
        ),
        spatial=Spatial25D(slices=3),
        pixel_spacing_mm=_SPACING,
        tile_multiple=UNetConfig(6).tile_multiple,
        intended_use="The missing FLAIR of a brain MR study from its T1w and T2w series. " + _USE,
        training_data=_SIMULATED,
    ),
    network=UNetConfig(in_channels=6),
    schedule=Schedule(),
)

RECIPES: dict[str, Recipe] = {r.name: r for r in (SCT, FLAIR)}
