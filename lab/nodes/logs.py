"""One node's share of `lab logs`: `ip -d addr/route/neigh/link`, forwarding and filtering
sysctls, nft and iptables rules, the plugin's logs and the CNI state it keeps (result cache,
IPAM leases) from the node's state dir, and each of its pods' links, addresses, routes and
neighbours (the pods its result cache names). Providers call collect_node_logs for each node;
lab.cluster.logs adds the network config each node got and what K3s nodes have, and packs it."""
from __future__ import annotations

import json
from pathlib import Path

from lab.api import Node

NODE_COMMANDS = {
    "ip-addr.txt": ["ip", "-d", "addr", "show"],
    "ip-route.txt": ["ip", "-d", "route", "show", "table", "all"],
    "ip-neigh.txt": ["ip", "-d", "neigh", "show"],
    "ip-link.txt": ["ip", "-d", "link", "show"],
    "bridge-fdb.txt": ["bridge", "fdb", "show"],
    # what decides whether a packet is forwarded or dropped on its way between pods
    "sysctl.txt": ["sh", "-c", "sysctl -a 2>/dev/null | grep -E '^net\\.(ipv4\\.(ip_forward|"
                   "conf\\.[^.]+\\.(rp_filter|forwarding|proxy_arp|accept_local))|ipv6\\.conf"
                   "\\.[^.]+\\.(forwarding|disable_ipv6|accept_ra|proxy_ndp)) '"],
    "nft-ruleset.txt": ["nft", "list", "ruleset"],
    "iptables-save.txt": ["iptables-save"],
    "ip6tables-save.txt": ["ip6tables-save"],
}
POD_COMMANDS = {
    "ip-addr.txt": ["ip", "-d", "addr", "show"],
    "ip-route.txt": ["ip", "-d", "route", "show", "table", "all"],
    "ip6-route.txt": ["ip", "-6", "-d", "route", "show", "table", "all"],
    "ip-neigh.txt": ["ip", "-d", "neigh", "show"],
    "ip-link.txt": ["ip", "-d", "link", "show"],
}
STATE_SKIP = {"bin"}          # the plugin binary itself is not a log
MAX_FILE = 8 * 1024 * 1024


def collect_node_logs(node: Node, dest: Path) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    for filename, argv in NODE_COMMANDS.items():
        result = node.run(argv, timeout=20)
        (dest / filename).write_text(result.stdout + (f"\n# rc={result.rc}\n{result.stderr}"
                                                      if not result.ok else ""))
    # the CNI state: plugin logs, cached ADD results, host-local leases
    listing = node.run(["find", node.state_dir, "-type", "f", "-size", f"-{MAX_FILE // 1024}k"],
                       timeout=20)
    for path in listing.stdout.split():
        rel = Path(path).relative_to(node.state_dir)
        if rel.parts and rel.parts[0] in STATE_SKIP:
            continue
        content = node.run(["cat", path], timeout=20)
        target = dest / "state" / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(content.stdout)
    for netns in sorted(cached_pod_namespaces(dest / "state")):
        collect_pod_logs(node, netns, dest / "pods" / Path(netns).name)


def cached_pod_namespaces(state: Path) -> set[str]:
    """The namespaces this node's result cache attached (libcni's cniCacheV1 files)."""
    found = set()
    for cached in state.rglob("*"):
        try:
            doc = json.loads(cached.read_text()) if cached.is_file() else None
        except (ValueError, UnicodeDecodeError):
            continue
        if isinstance(doc, dict) and isinstance(doc.get("netns"), str) and doc["netns"]:
            found.add(doc["netns"])
    return found


def collect_pod_logs(node: Node, netns: str, dest: Path) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    for filename, argv in POD_COMMANDS.items():
        result = node.run(["nsenter", f"--net={netns}", "--", *argv], timeout=20)
        (dest / filename).write_text(result.stdout + (f"\n# rc={result.rc}\n{result.stderr}"
                                                      if not result.ok else ""))
