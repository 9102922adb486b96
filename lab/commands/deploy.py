"""`lab deploy`: recopy the plugin under test to every node and re-apply its network — the
developer's inner loop after a plugin change (seconds: no provisioning, no K3s steps)."""
from __future__ import annotations

import argparse
import time
from typing import Any

from lab.api import LabError
from lab.commands._common import lab_from
from lab.progress import Progress


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = subparsers.add_parser(
        "deploy", help="recopy the plugin and re-apply its network (K3s labs)",
        description="Copy plugin.path into every node's CNI bin dir (read from K3s's containerd "
                    "config) and re-apply the NetworkAttachmentDefinition, or each node's "
                    "conflist when k3s.primary is set. Pods made before keep their attachment.")
    return p


def run(args: argparse.Namespace) -> int:
    from lab.k3s.actions import deploy_plugin

    lab = lab_from(args)
    if lab.config.k3s is None:
        raise LabError(f"lab {lab.name} has no [k3s] section: nothing to deploy into",
                       hint="on netns and VM labs `lab up` reinstalls the plugin")
    progress = Progress()
    started = time.monotonic()
    with progress.step(f"deploy {lab.config.plugin_path.name} to lab {lab.name}"):
        nodes = lab.nodes()
        if not nodes:
            raise LabError(f"lab {lab.name} has no nodes", hint="run `lab up` first")
        deploy_plugin(lab.config, nodes, progress.info)
    progress.info(f"deployed in {time.monotonic() - started:.1f}s")
    return 0
