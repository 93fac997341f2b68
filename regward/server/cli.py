"""Subcommands of this domain; filled in by its issue."""

from __future__ import annotations

import argparse
from typing import Any


def add_commands(commands: argparse._SubParsersAction[Any]) -> None:
    """Register this domain's subcommands on the top-level parser."""
