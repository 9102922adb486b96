"""`lab up [--retain]`: provision the nodes and install the plugin under test (idempotent)."""
from __future__ import annotations

import argparse
from typing import Any

from lab.cli._common import config_from
from lab.cluster.actions import nodes_summary, up
from lab.progress import Progress


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = subparsers.add_parser(
        "up", help="bring the lab up (safe to repeat)",
        description="Create whatever is missing of the lab and install the plugin under test.")
    p.add_argument("--retain", action="store_true",
                   help="on failure keep the partial lab for inspection")
    return p


def run(args: argparse.Namespace) -> int:
    config = config_from(args)
    progress = Progress()
    nodes = up(config, progress, retain=args.retain)
    progress.info(f"lab {config.name} is up: {nodes_summary(nodes, config)}")
    return 0
