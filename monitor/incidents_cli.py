"""``monitor incidents list|show|ack|resolve`` and ``monitor maintenance add|list|remove``."""

from __future__ import annotations

import argparse


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register the subcommands (filled in with the incident store)."""
