"""`lab down`: remove everything the lab made (nodes, switch, pods, node state)."""
from __future__ import annotations

import argparse
from typing import Any

from lab.cli._common import config_from
from lab.cluster.actions import down
from lab.progress import Progress


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = subparsers.add_parser(
        "down", help="remove everything the lab made",
        description="Remove the lab's nodes, pods and state, even after a partial `lab up`.")
    return p


def run(args: argparse.Namespace) -> int:
    config = config_from(args)
    with Progress().step(f"remove lab {config.name}"):
        down(config)
    return 0
