"""The documents stay true to the code: every configuration key, every negotiated SOP
class and transfer syntax, and every command of `dicom-node` with its options is
documented."""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from pathlib import Path

import yaml
from pydantic import BaseModel
from pynetdicom import AllStoragePresentationContexts

from dicom_node.cli.main import build_parser
from dicom_node.config import Config
from dicom_node.dicom.uids import IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION_NAME
from dicom_node.net.ae import ACCEPTED_TRANSFER_SYNTAXES
from dicom_node.query import dimse
from dicom_node.runtime.stages import STAGES

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


def _commands(
    parser: argparse.ArgumentParser, path: tuple[str, ...] = ()
) -> Iterator[tuple[str, list[str]]]:
    """Every leaf command (``outbox resend``) with its own long options (``--to``);
    ``--help`` and ``--config``, which every command takes, left out."""
    subparsers = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    for action in subparsers:
        for name, sub in action.choices.items():
            yield from _commands(sub, (*path, name))
    if not subparsers:
        options = [
            option
            for action in parser._actions
            for option in action.option_strings
            if option.startswith("--") and option not in ("--help", "--config")
        ]
        yield " ".join(path), options


def test_every_command_and_its_options_are_documented() -> None:
    """Each command appears as ``dicom-node COMMAND`` in the README or docs/, and each of
    its options on a line that names the command."""
    lines = [
        line
        for path in (ROOT / "README.md", *sorted(DOCS.glob("*.md")))
        for line in path.read_text().splitlines()
    ]
    text = "\n".join(lines)
    commands = dict(_commands(build_parser()))
    assert {"serve", "studies list", "outbox resend"} <= commands.keys()
    assert [c for c in commands if f"dicom-node {c}" not in text] == []
    undocumented = [
        f"{command} {option}"
        for command, options in commands.items()
        for option in options
        if not any(command in line and option in line for line in lines)
    ]
    assert undocumented == []


def test_every_stage_is_named_where_serve_stages_is_documented() -> None:
    text = (DOCS / "configuration.md").read_text()
    assert f"serve --stages {','.join(STAGES)}" in text
