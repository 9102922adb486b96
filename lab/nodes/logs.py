"""One node's share of `lab logs`: `ip -d addr/route/neigh/link`, the plugin's logs and the
CNI state it keeps (result cache, IPAM leases) from the node's state dir. Providers call
collect_node_logs for each node; lab.cluster.logs adds what K3s nodes have and packs it."""
from __future__ import annotations

from pathlib import Path

from lab.api import Node

NODE_COMMANDS = {
    "ip-addr.txt": ["ip", "-d", "addr", "show"],
    "ip-route.txt": ["ip", "-d", "route", "show", "table", "all"],
    "ip-neigh.txt": ["ip", "-d", "neigh", "show"],
    "ip-link.txt": ["ip", "-d", "link", "show"],
    "bridge-fdb.txt": ["bridge", "fdb", "show"],
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
