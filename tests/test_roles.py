"""The default role and exclusion rules on real studies: series descriptions and acquisition
attributes as Siemens, GE, Philips and Canon scanners write them (from their product
protocols and public scanner-validation data sets; no image file is committed), and
pydicom-data's real MR files."""

from __future__ import annotations

from typing import Any

import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from dicom_node.config import Config
from dicom_node.roles.rules import recognise
from dicom_node.route.routing import SeriesInfo, study_roles
from factories import StudySpec, axial_series, enhanced_mr, ramp_pixels

CONFIG = Config()
ORIGINAL = ["ORIGINAL", "PRIMARY", "M", "ND", "NORM"]

MPRAGE = {
    "ScanningSequence": "GR\\IR",
    "SequenceVariant": "SK\\SP\\MP",
    "MRAcquisitionType": "3D",
    "RepetitionTime": 2300,
    "EchoTime": 2.98,
    "InversionTime": 900,
}
BRAVO = {
    "ScanningSequence": "GR",
    "SequenceVariant": "SS\\SK",
    "MRAcquisitionType": "3D",
    "RepetitionTime": 8.2,
    "EchoTime": 3.2,
    "InversionTime": 450,
}
TFE = {
    "ScanningSequence": "GR",
    "SequenceVariant": "MP",
    "MRAcquisitionType": "3D",
    "RepetitionTime": 8.1,
    "EchoTime": 3.7,
}
T1_SE = {
    "ScanningSequence": "SE",
    "SequenceVariant": "SP",
    "MRAcquisitionType": "2D",
    "RepetitionTime": 550,
    "EchoTime": 11,
}
T1_FLAIR = {
    "ScanningSequence": "SE\\IR",
    "SequenceVariant": "SK\\SP\\MP\\OSP",
    "MRAcquisitionType": "2D",
    "RepetitionTime": 2000,
    "EchoTime": 9,
    "InversionTime": 860,
}
T2_TSE = {
    "ScanningSequence": "SE",
    "SequenceVariant": "SK\\SP\\OSP",
    "MRAcquisitionType": "2D",
    "RepetitionTime": 6000,
    "EchoTime": 98,
}
T2_SPACE = {
    "ScanningSequence": "SE",
    "SequenceVariant": "SK\\SP\\OSP",
    "MRAcquisitionType": "3D",
    "RepetitionTime": 3200,
    "EchoTime": 409,
}
FLAIR_2D = {
    "ScanningSequence": "SE\\IR",
    "SequenceVariant": "SK\\SP\\MP\\OSP",
    "MRAcquisitionType": "2D",
    "RepetitionTime": 9000,
    "EchoTime": 81,
    "InversionTime": 2500,
}
FLAIR_3D = {
    "ScanningSequence": "SE\\IR",
    "SequenceVariant": "SK\\SP\\MP",
    "MRAcquisitionType": "3D",
    "RepetitionTime": 5000,
    "EchoTime": 387,
    "InversionTime": 1800,
}
PHILIPS_FLAIR = {
    "ScanningSequence": "IR",
    "SequenceVariant": "SK",
    "MRAcquisitionType": "2D",
    "RepetitionTime": 11000,
    "EchoTime": 125,
    "InversionTime": 2800,
}
GRE = {
    "ScanningSequence": "GR",
    "SequenceVariant": "SP",
    "MRAcquisitionType": "2D",
    "RepetitionTime": 650,
    "EchoTime": 20,
}
EPI = {
    "ScanningSequence": "EP",
    "SequenceVariant": "SK",
    "MRAcquisitionType": "2D",
    "RepetitionTime": 800,
    "EchoTime": 37,
}
PD = {
    "ScanningSequence": "SE",
    "SequenceVariant": "SK",
    "MRAcquisitionType": "2D",
    "RepetitionTime": 3000,
    "EchoTime": 30,
}

