"""`lab ls [--json]`: the labs on this host, found in the resources themselves, with the state,
age, pod count and config of each.

netns labs from their namespaces (`cnilab-<lab>-<node>`: lab names hold no '-'), libvirt labs
from the cnilab tag in each domain's metadata, podman labs from their containers' labels (in
the harness's default podman storage), and labs whose nodes live elsewhere (existing
machines, Vagrant) from the harness state dirs under ~/.local/state/cnilab. Nothing here needs
a config: it answers "what is running on this machine, and whose is it".
"""
from __future__ import annotations

import argparse
import contextlib
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


# What a lab's row says about a harness dir: `lab up` states (lab.cluster.actions) and a lab
# whose failed `lab up` cleaned itself up, leaving only its logs (`lab down` removes those).
UP_FAILED = "up failed"


def lab_details(lab: str, row: dict[str, Any]) -> None:
    """config, age, pods and state of one row, from what the lab left on this host."""
    import time

    from lab.cluster.actions import IDENTITY_FILE, LOGS_SUBDIR, UP_STATE_FILE
    from lab.nodes.providers.netns import HOST_ROOT, NETNS_DIR, POD_PREFIX, ns_prefix

    identity: dict[str, Any] = {}
    places = [STATE_ROOT.expanduser() / lab / IDENTITY_FILE]
    places += [HOST_ROOT / lab / node / IDENTITY_FILE for node in row["nodes"]]
    for place in places:
        try:
            identity = json.loads(place.read_text())
            break
        except (OSError, ValueError):
            continue
    harness = Path(identity.get("harness_dir") or STATE_ROOT.expanduser() / lab)
    row["config"] = identity.get("source") or None
    row["pods"] = None
    row["age_s"] = None
    if row["provider"] == "netns":
        prefix = ns_prefix(lab) + POD_PREFIX
        row["pods"] = sum(1 for p in NETNS_DIR.iterdir() if p.name.startswith(prefix))
        first = NETNS_DIR / (ns_prefix(lab) + row["nodes"][0])
        with contextlib.suppress(OSError):   # removed while we looked
            row["age_s"] = int(time.time() - first.stat().st_mtime)
    try:
        row["state"] = (harness / UP_STATE_FILE).read_text().strip() or "up"
    except OSError:
        row["state"] = "up" if row["nodes"] else "-"
    if not row["nodes"]:
        logs = sorted((harness / LOGS_SUBDIR).glob("up-failed-*")) if harness.is_dir() else []
        if logs:
            row["state"] = UP_FAILED
            row["logs"] = str(logs[-1])


def all_labs(uri: str) -> list[dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    for provider, labs in (("netns", netns_labs()), ("libvirt", libvirt_labs(uri)),
                           ("podman", podman_labs())):
        for lab, nodes in labs.items():
            found[lab] = {"lab": lab, "provider": provider, "nodes": nodes}
    for lab in state_labs():
        found.setdefault(lab, {"lab": lab, "provider": "-", "nodes": []})
        found[lab]["state_dir"] = str(STATE_ROOT.expanduser() / lab)
    for lab, row in found.items():
        lab_details(lab, row)
    return [found[name] for name in sorted(found)]


def age(seconds: int | None) -> str:
    if seconds is None:
        return "-"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def run(args: argparse.Namespace) -> int:
    rows = all_labs(args.uri)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    if not rows:
        print("no labs on this host")
        return 0
    print(f"{'LAB':<20} {'PROVIDER':<9} {'STATE':<11} {'AGE':>5} {'PODS':>4}  NODES / CONFIG")
    for row in rows:
        if row["state"] == UP_FAILED:
            listed = f"(up failed; its logs: {row['logs']}; `lab down --name {row['lab']}` " \
                     "removes them)"
        else:
            listed = ", ".join(row["nodes"]) or ("(harness state only: existing machines, "
                                                  "Vagrant, or a lab down with its logs kept)")
        pods = "-" if row["pods"] is None else str(row["pods"])
        state = row["state"] if len(row["state"]) <= 11 else row["state"][:10] + "…"
        print(f"{row['lab']:<20} {row['provider']:<9} {state:<11} {age(row['age_s']):>5} "
              f"{pods:>4}  {listed}" + (f"  {row['config']}" if row["config"] else ""))
    return 0
