"""The documents stay true to the code: every configuration key and every negotiated
SOP class and transfer syntax is documented."""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import BaseModel
from pynetdicom import AllStoragePresentationContexts

from dicom_node.config import Config
from dicom_node.dicom.uids import IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION_NAME
from dicom_node.net.ae import ACCEPTED_TRANSFER_SYNTAXES
from dicom_node.query import dimse

DOCS = Path(__file__).resolve().parents[1] / "docs"
ROOT = DOCS.parent


def _keys(model: type[BaseModel]) -> set[str]:
    keys = set()
    for name, field in model.model_fields.items():
        if field.exclude:
            continue
        keys.add(name)
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            keys |= _keys(annotation)
    return keys


def test_configuration_doc_names_every_key() -> None:
    text = (DOCS / "configuration.md").read_text()
    missing = sorted(k for k in _keys(Config) if f"`{k}`" not in text and f"## {k}" not in text)
    assert missing == []


def test_default_config_file_is_valid_and_uses_documented_sections() -> None:
    raw = yaml.safe_load((ROOT / "config.yaml").read_text())
    Config.model_validate(raw)
    text = (DOCS / "configuration.md").read_text()
    assert all(f"## {section}" in text for section in raw)


def test_conformance_statement_lists_what_is_negotiated() -> None:
    text = (DOCS / "conformance.md").read_text()
    assert [ts for ts in ACCEPTED_TRANSFER_SYNTAXES if f"`{ts}`" not in text] == []
    uids = [str(cx.abstract_syntax) for cx in AllStoragePresentationContexts]
    assert [uid for uid in uids if f"`{uid}`" not in text] == []
    assert IMPLEMENTATION_CLASS_UID in text and IMPLEMENTATION_VERSION_NAME in text
    assert [uid for uid in dimse.SOP_CLASSES if f"`{uid}`" not in text] == []