# (vendor, Series Description, Image Type, acquisition attributes) → role or "excluded: …"
TABLE: list[tuple[str, str, list[str], dict[str, Any], str]] = [
    # T1-weighted
    ("Siemens", "t1_mprage_sag_p2_iso", ORIGINAL, MPRAGE, "T1"),
    ("Siemens", "ADNI_Sag3D MPRAGE", ORIGINAL, MPRAGE, "T1"),
    ("Siemens", "MPRAGE", ORIGINAL, MPRAGE, "T1"),
    ("Siemens", "t1_se_tra", ORIGINAL, T1_SE, "T1"),
    ("Siemens", "t1_tirm_tra_dark-fluid", ORIGINAL, T1_FLAIR, "T1"),
    ("GE", "Sag 3D BRAVO", ["ORIGINAL", "PRIMARY", "OTHER"], BRAVO, "T1"),
    ("GE", "Accelerated SAG IR-SPGR", ["ORIGINAL", "PRIMARY", "OTHER"], BRAVO, "T1"),
    ("GE", "Ax T1 FLAIR", ["ORIGINAL", "PRIMARY", "OTHER"], T1_FLAIR, "T1"),
    ("GE", "Ax T1 SE", ["ORIGINAL", "PRIMARY", "OTHER"], T1_SE, "T1"),
    ("Philips", "sT1W_3D_TFE", ["ORIGINAL", "PRIMARY", "M_FFE", "M", "FFE"], TFE, "T1"),
    ("Philips", "T1W_SE", ["ORIGINAL", "PRIMARY", "M_SE", "M", "SE"], T1_SE, "T1"),
    ("Canon", "T1 3D MPRAGE", ["ORIGINAL", "PRIMARY"], MPRAGE, "T1"),
    ("any", "Sag 3D", ORIGINAL, MPRAGE, "T1"),  # name says nothing: attributes decide
    ("any", "series 5", ORIGINAL, T1_SE, "T1"),
    ("any", "WIP 3D", ["ORIGINAL", "PRIMARY", "M_FFE", "M", "FFE"], TFE, "T1"),
    ("any", "ax", ORIGINAL, T1_FLAIR, "T1"),
    # T2-weighted
    ("Siemens", "t2_tse_tra", ORIGINAL, T2_TSE, "T2"),
    ("Siemens", "t2_space_sag_p2_iso", ORIGINAL, T2_SPACE, "T2"),
    ("GE", "Ax T2 FRFSE", ["ORIGINAL", "PRIMARY", "OTHER"], T2_TSE, "T2"),
    ("Philips", "T2W_TSE", ["ORIGINAL", "PRIMARY", "M_SE", "M", "SE"], T2_TSE, "T2"),
    ("any", "series 7", ORIGINAL, T2_TSE, "T2"),
    # T2-FLAIR
    ("Siemens", "t2_tirm_tra_dark-fluid", ORIGINAL, FLAIR_2D, "FLAIR"),
    ("Siemens", "t2_space_dark-fluid_sag_p2_iso", ORIGINAL, FLAIR_3D, "FLAIR"),
    ("GE", "Ax T2 FLAIR", ["ORIGINAL", "PRIMARY", "OTHER"], FLAIR_2D, "FLAIR"),
    ("GE", "Sag CUBE FLAIR", ["ORIGINAL", "PRIMARY", "OTHER"], FLAIR_3D, "FLAIR"),
    ("Philips", "T2W_FLAIR", ["ORIGINAL", "PRIMARY", "M_IR", "M", "IR"], PHILIPS_FLAIR, "FLAIR"),
    (
        "Philips",
        "3D_Brain_VIEW_FLAIR",
        ["ORIGINAL", "PRIMARY", "M_SE", "M", "SE"],
        FLAIR_3D,
        "FLAIR",
    ),
    ("any", "", ORIGINAL, FLAIR_2D, "FLAIR"),
    # none of the three
    ("Siemens", "t2_swi_tra_p2_2mm", ORIGINAL, GRE, ""),
    ("GE", "Ax T2 GRE", ["ORIGINAL", "PRIMARY", "OTHER"], GRE, ""),
    ("Philips", "PD_TSE", ["ORIGINAL", "PRIMARY", "M_SE", "M", "SE"], PD, ""),
    # excluded whatever the name
    ("Siemens", "localizer", ["ORIGINAL", "PRIMARY", "M", "ND"], GRE, "excluded: localizer"),
    ("GE", "3-Plane Loc", ["ORIGINAL", "PRIMARY", "LOCALIZER"], GRE, "excluded: localizer"),
    ("Philips", "Survey", ["ORIGINAL", "PRIMARY", "M_FFE", "M", "FFE"], GRE, "excluded: localizer"),
    ("Siemens", "T1 scout", ["ORIGINAL", "PRIMARY", "M", "ND"], T1_SE, "excluded: localizer"),
    (
        "Siemens",
        "ep2d_diff_mddw_20_p2",
        ["ORIGINAL", "PRIMARY", "DIFFUSION", "NONE", "ND", "MOSAIC"],
        EPI,
        "excluded: diffusion",
    ),
    (
        "Siemens",
        "ep2d_diff_mddw_20_p2_ADC",
        ["DERIVED", "PRIMARY", "DIFFUSION", "ADC"],
        EPI,
        "excluded: diffusion",
    ),
    ("GE", "Ax DWI 1000b", ["ORIGINAL", "PRIMARY", "OTHER"], EPI, "excluded: diffusion"),
    (
        "Philips",
        "DTI_high_iso",
        ["ORIGINAL", "PRIMARY", "M_SE", "M", "SE"],
        EPI,
        "excluded: diffusion",
    ),
    ("any", "T2 axial", ORIGINAL, {**EPI, "DiffusionBValue": 1000}, "excluded: diffusion"),
    (
        "Siemens",
        "ep2d_perf",
        ["ORIGINAL", "PRIMARY", "PERFUSION", "NONE"],
        EPI,
        "excluded: perfusion",
    ),
    ("GE", "3D ASL (non-contrast)", ["ORIGINAL", "PRIMARY", "ASL"], EPI, "excluded: perfusion"),
    (
        "Siemens",
        "REST1 w SMS PF7-8",
        ["ORIGINAL", "PRIMARY", "M", "ND"],
        EPI,
        "excluded: functional",
    ),
    (
        "Siemens",
        "ep2d_bold_moco",
        ["ORIGINAL", "PRIMARY", "M", "ND", "MOSAIC"],
        EPI,
        "excluded: functional",
    ),
    (
        "Philips",
        "fMRI_RS",
        ["ORIGINAL", "PRIMARY", "M_FFE", "M", "FFE"],
        EPI,
        "excluded: functional",
    ),
    (
        "Philips",
        "T1 dynamic",
        ORIGINAL,
        {**T1_SE, "NumberOfTemporalPositions": 40},
        "excluded: functional",
    ),
    (
        "Siemens",
        "t1_mprage_sag_p2_iso_MPR_Tra",
        ["DERIVED", "PRIMARY", "MPR", "ND", "NORM"],
        MPRAGE,
        "excluded: derived",
    ),
    (
        "GE",
        "Sag T1 BRAVO REF",
        ["ORIGINAL", "SECONDARY", "REFORMATTED"],
        BRAVO,
        "excluded: reformatted",
    ),
    ("Siemens", "T1 MIP", ["ORIGINAL", "PRIMARY", "M", "ND"], MPRAGE, "excluded: reformatted"),
]


