"""The model card: what a translation model is, what it needs and what it returns.

The card travels inside the ONNX file, as JSON under the ``metadata_props`` key
:data:`CARD_KEY`, so that a model and its description can never be separated. Every
field the node relies on is validated here; a card that parses is a card the node can
run.
"""

from __future__ import annotations

import json
import re
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

CARD_KEY = "dicom_node.model_card"
"""The ``metadata_props`` key under which the card's JSON is stored."""

CARD_SCHEMA: Literal[1] = 1
"""Version of the card layout this code reads and writes."""

_ID_PATTERN = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
_ROLE_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,31}$")


class ModelCardError(ValueError):
    """A model card is missing, unreadable or invalid; the message names the model."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class LinearNorm(_Strict):
    """``x * scale + offset``: fixed units, e.g. HU → [-1, 1] or back."""

    method: Literal["linear"] = "linear"
    scale: float
    offset: float = 0.0
    clip: tuple[float, float] | None = None

    @field_validator("scale")
    @classmethod
    def _nonzero(cls, v: float) -> float:
        if v == 0:
            raise ValueError("scale must not be 0")
        return v


class PercentileNorm(_Strict):
    """Maps the volume's ``low``..``high`` percentiles (of voxels above ``floor``) to 0..1.

    The usual choice for MR, whose intensities have no fixed unit.
    """

    method: Literal["percentile"] = "percentile"
    low: float = Field(0.5, ge=0, lt=100)
    high: float = Field(99.5, gt=0, le=100)
    floor: float | None = None
    clip: tuple[float, float] | None = (0.0, 1.5)

    @model_validator(mode="after")
    def _ordered(self) -> PercentileNorm:
        if self.low >= self.high:
            raise ValueError("low must be below high")
        return self


class ZScoreNorm(_Strict):
    """``(x - mean) / std`` over voxels above ``floor`` (all voxels when ``floor`` is null)."""

    method: Literal["zscore"] = "zscore"
    floor: float | None = None
    clip: tuple[float, float] | None = None


class ForegroundNorm(_Strict):
    """Divides by the ``high`` percentile of the volume's foreground: the voxels above the
    Otsu threshold that separates tissue from background.

    Zero signal stays zero and the scale does not depend on how much background the
    field of view holds, so a tightly cropped series and one with wide margins of air
    are scaled alike.
    """

    method: Literal["foreground"] = "foreground"
    high: float = Field(99.0, gt=0, le=100)
    clip: tuple[float, float] | None = (0.0, 2.0)


Normalization = Annotated[
    LinearNorm | PercentileNorm | ZScoreNorm | ForegroundNorm, Field(discriminator="method")
]


class InputSpec(_Strict):
    role: str
    normalization: Normalization

    @field_validator("role")
    @classmethod
    def _role_name(cls, v: str) -> str:
        if not _ROLE_PATTERN.match(v):
            raise ValueError(f"role {v!r} is not a simple name (letters, digits, _ or -)")
        return v


class OutputSpec(_Strict):
    role: str
    modality: Literal["CT", "MR"]
    units: str = Field(min_length=1, description="e.g. HU for CT, 'arbitrary' for MR")
    denormalization: LinearNorm
    value_range: tuple[float, float] = Field(
        description="physically sensible range of the output in its units; values are clipped to it"
    )

    @field_validator("role")
    @classmethod
    def _role_name(cls, v: str) -> str:
        if not _ROLE_PATTERN.match(v):
            raise ValueError(f"role {v!r} is not a simple name (letters, digits, _ or -)")
        return v

    @model_validator(mode="after")
    def _range(self) -> OutputSpec:
        lo, hi = self.value_range
        if not lo < hi:
            raise ValueError(f"value_range {self.value_range} is empty")
        if self.modality == "CT" and self.units != "HU":
            raise ValueError("a CT output must be in HU")
        if self.modality == "CT" and (lo < -1024 - 1e-6 or hi > 32767):
            raise ValueError(f"value_range {self.value_range} is outside what CT can store in HU")
        return self


class Spatial2D(_Strict):
    """Independent axial slices, batched."""

    mode: Literal["2d"] = "2d"


class Spatial25D(_Strict):
    """Each slice with its ``slices // 2`` neighbours on each side stacked as channels."""

    mode: Literal["2.5d"] = "2.5d"
    slices: int = Field(ge=3, le=15)

    @field_validator("slices")
    @classmethod
    def _odd(cls, v: int) -> int:
        if v % 2 == 0:
            raise ValueError("slices must be odd so that the centre slice is defined")
        return v


class Spatial3D(_Strict):
    """Sliding-window 3D patches (depth, height, width) with fractional overlap."""

    mode: Literal["3d"] = "3d"
    patch: tuple[int, int, int]
    overlap: float = Field(0.5, ge=0.0, lt=1.0)

    @field_validator("patch")
    @classmethod
    def _positive(cls, v: tuple[int, int, int]) -> tuple[int, int, int]:
        if min(v) < 1:
            raise ValueError("patch sizes must be positive")
        return v


Spatial = Annotated[Spatial2D | Spatial25D | Spatial3D, Field(discriminator="mode")]


