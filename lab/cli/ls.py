"""`lab ls [--json]`: the labs on this host, found in the resources themselves.

netns labs from their namespaces (`cnilab-<lab>-<node>`: lab names hold no '-'), libvirt labs
from the cnilab tag in each domain's metadata, podman labs from their containers' labels (in
the harness's default podman storage), and labs whose nodes live elsewhere (existing
machines, Vagrant) from the harness state dirs under ~/.local/state/cnilab. Nothing here needs
a config: it answers "what is running on this machine, and whose is it".
"""
from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path
from typing import Any

STATE_ROOT = Path("~/.local/state/cnilab")


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = subparsers.add_parser(
        "ls", help="list the labs on this host",
        description="List the labs on this host: netns labs (namespaces), libvirt labs "
                    "(domains), and labs with harness state (existing machines, Vagrant).")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--uri", default="qemu:///system", help="libvirt URI to look in")
    return p


def netns_labs() -> dict[str, list[str]]:
    from lab.nodes.providers.netns import NETNS_DIR, POD_PREFIX, SWITCH

    labs: dict[str, list[str]] = defaultdict(list)
    try:
        names = sorted(p.name for p in NETNS_DIR.iterdir())
    except FileNotFoundError:
        return {}
    for name in names:
        parts = name.split("-", 2)
        if len(parts) == 3 and parts[0] == "cnilab":
            node = parts[2]
            if node != SWITCH and not node.startswith(POD_PREFIX):
                labs[parts[1]].append(node)
    return dict(labs)


def libvirt_labs(uri: str) -> dict[str, list[str]]:
    """Labs with domains on uri; {} when libvirt is not installed or not running."""
    try:
        import libvirt
    except ImportError:
        return {}
    from lab.nodes.providers.libvirt import xml

    libvirt.registerErrorHandler(lambda *_args: None, None)   # no noise when it is down
    try:
        conn = libvirt.open(uri)
    except libvirt.libvirtError:
        return {}
    labs: dict[str, list[str]] = defaultdict(list)
    try:
        for dom in conn.listAllDomains(0):
            tag = xml.read_tag(dom.XMLDesc(0))
            if tag is not None and tag.role == "node":
                labs[tag.lab].append(tag.node)
    finally:
        conn.close()
    return {lab: sorted(nodes) for lab, nodes in labs.items()}


def podman_labs() -> dict[str, list[str]]:
    """Labs with containers in the default podman storage; {} when there is none."""
    import subprocess

    from lab.config.podman import PodmanSettings
    from lab.nodes.providers.podman.cmdlines import LABEL_LAB, LABEL_NODE, Storage

    settings = PodmanSettings()
    if not (settings.storage_dir / "storage").is_dir():
        return {}
    argv = Storage(settings.storage_dir).argv("ps", "--all", "--format", "json",
                                              "--filter", f"label={LABEL_LAB}")
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
        listed = json.loads(done.stdout or "[]")
    except (OSError, subprocess.TimeoutExpired, ValueError):
        return {}
    labs: dict[str, list[str]] = defaultdict(list)
    for container in listed:
        labels = container.get("Labels") or {}
        if labels.get(LABEL_LAB) and labels.get(LABEL_NODE):
            labs[labels[LABEL_LAB]].append(labels[LABEL_NODE])
    return {lab: sorted(nodes) for lab, nodes in labs.items()}


def state_labs(root: Path = STATE_ROOT) -> list[str]:
    root = root.expanduser()
    return sorted(p.name for p in root.iterdir() if p.is_dir()) if root.is_dir() else []


def run(args: argparse.Namespace) -> int:
    found: dict[str, dict[str, Any]] = {}
    for provider, labs in (("netns", netns_labs()), ("libvirt", libvirt_labs(args.uri)),
                           ("podman", podman_labs())):
        for lab, nodes in labs.items():
            found[lab] = {"lab": lab, "provider": provider, "nodes": nodes}
    for lab in state_labs():
        found.setdefault(lab, {"lab": lab, "provider": "-", "nodes": []})
        found[lab]["state_dir"] = str(STATE_ROOT.expanduser() / lab)
    rows = [found[name] for name in sorted(found)]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    if not rows:
        print("no labs on this host")
        return 0
    print(f"{'LAB':<20} {'PROVIDER':<9} NODES")
    for row in rows:
        listed = ", ".join(row["nodes"]) or ("(harness state only: existing machines, "
                                              "Vagrant, or a lab down with its logs kept)")
        print(f"{row['lab']:<20} {row['provider']:<9} {listed}")
    return 0