def _header(description: str, image_type: list[str], attributes: dict[str, Any]) -> Dataset:
    ds = Dataset()
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.4"
    ds.Modality = "MR"
    ds.SeriesDescription = description
    ds.ImageType = image_type
    ds.Rows = ds.Columns = 256
    for keyword, value in attributes.items():
        setattr(ds, keyword, value)
    return ds


def _verdict(header: Dataset) -> str:
    recognition = recognise(header, CONFIG.series_roles, CONFIG.series_exclusions)
    if recognition.exclusion is not None:
        return f"excluded: {recognition.exclusion[0]}"
    return "+".join(sorted(recognition.roles))


@pytest.mark.parametrize(
    ("vendor", "description", "image_type", "attributes", "expected"),
    TABLE,
    ids=[f"{row[0]}:{row[1] or '(no description)'}" for row in TABLE],
)
def test_default_rules_on_real_protocols(
    vendor: str, description: str, image_type: list[str], attributes: dict[str, Any], expected: str
) -> None:
    header = _header(description, image_type, attributes)
    assert _verdict(header) == expected, recognise(
        header, CONFIG.series_roles, CONFIG.series_exclusions
    ).reasons()


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("MR2_UNCR.dcm", "T1"),  # Philips SE, TR 350, TE 27, no description
        ("emri_small.dcm", "T1"),  # Enhanced MR, Acquisition Contrast T1
        ("MR2_UNCI.dcm", "excluded: derived"),
        ("MR_small.dcm", "excluded: derived"),  # Toshiba, DERIVED\\SECONDARY
        ("MR-SIEMENS-DICOM-WithOverlays.dcm", "excluded: derived"),  # a CSA MPR
    ],
)
def test_default_rules_on_pydicom_datas_real_mr_files(name: str, expected: str) -> None:
    path = get_testdata_file(name)
    if path is None:
        pytest.fail(f"pydicom-data does not hold {name}: install the test extra")
    assert _verdict(pydicom.dcmread(path, stop_before_pixels=True)) == expected


