"""`lab status [--json]`: the lab's nodes as found in the resources themselves.

Exit code 0 when every node of the config is running, 1 otherwise (missing, stopped, degraded,
orphan), so scripts can ask `lab status >/dev/null && …`."""
from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from lab.cli._common import lab_from


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = subparsers.add_parser(
        "status", help="show the lab's nodes", description="Show each node and its state.")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    return p


def run(args: argparse.Namespace) -> int:
    lab = lab_from(args)
    statuses = lab.provider.status()
    rc = 0 if statuses and all(s.state == "running" for s in statuses) else 1
    if args.json:
        print(json.dumps({
            "lab": lab.name, "provider": lab.config.lab.provider,
            "nodes": [{"name": s.name, "address": s.address, "state": s.state,
                       "details": s.details} for s in statuses],
        }, indent=2))
        return rc
    if sys.stdout.isatty():
        from rich.console import Console
        from rich.table import Table

        table = Table(title=f"lab {lab.name} ({lab.config.lab.provider})")
        for column in ("node", "address", "state", "role"):
            table.add_column(column)
        for s in statuses:
            table.add_row(s.name, s.address or "-", s.state, str(s.details.get("role", "")))
        Console().print(table)
    else:
        print(f"lab {lab.name} ({lab.config.lab.provider})")
        for s in statuses:
            print(f"{s.name}\t{s.address or '-'}\t{s.state}\t{s.details.get('role', '')}")
    return rc
