"""`lab logs [-o PATH]`: a tarball of each node's addresses, routes, neighbours and CNI state."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from lab.api import LabError
from lab.cli._common import lab_from
from lab.cluster.logs import write_tarball
from lab.progress import Progress


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = subparsers.add_parser(
        "logs", help="collect diagnostics into a tarball",
        description="Write each node's ip addr/route/neigh/link, sysctls, nft and iptables "
                    "rules, plugin logs, CNI result cache and network config, and each pod "
                    "namespace's links, addresses, routes and neighbours into one .tar.gz.")
    p.add_argument("-o", "--output", type=Path, default=None,
                   help="tarball path (default: lab-logs/<lab>/cnilab-<lab>-logs-<time>.tar.gz)")
    return p


def run(args: argparse.Namespace) -> int:
    lab = lab_from(args)
    if not lab.nodes():
        raise LabError(f"lab {lab.name} has no nodes: no logs to collect",
                       hint="`lab up` first; logs of a failed `lab up` are in "
                            f"{lab.config.harness_dir}/logs/")
    progress = Progress()
    with progress.step(f"collect logs of lab {lab.name}"):
        path = write_tarball(lab.provider, lab.name, args.output)
    print(path)
    return 0