def test_enhanced_mr_attributes_are_read_from_its_functional_groups() -> None:
    classic = axial_series(StudySpec(), ramp_pixels(slices=2), description="")
    enhanced = enhanced_mr(classic, echo_times=[98.0, 98.0])
    del enhanced.AcquisitionContrast
    enhanced.ScanningSequence = "SE"  # what the T2 rule asks beside TR and TE
    enhanced.SharedFunctionalGroupsSequence[0].MRTimingAndRelatedParametersSequence[
        0
    ].RepetitionTime = 6000
    assert _verdict(enhanced) == "T2"


def test_the_reasons_name_the_rule_that_matched_or_the_nearest_miss() -> None:
    recognition = recognise(
        _header("t2_tse_tra", ORIGINAL, T2_TSE), CONFIG.series_roles, CONFIG.series_exclusions
    )
    reasons = dict(line.split(": ", 1) for line in recognition.reasons())
    assert reasons["T2"].startswith("yes, rule 1: Modality 'MR' matches")
    assert reasons["T1"].startswith("no; nearest rule 1: SeriesDescription 't2_tse_tra' does not")
    assert "FLAIR" in reasons and "CT" in reasons
    excluded = recognise(
        _header("REST1 w SMS PF7-8", ORIGINAL, EPI), CONFIG.series_roles, CONFIG.series_exclusions
    )
    (line,) = excluded.reasons()
    assert line.startswith("excluded as functional: rule 3: SeriesDescription 'REST1 w SMS")


def _series(
    description: str, attributes: dict[str, Any], instances: int, number: int
) -> SeriesInfo:
    return SeriesInfo(
        generate_uid(),
        _header(description, ORIGINAL, attributes),
        tuple(generate_uid() for _ in range(instances)),
        number,
    )


def test_of_several_t1_series_the_non_contrast_then_the_finest_is_chosen() -> None:
    fine = {**MPRAGE, "PixelSpacing": [1.0, 1.0], "SliceThickness": 1.0}
    coarse = {**T1_SE, "PixelSpacing": [0.9, 0.9], "SliceThickness": 5.0}
    post = {**fine, "ContrastBolusAgent": "Gadovist"}
    candidates = [
        _series("t1_mprage_sag_p2_iso +C", post, 176, 9),
        _series("t1_se_tra", coarse, 24, 3),
        _series("t1_mprage_sag_p2_iso", fine, 176, 5),
    ]
    roles = study_roles(candidates, CONFIG.series_roles, CONFIG.series_exclusions)
    assert roles.best("T1") is candidates[2]
    roles = study_roles(candidates[:2], CONFIG.series_roles, CONFIG.series_exclusions)
    assert roles.best("T1") is candidates[1], "without contrast beats finer with contrast"
