"""`lab status [--json]`: the lab's nodes as found in the resources themselves.

Exit code 0 when every node of the config is running, 1 otherwise (missing, stopped, degraded,
orphan), so scripts can ask `lab status >/dev/null && …`."""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from typing import Any

from lab.api import NodeStatus
from lab.cli._common import lab_from
from lab.cluster.actions import up_state
from lab.cluster.session import Lab


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = subparsers.add_parser(
        "status", help="show the lab's nodes", description="Show each node and its state.")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    return p


def run(args: argparse.Namespace) -> int:
    lab = lab_from(args)
    statuses = lab.provider.status()
    finished = up_state(lab.config)
    unfinished = finished is not None and finished != "up"
    if unfinished:   # nodes exist, but the plugin or K3s may not be on them: not "running"
        statuses = [replace(s, state="incomplete") if s.state == "running" else s
                    for s in statuses]
    show_addresses(lab, statuses)
    rc = 0 if statuses and all(s.state == "running" for s in statuses) else 1
    note = (f"`lab up` did not finish ({finished}; kept by --retain): run `lab up` again to "
            "finish it, or `lab down`") if unfinished else ""
    if note:
        print(f"✗ lab {lab.name}: {note}", file=sys.stderr)
    if args.json:
        print(json.dumps({
            "lab": lab.name, "provider": lab.config.lab.provider, "up": finished or "up",
            "nodes": [{"name": s.name, "address": s.address,
                       "addresses": s.details.get("addresses", [s.address] if s.address else []),
                       "state": s.state, "details": s.details} for s in statuses],
        }, indent=2))
        return rc
    if sys.stdout.isatty():
        from rich.console import Console
        from rich.table import Table

        table = Table(title=f"lab {lab.name} ({lab.config.lab.provider})")
        for column in ("node", "address", "state", "role"):
            table.add_column(column)
        for s in statuses:
            table.add_row(s.name, shown(s), s.state, str(s.details.get("role", "")))
        Console().print(table)
    else:
        print(f"lab {lab.name} ({lab.config.lab.provider})")
        for s in statuses:
            print(f"{s.name}\t{shown(s)}\t{s.state}\t{s.details.get('role', '')}")
    return rc


def shown(status: NodeStatus) -> str:
    return ",".join(status.details.get("addresses") or [status.address or "-"])


def show_addresses(lab: Lab, statuses: list[NodeStatus]) -> None:
    """Every family's address of each running node in its details (dual-stack labs: v6 too),
    from the nodes themselves and the config."""
    from lab.runtime.network import node_addresses

    by_name = {n.name: n for n in lab.nodes()} if any(s.address for s in statuses) else {}
    for status in statuses:
        node = by_name.get(status.name)
        if node is not None and node.address:
            status.details["addresses"] = list(node_addresses(lab.config, node).values())
