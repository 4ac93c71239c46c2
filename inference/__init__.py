"""Translation models: model cards, registry, ONNX Runtime sessions, pre/post-processing.

Knows nothing of DICOM: volumes in, volume out.
"""
