"""What every command of the CLI starts with."""

from __future__ import annotations

import argparse
import sys

from dicom_node.config import Config, ConfigError, load_config
from dicom_node.obs.logs import configure


def command_config(args: argparse.Namespace) -> Config:
    """The configuration, with logging (library warnings included) set up as it says."""
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"dicom-node: {exc}", file=sys.stderr)
        raise SystemExit(2) from exc
    configure(config.logging.level)
    return config
