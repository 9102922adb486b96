"""`lab exec NODE -- CMD...`: run a command on a node, with its exit code."""
from __future__ import annotations

import argparse
import sys
from typing import Any

from lab.api import LabError
from lab.cli._common import complete_nodes, lab_from
from lab.cli.pod import not_found


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = subparsers.add_parser(
        "exec", help="run a command on a node",
        description="Run CMD on NODE (in its namespace, or over SSH) and pass its exit code on.")
    p.add_argument("node", metavar="NODE", help="the node (`lab status` lists them)"
                   ).completer = complete_nodes  # type: ignore[attr-defined]
    p.add_argument("argv", metavar="CMD", nargs="*",
                   help="the command, after -- (needed once it has options of its own)")
    p.add_argument("--timeout", type=float, default=600.0, help="seconds (default 600)")
    return p


def run(args: argparse.Namespace) -> int:
    argv = list(args.argv)
    if argv and argv[0] == "--":
        argv = argv[1:]
    if not argv:
        raise LabError("no command given", hint="lab exec NODE -- ip addr")
    node = lab_from(args).node(args.node)
    # What is piped in reaches the command on every kind of node, byte for byte: local
    # (netns) commands inherit our stdin; for the others it is read here and sent (over SSH).
    # A terminal is left alone: the command gets an empty stdin rather than waiting on it.
    piped = sys.stdin is not None and not sys.stdin.isatty()
    data = sys.stdin.buffer.read() if piped and not getattr(node, "inherits_stdin", False) \
        else None
    result = node.run(argv, input=data, timeout=args.timeout)
    sys.stdout.write(result.stdout)
    stderr, rc = not_found(result.stderr, result.rc, argv[0], node.name)
    sys.stderr.write(stderr)
    return rc
