"""Helpers shared by sub-command modules."""

from __future__ import annotations

import argparse
from collections.abc import Callable

from leanbert.errors import NotBuiltError


def not_built(command: str, issue: str) -> Callable[[argparse.Namespace], int]:
    """A command body for a stage that is not built yet: one line, non-zero exit."""

    def run(args: argparse.Namespace) -> int:
        raise NotBuiltError(f"'{command}' is not built yet in this version of leanbert ({issue})")

    return run


def add_set_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override one config key (repeatable): --set key=value, or --set section.key=value for sectioned configs",
    )
