"""`lab down [--all]`: remove everything the lab made (nodes, switch, pods, node state).

A lab that is not there is an error naming the labs that are (a typo in --name must not pass
for a removal). A lab whose `lab up` failed and cleaned itself up keeps only its logs (`lab ls`
shows it as "up failed"): `lab down` of it removes those logs, and the lab is gone.
"""
from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path
from typing import Any

from lab.api import LabError
from lab.cli._common import config_from
from lab.cluster.actions import LOGS_SUBDIR, down
from lab.config import LabConfig, load_config
from lab.progress import Progress


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = subparsers.add_parser(
        "down", help="remove everything the lab made",
        description="Remove the lab's nodes, pods and state, even after a partial `lab up`.")
    p.add_argument("--all", action="store_true",
                   help="every lab on this host that `lab ls` shows with its config")
    return p


def lab_exists(config: LabConfig) -> bool:
    """Anything of the lab on this host: its nodes, its harness dir, or (netns) a namespace."""
    from lab.nodes.providers import make_provider
    from lab.nodes.providers.netns import lab_namespaces

    if config.harness_dir.is_dir():
        return True
    if config.lab.provider == "netns":
        return bool(lab_namespaces(config.name))
    return bool(make_provider(config).nodes())


def only_logs_left(config: LabConfig) -> bool:
    from lab.nodes.providers import make_provider

    harness = config.harness_dir
    return (harness.is_dir() and {p.name for p in harness.iterdir()} <= {LOGS_SUBDIR}
            and not make_provider(config).nodes())


def run(args: argparse.Namespace) -> int:
    if args.all:
        return down_all(args)
    config = config_from(args)
    if not lab_exists(config):
        from lab.cli.ls import all_labs

        labs = ", ".join(row["lab"] for row in all_labs("qemu:///system")) or "none"
        raise LabError(f"no lab {config.name} on this host: nothing to remove",
                       hint=f"labs here: {labs} (`lab ls`); check --name and [lab] name")
    progress = Progress()
    if only_logs_left(config):
        with progress.step(f"remove the logs of lab {config.name}'s failed `lab up`"):
            shutil.rmtree(config.harness_dir)
        return 0
    with progress.step(f"remove lab {config.name}"):
        down(config)
    return 0


def down_all(args: argparse.Namespace) -> int:
    """Each lab `lab ls` lists with the config that made it, from that config; the others are
    named with what to do, and make the exit code 1."""
    from lab.cli.ls import all_labs

    progress, skipped = Progress(), []
    for row in all_labs("qemu:///system"):
        if not row.get("config"):
            skipped.append(f"{row['lab']}: no config recorded (`lab down -c CONFIG --name "
                           f"{row['lab']}`)")
            continue
        try:
            config = load_config(Path(row["config"]), row["lab"])
        except LabError as e:
            skipped.append(f"{row['lab']}: {e}")
            continue
        with progress.step(f"remove lab {config.name}"):
            down(config)
    for line in skipped:
        print(f"✗ not removed: {line}", file=sys.stderr)
    return 1 if skipped else 0
