"""`lab deploy`: put the plugin under test on every node again (and on K3s re-apply its
network) — the developer's inner loop after a plugin change, on every kind of lab (seconds:
no provisioning, no K3s steps)."""
from __future__ import annotations

import argparse
import time
from typing import Any

from lab.api import LabError
from lab.cli._common import lab_from
from lab.cluster.build import build_plugin
from lab.cluster.deploy import deploy_plugin_file
from lab.progress import Progress


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = subparsers.add_parser(
        "deploy", help="put a changed plugin on every node (and re-apply its network on K3s)",
        description="Run plugin.build when set, then copy plugin.path to every node: where "
                    "the lab's runtime looks for it on netns and VM labs; on K3s labs into "
                    "each node's CNI bin dir (read from K3s's containerd config), re-applying "
                    "the NetworkAttachmentDefinition, or each node's conflist when k3s.primary "
                    "is set. Pods made before keep their attachment.")
    return p


def run(args: argparse.Namespace) -> int:
    lab = lab_from(args)
    progress = Progress()
    started = time.monotonic()
    if lab.config.plugin.build is not None:   # what is shipped is the source as it is now
        with progress.step(f"build the plugin ({lab.config.plugin.build})"):
            build_plugin(lab.config, progress.info)
    with progress.step(f"deploy {lab.config.plugin_path.name} to lab {lab.name}"):
        nodes = lab.nodes()
        if not nodes:
            raise LabError(f"lab {lab.name} has no nodes", hint="run `lab up` first")
        deploy_plugin_file(lab.config, nodes, progress.info)
    progress.info(f"deployed in {time.monotonic() - started:.1f}s")
    return 0
