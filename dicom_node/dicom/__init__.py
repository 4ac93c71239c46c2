"""The DICOM standard's vocabulary, without I/O: statuses, UIDs, SOP classes, attribute
reading, File Meta Information, multi-frame headers, body parts."""
