"""dicom-node: receives studies, synthesizes the missing modality, marks it, sends it back."""

__version__ = "0.1.0"
