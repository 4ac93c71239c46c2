"""The provenance record: which model made a synthetic series, from what, where and when.

One canonical JSON record per output series. It is written into a private block of
every output instance (PS3.5 7.8: private creator ``DICOM_NODE PROVENANCE`` in group
0071) and into the database's audit table, so that "which model made this image, from
what inputs, when" can be answered from the image alone or from the node.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any

from pydicom.datadict import add_private_dict_entry
from pydicom.dataset import Dataset

from dicom_node.evidence.watermark import identifier_for

PRIVATE_CREATOR = "DICOM_NODE PROVENANCE"
PRIVATE_GROUP = 0x0071
RECORD_ELEMENT = 0x01
"""(0071,xx01) UT: the canonical provenance JSON."""
RECORD_ID_ELEMENT = 0x02
"""(0071,xx02) LO: hex of the record's 8-byte identifier (the watermark payload)."""

# Teach pydicom the block's VRs, so that an object read in Implicit VR still yields
# signable UT/LO elements instead of UN (PS3.5 6.2.2, PS3.3 C.12.1.1.3.1.1).
add_private_dict_entry(
    PRIVATE_CREATOR, (PRIVATE_GROUP << 16) | 0x1000 | RECORD_ELEMENT, "UT", "Provenance Record"
)
add_private_dict_entry(
    PRIVATE_CREATOR, (PRIVATE_GROUP << 16) | 0x1000 | RECORD_ID_ELEMENT, "LO", "Record Identifier"
)

DCMTK_DICTIONARY_SUPPLEMENT = (
    "(0008,001C)\tCS\tSyntheticData\t1\tDICOM\n"
    f'({PRIVATE_GROUP:04X},"{PRIVATE_CREATOR}",{RECORD_ELEMENT:02X})'
    "\tUT\tDicomNodeProvenanceRecord\t1\tPrivateTag\n"
    f'({PRIVATE_GROUP:04X},"{PRIVATE_CREATOR}",{RECORD_ID_ELEMENT:02X})'
    "\tLO\tDicomNodeProvenanceRecordId\t1\tPrivateTag\n"
)
"""Lines for a DCMTK data dictionary (listed in ``DCMDICTPATH`` after the standard ones)
giving DCMTK 3.6.7 the VRs it lacks for what the node signs: without them, DCMTK reads
those elements as UN after an Implicit VR transcoding, and UN cannot be signed."""


@dataclass(frozen=True)
class InputRecord:
    role: str
    series_uid: str
    instance_count: int
    pixel_sha256: str
    """SHA-256 of the decoded stored pixel values, slices in patient order."""


@dataclass(frozen=True)
class RoleAssessment:
    """The input guard's judgement of one input series (``inference.guard``)."""

    role: str
    series_uid: str
    accepted: bool
    score: float
    threshold: float
    feature: str
    """The signature feature furthest from the reference."""
    reference_cases: int


@dataclass(frozen=True)
class GuardRecord:
    """Whether the inputs looked like the model's training inputs, as the route's
    ``input_guard`` mode asked: ``available`` is false for a model whose card carries no
    guard (the job then ran unjudged)."""

    mode: str
    available: bool
    inputs: tuple[RoleAssessment, ...] = ()

    @property
    def refused(self) -> tuple[RoleAssessment, ...]:
        return tuple(a for a in self.inputs if not a.accepted)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GuardRecord:
        return cls(
            data["mode"], data["available"], tuple(RoleAssessment(**a) for a in data["inputs"])
        )


@dataclass(frozen=True)
class UncertaintyRecord:
    """How much the output moved under test-time augmentation (``inference.uncertainty``):
    the per-voxel spread's mean and 95th percentile inside the head, in output units."""

    method: str
    passes: tuple[str, ...]
    units: str
    region: str
    mean: float
    p95: float

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> UncertaintyRecord:
        return cls(**{**data, "passes": tuple(data["passes"])})


@dataclass(frozen=True)
class ProvenanceRecord:
    node_name: str
    node_version: str
    ae_title: str
    model_id: str
    model_version: str
    model_sha256: str
    providers: tuple[str, ...]
    inputs: tuple[InputRecord, ...]
    study_uid: str
    output_series_uid: str
    output_role: str
    route_destinations: tuple[str, ...]
    created_at: str
    """ISO 8601 UTC time of synthesis."""
    input_guard: GuardRecord | None = None
    """The input guard's assessment; None when the route turned the guard off."""
    uncertainty: UncertaintyRecord | None = None
    """The output's uncertainty figures; None when the route did not ask for them."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def canonical_json(self) -> bytes:
        """Sorted keys, no insignificant whitespace, ASCII: the same record, the same bytes."""
        return json.dumps(
            self.to_dict(), sort_keys=True, separators=(",", ":"), ensure_ascii=True
        ).encode("ascii")

    @property
    def identifier(self) -> bytes:
        """8 bytes that name this record (the invisible watermark's payload)."""
        return identifier_for(self.canonical_json())

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ProvenanceRecord:
        inputs = tuple(InputRecord(**i) for i in data["inputs"])
        guard = data.get("input_guard")
        uncertainty = data.get("uncertainty")
        return cls(
            **{
                **data,
                "inputs": inputs,
                "providers": tuple(data["providers"]),
                "route_destinations": tuple(data["route_destinations"]),
                "input_guard": GuardRecord.from_dict(guard) if guard else None,
                "uncertainty": UncertaintyRecord.from_dict(uncertainty) if uncertainty else None,
            }
        )


def write_private_block(ds: Dataset, record: ProvenanceRecord) -> None:
    """Stores the record in the dataset's provenance private block."""
    block = ds.private_block(PRIVATE_GROUP, PRIVATE_CREATOR, create=True)
    block.add_new(RECORD_ELEMENT, "UT", record.canonical_json().decode("ascii"))
    block.add_new(RECORD_ID_ELEMENT, "LO", record.identifier.hex())


def block_tags(ds: Dataset) -> tuple[int, ...]:
    """The tags of the provenance block's elements in ``ds`` (none when it has no block),
    for a signature that must cover the record; the signer adds their private creator."""
    try:
        block = ds.private_block(PRIVATE_GROUP, PRIVATE_CREATOR)
    except KeyError:
        return ()
    elements = (RECORD_ELEMENT, RECORD_ID_ELEMENT)
    return tuple(int(block.get_tag(e)) for e in elements if block.get_tag(e) in ds)


def read_private_block(ds: Dataset) -> ProvenanceRecord | None:
    """The record a dataset carries, or None when it has none or it is unreadable."""
    try:
        block = ds.private_block(PRIVATE_GROUP, PRIVATE_CREATOR)
        raw = block[RECORD_ELEMENT].value
    except KeyError:
        return None
    try:
        text = raw.decode("ascii") if isinstance(raw, bytes) else str(raw)
        return ProvenanceRecord.from_dict(json.loads(text))
    except (ValueError, TypeError, KeyError):
        return None
