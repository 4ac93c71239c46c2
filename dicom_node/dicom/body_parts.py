"""Body parts and laterality: when Laterality (0020,0060) belongs in a series.

Laterality is Type 2C in the General Series Module (PS3.3 C.7.3.1): required when the
body part examined is a paired structure, and not to be sent otherwise. GE and Philips
brain MR carry an empty Laterality beside Body Part Examined HEAD; copied as it is, it
makes an output fail dciodvfy. The paired parts are the Body Part Examined defined terms
(PS3.16 Annex L) that name one of two sides.
"""

from __future__ import annotations

PAIRED_BODY_PARTS = frozenset(
    {
        "ADRENAL",
        "ANKLE",
        "ARM",
        "BREAST",
        "CLAVICLE",
        "EAR",
        "ELBOW",
        "EXTREMITY",
        "EYE",
        "FEMUR",
        "FIBULA",
        "FINGER",
        "FOOT",
        "FOREARM",
        "HAND",
        "HEEL",
        "HIP",
        "HUMERUS",
        "KIDNEY",
        "KNEE",
        "LEG",
        "LOWERLIMB",
        "LUNG",
        "ORBIT",
        "OVARY",
        "PAROTID",
        "PATELLA",
        "RADIUS",
        "SCAPULA",
        "SHOULDER",
        "SIJ",
        "TESTIS",
        "THIGH",
        "THUMB",
        "TIBIA",
        "TMJ",
        "TOE",
        "ULNA",
        "UPRLIMB",
        "WRIST",
    }
)


def laterality_required(body_part_examined: str | None) -> bool:
    """Whether a series of this body part carries Laterality: yes for a paired part, and
    when no body part is stated (a paired one cannot be ruled out)."""
    if not body_part_examined:
        return True
    return body_part_examined.strip().upper() in PAIRED_BODY_PARTS
