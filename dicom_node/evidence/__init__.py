"""What makes a synthetic series recognisable and checkable: provenance, visible marks,
the invisible watermark, signing keys, DICOM digital signatures, and ``verify``."""
