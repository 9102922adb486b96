"""`lab exec NODE -- CMD...`: run a command on a node, with its exit code."""
from __future__ import annotations

import argparse
import sys
from typing import Any

from lab.api import LabError
from lab.commands._common import lab_from


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = subparsers.add_parser(
        "exec", help="run a command on a node",
        description="Run CMD on NODE (in its namespace, or over SSH) and pass its exit code on.")
    p.add_argument("node", metavar="NODE")
    p.add_argument("argv", metavar="CMD", nargs=argparse.REMAINDER,
                   help="the command, after --")
    p.add_argument("--timeout", type=float, default=600.0, help="seconds (default 600)")
    return p


def run(args: argparse.Namespace) -> int:
    argv = list(args.argv)
    if argv and argv[0] == "--":
        argv = argv[1:]
    if not argv:
        raise LabError("no command given", hint="lab exec NODE -- ip addr")
    node = lab_from(args).node(args.node)
    result = node.run(argv, timeout=args.timeout)
    sys.stdout.write(result.stdout)
    sys.stderr.write(result.stderr)
    return result.rc
