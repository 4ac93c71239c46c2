"""The default role and exclusion rules: what T1w, T2w, FLAIR and CT series look like in
the studies of the big vendors, as data (config.yaml carries the same tables).

Each role is recognised by any of its rules: by Series Description — the names Siemens
(t1_mprage_sag, t2_tse_tra, t2_tirm_tra_dark-fluid), GE (Sag 3D BRAVO, Accelerated SAG
IR-SPGR, Ax T2 FRFSE, Ax T2 FLAIR), Philips (sT1W_3D_TFE, T2W_TSE, T2W_FLAIR) and Canon
give — or, whatever the name, by acquisition attributes (PS3.3 C.8.3.1 MR Image Module:
Scanning Sequence SE/GR/IR, MR Acquisition Type, Repetition/Echo/Inversion Time; C.8.13.1
Enhanced MR: Acquisition Contrast). T1-FLAIR (inversion time 500–1300 ms, short echo) is
T1-weighted and is told apart from T2-FLAIR (inversion time 1400–3500 ms, long echo).

Exclusions come first: a localizer, diffusion, perfusion or functional (fMRI) series, and
anything derived or reformatted, plays no role whatever its name says ("REST1 w SMS" is
an fMRI run, not a T1).
"""

from __future__ import annotations

from dicom_node.roles.rules import RoleRules

_T1W = (
    r"((^|[^a-z0-9]|\bs)t1(w|[^a-z0-9]|$)|mp-?rage|ir-?f?spgr|fspgr|bravo|(^|[^a-z])tfe([^a-z]|$))"
)
"""T1 as a word (t1, T1W, sT1W, T1-FLAIR; not REST1), or a T1-weighted 3D sequence's name."""

DEFAULT_ROLES: dict[str, RoleRules] = {
    "T1": [
        {"Modality": "^MR$", "SeriesDescription": "(?i)" + _T1W},
        {  # spin echo: short TR, short TE
            "Modality": "^MR$",
            "ScanningSequence": "^SE$",
            "RepetitionTime": (300.0, 1000.0),
            "EchoTime": (5.0, 30.0),
        },
        {  # 3D inversion-prepared gradient echo: MPRAGE (GR\IR), BRAVO / IR-SPGR (GR, TI 400-600)
            "Modality": "^MR$",
            "MRAcquisitionType": "3D",
            "ScanningSequence": "GR",
            "EchoTime": (1.0, 6.0),
            "InversionTime": (300.0, 1300.0),
        },
        {  # Philips 3D T1 TFE: magnetisation-prepared, TI not stored
            "Modality": "^MR$",
            "MRAcquisitionType": "3D",
            "ScanningSequence": "^GR$",
            "SequenceVariant": "MP",
            "RepetitionTime": (4.0, 15.0),
            "EchoTime": (1.0, 6.0),
        },
        {  # T1-FLAIR (GE, Siemens): inversion recovery, TI 500-1300, short TE
            "Modality": "^MR$",
            "ScanningSequence": "IR",
            "InversionTime": (500.0, 1300.0),
            "EchoTime": (1.0, 30.0),
        },
        {"Modality": "^MR$", "AcquisitionContrast": "^T1$"},  # Enhanced MR
    ],
    "T2": [
        {
            "Modality": "^MR$",
            "SeriesDescription": r"(?i)^(?!.*(flair|dark.?fluid|t2\s?\*|t2.?star|swi|\bgre\b"
            r"|fl[23]d|hemo))"
            r".*((^|[^a-z0-9]|\bs)t2(w|[^a-z0-9]|$))",
        },
        {  # (turbo/fast) spin echo without inversion: long TR, long TE (3D SPACE/CUBE/VISTA too)
            "Modality": "^MR$",
            "ScanningSequence": "^SE$",
            "RepetitionTime": (1800.0, 20000.0),
            "EchoTime": (70.0, 600.0),
        },
        {"Modality": "^MR$", "AcquisitionContrast": "^T2$"},
    ],
    "FLAIR": [
        {"Modality": "^MR$", "SeriesDescription": r"(?i)^(?!.*" + _T1W + r").*(flair|dark.?fluid)"},
        {  # T2-FLAIR, 2D or 3D: inversion recovery, TI 1400-3500, long TE
            "Modality": "^MR$",
            "ScanningSequence": "IR",
            "InversionTime": (1400.0, 3500.0),
            "EchoTime": (60.0, 600.0),
        },
        {"Modality": "^MR$", "AcquisitionContrast": "^FLUID_ATTENUATED$"},
    ],
    "CT": {"Modality": "^CT$"},
}
"""Roles when the configuration names none."""

DEFAULT_EXCLUSIONS: dict[str, RoleRules] = {
    "localizer": [
        {"ImageType": "LOCALIZER"},
        {
            "SeriesDescription": r"(?i)(locali[sz]er|scout|survey|smart.?brain|3.?pl(ane)?.?loc"
            r"|\bloc\b|aahead|topogram|surview)"
        },
    ],
    "diffusion": [
        {"ImageType": r"(DIFFUSION|\bADC\b|TRACEW|\bFA\b)"},
        {"DiffusionBValue": (1.0, 100000.0)},
        {
            "SeriesDescription": r"(?i)(dwi|dti|diff|\badc\b|dadc|trace|tensor"
            r"|\bb.?\d{3,4}|\d{3,4}.?b\b)"
        },
    ],
    "perfusion": [
        {"ImageType": "PERFUSION"},
        {
            "SeriesDescription": r"(?i)(perf|\bdsc\b|\bdce\b|\basl\b|pcasl|pasl|\bpwi\b|rcbv|rcbf"
            r"|\bmtt\b|tmax)"
        },
    ],
    "functional": [
        {"ImageType": r"(MOSAIC|FMRI)"},
        {"NumberOfTemporalPositions": (2.0, 100000.0)},
        {
            "SeriesDescription": r"(?i)(bold|fmri|\brest(ing)?([^a-z]|$)|resting.?state"
            r"|\btask([^a-z]|$))"
        },
    ],
    "derived": {"ImageType": "^DERIVED"},
    "reformatted": [
        {"ImageType": r"(MPR|REFORMATTED|PROJECTION IMAGE|\bMIP\b|MINIP|CURVED)"},
        {"SeriesDescription": r"(?i)(\bmpr\b|_mpr(_|$)|reformat|\bmip\b|\bref\b)"},
    ],
}
"""Series that play no role, whatever their description: checked before the roles."""