class RoleGuard(_Strict):
    """The input guard's reference for one input role (see ``inference.guard``).

    A series' signature features are standardised, ``z = (value - centre) / scale``,
    and scored by their Mahalanobis distance to the reference, ``sqrt(d' P d)`` with
    ``d = z - location`` and ``P`` the precision matrix of a shrunk (Ledoit-Wolf)
    covariance of the reference's ``z``. The series is accepted when the score is at
    most ``threshold``.
    """

    method: Literal["shrunk-mahalanobis"] = "shrunk-mahalanobis"
    features: tuple[str, ...] = Field(min_length=1)
    centre: tuple[float, ...]
    scale: tuple[float, ...]
    location: tuple[float, ...]
    precision: tuple[tuple[float, ...], ...]
    threshold: float = Field(gt=0)
    reference_cases: int = Field(ge=2, description="volumes the reference was fitted on")
    fitted_on: str = Field("", description="what the reference volumes were")

    @model_validator(mode="after")
    def _consistent(self) -> RoleGuard:
        n = len(self.features)
        if not n == len(self.centre) == len(self.scale) == len(self.location):
            raise ValueError("features, centre, scale and location must have the same length")
        if len(self.precision) != n or any(len(row) != n for row in self.precision):
            raise ValueError(f"precision must be {n} x {n}, one row and column per feature")
        if min(self.scale) <= 0:
            raise ValueError("scale must be positive")
        return self


class ModelCard(_Strict):
    """Everything the node and its users need to know about one model."""

    card_schema: Literal[1] = CARD_SCHEMA
    id: str
    version: str = Field(min_length=1, max_length=32)
    inputs: tuple[InputSpec, ...] = Field(min_length=1)
    output: OutputSpec
    spatial: Spatial = Field(default_factory=Spatial2D)
    pixel_spacing_mm: tuple[float, float] | None = Field(
        None, description="in-plane (row, column) spacing the model was trained at; null: any"
    )
    plane: Literal["axial", "coronal", "sagittal", "any"] = Field(
        "axial", description="slice plane the model was trained on; inputs are reoriented to it"
    )
    tile_multiple: int = Field(1, ge=1, description="H and W are padded to a multiple of this")
    intended_use: str = Field(min_length=1)
    training_data: str = Field(min_length=1)
    validation: dict[str, float | str] = Field(default_factory=dict)
    max_obliquity_degrees: float | None = Field(
        None,
        ge=0.0,
        lt=90.0,
        description=(
            "largest tilt of the slice normal from the plane's normal in the training data; "
            "a more oblique input is resampled onto a grid in the plane. null: never resample"
        ),
    )
    guard: dict[str, RoleGuard] | None = Field(
        None, description="input guard reference per input role; null: the model has none"
    )

    @field_validator("id")
    @classmethod
    def _id(cls, v: str) -> str:
        if not _ID_PATTERN.match(v):
            raise ValueError(f"id {v!r} must be lower-case letters, digits, '.', '_' or '-'")
        return v

    @field_validator("pixel_spacing_mm")
    @classmethod
    def _spacing(cls, v: tuple[float, float] | None) -> tuple[float, float] | None:
        if v is not None and min(v) <= 0:
            raise ValueError("pixel_spacing_mm must be positive")
        return v

    @model_validator(mode="after")
    def _roles(self) -> ModelCard:
        roles = [i.role for i in self.inputs]
        if len(set(roles)) != len(roles):
            raise ValueError(f"input roles {roles} repeat")
        if self.output.role in roles:
            raise ValueError(f"output role {self.output.role} is also an input")
        return self

    @model_validator(mode="after")
    def _obliquity(self) -> ModelCard:
        if self.max_obliquity_degrees is not None and self.plane == "any":
            raise ValueError("max_obliquity_degrees needs a plane to measure the tilt from")
        return self

    @model_validator(mode="after")
    def _guarded_roles(self) -> ModelCard:
        unknown = sorted(set(self.guard or {}) - set(self.input_roles))
        if unknown:
            raise ValueError(f"guard: roles {unknown} are not inputs of the model")
        return self

    @property
    def input_roles(self) -> tuple[str, ...]:
        return tuple(i.role for i in self.inputs)

    @property
    def channels(self) -> int:
        """Channels of the network's input tensor."""
        per_input = self.spatial.slices if isinstance(self.spatial, Spatial25D) else 1
        return per_input * len(self.inputs)

    @property
    def key(self) -> str:
        return f"{self.id}@{self.version}"

    def to_json(self) -> str:
        return self.model_dump_json()


def parse_card(metadata: dict[str, str], source: str) -> ModelCard:
    """Reads the card from an ONNX file's metadata; ``source`` names the file in errors."""
    raw = metadata.get(CARD_KEY)
    if raw is None:
        raise ModelCardError(f"{source}: no model card (metadata_props key {CARD_KEY!r} missing)")
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ModelCardError(f"{source}: model card is not JSON ({exc})") from exc
    try:
        return ModelCard.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'card'}: {err['msg']}"
            for err in exc.errors()
        )
        raise ModelCardError(f"{source}: invalid model card: {problems}") from exc
