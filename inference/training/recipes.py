"""The reference models: what each takes and returns (its card), its network and its
training schedule, and the units its truth is measured in.

A recipe plus seeds is everything needed to reproduce a shipped model from scratch:
``python -m inference.training train <name>``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from inference.card import (
    ForegroundNorm,
    InputSpec,
    LinearNorm,
    ModelCard,
    OutputSpec,
    Spatial25D,
)
from inference.geometry import FloatArray, Volume
from inference.training.randomized import simulate_randomized
from inference.training.simulate import Acquisition, Subject, simulate_subject
from inference.training.unet import UNetConfig

MR_REFERENCE_LEVEL = 1000.0
"""MR truth is expressed in units where the head's 99.5th percentile is this value:
MR has no absolute unit, so a synthetic MR series is made to this scale."""

TRAIN_SEEDS = range(1000, 1100)
"""Subjects the shipped models were trained on."""

HELD_OUT_SEEDS = range(9000, 9010)
"""Subjects never seen in training: the quality report and the tests use these."""


@dataclass(frozen=True)
class Schedule:
    steps: int = 3000
    batch: int = 12
    crop: int = 112
    """Square training crops (a multiple of the network's tile); inference is whole-slice."""
    learning_rate: float = 2e-3
    seed: int = 7
    lesion_weight: float = 1.0
    """How much a voxel of white-matter lesion counts in the loss against any other
    voxel (in proportion to its lesion fraction): lesions are a thousandth of a head
    but what a FLAIR is read for."""
    lesion_crops: float = 0.0
    """The share of training crops centred on a lesion voxel (of a subject that has one)
    rather than on any voxel of the head."""


@dataclass(frozen=True)
class Recipe:
    card: ModelCard
    network: UNetConfig
    schedule: Schedule
    acquisition: Acquisition | None = None
    """A fixed grid and the canonical contrasts; ``None``: domain-randomised subjects."""
    physical_contrast: bool = False
    """Domain-randomised subjects whose inputs and targets are all signal equations of
    one set of widely drawn tissues (``randomized.simulate_randomized(physical=True)``)."""

    @property
    def name(self) -> str:
        return self.card.id

    def simulate(self, seed: int) -> Subject:
        """The training subject of ``seed``."""
        if self.acquisition is None:
            return simulate_randomized(seed, physical=self.physical_contrast)
        return simulate_subject(seed, self.acquisition)

    def truth(self, subject: Truth) -> FloatArray:
        """The subject's output-role image in the card's units (HU, or MR reference)."""
        return reference_units(subject, self.card.output.role)

    def target(self, subject: Truth) -> FloatArray:
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


class Truth(Protocol):
    """A head with known truth, from either simulator: its images (T1, T2, FLAIR in
    scanner units, CT in HU), its noise-free targets, and the masks that figures are
    taken in."""

    @property
    def seed(self) -> int: ...
    @property
    def images(self) -> Mapping[str, Volume]: ...
    @property
    def targets(self) -> Mapping[str, Volume]: ...
    @property
    def head(self) -> npt.NDArray[np.bool_]: ...
    @property
    def bone(self) -> npt.NDArray[np.bool_]: ...


def reference_units(subject: Truth, role: str) -> FloatArray:
    """CT in HU as simulated; MR in reference units (:func:`to_reference`)."""
    image = subject.images[role].array
    return image if role == "CT" else to_reference(image, subject.head)


_MR_INPUT = ForegroundNorm(high=99.0, clip=(0.0, 2.0))
_SPACING = (1.0, 1.0)
MAX_OBLIQUITY_DEGREES = 20.0
"""Training grids tilt up to 20° about each axis (``randomized.random_geometry``): a
series tilted further is resampled into the axial plane before the model sees it."""
_SIMULATED = (
    "domain-randomised simulated subjects only: the MNI152 2009c template (nilearn) with "
    "skull (3-10 mm, bright or dark marrow; cortical bone 1200-1900 HU, marrow "
    "250-850 HU), scalp, CSF, frontal sinus, mastoid air, "
    "white-matter lesions, temporalis and neck muscles, a face (orbits, nasal cavity, "
    "maxillary sinuses, maxilla) and a neck (muscle, fat, cervical vertebra, canal, "
    "airway) added, per-subject affine and smooth deformation; input MR "
    "contrast drawn per subject (tissue intensities from wide ranges that keep T1w/T2w "
    "ordering, or spin-echo/inversion-recovery equations with random timings) with a "
    "random monotone curve; pixel spacing 0.5-1.5 mm, slice thickness 1-6 mm, oblique "
    "up to 20 degrees, field of view 180-260 mm, blur, bias field, background level, "
    "Rician noise and gain all random; targets: CT in HU with partial volume, FLAIR "
    "from the inversion-recovery equation under the coil bias the inputs share, without "
    "noise; "
    "inputs scaled by the "
    "99th percentile of the foreground (voxels above the Otsu threshold)"
)
_PHYSICAL = (
    "; in place of that input contrast, inputs and FLAIR from one set of tissues per "
    "subject, relaxation times drawn wide and each tissue apart (grey and white matter "
    "T1 0.75-1.3 and T2 0.8-1.25 times typical, lesions T1 0.75-1.4 and T2 0.6-1.8 "
    "times), T1w by spin-echo or inversion-recovery and T2w by spin-echo equations with "
    "random timings, drawn again until CSF is darker on T1w and brighter on T2w than "
    "every brain tissue, lesions included, by a fifth (the nearest of 20 draws kept), "
    "FLAIR with its inversion time at the subject's CSF null"
)
_USE = (
    "Research and demonstration of the dicom-node pipeline. Trained on simulated heads "
    "only; not validated on patients: not for diagnosis, treatment planning or dose "
    "calculation."
)

SCT = Recipe(
    card=ModelCard(
        id="mr-t1-to-ct",
        version="2.2.0",
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
        max_obliquity_degrees=MAX_OBLIQUITY_DEGREES,
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
        version="2.7.0",
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
        max_obliquity_degrees=MAX_OBLIQUITY_DEGREES,
        tile_multiple=UNetConfig(6).tile_multiple,
        intended_use="The missing FLAIR of a brain MR study from its T1w and T2w series. " + _USE,
        training_data=_SIMULATED + _PHYSICAL,
    ),
    network=UNetConfig(in_channels=6),
    schedule=Schedule(lesion_weight=30.0, lesion_crops=0.3),
    physical_contrast=True,
)

RECIPES: dict[str, Recipe] = {r.name: r for r in (SCT, FLAIR)}
