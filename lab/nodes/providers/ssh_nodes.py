"""What the SSH-based providers (existing, vagrant) share: status probes and log collection."""
from __future__ import annotations

from pathlib import Path

from lab.api import LabError, NodeStatus
from lab.nodes.ssh import SshNode

# (file name, command) written per node by collect_logs; each may fail on its own.
LOG_COMMANDS = (
    ("journal.txt", ["journalctl", "-b", "--no-pager", "-n", "500"]),
    ("ip-addr.txt", ["ip", "-d", "addr"]),
    ("ip-route.txt", ["ip", "route", "show", "table", "all"]),
    ("ip-neigh.txt", ["ip", "neigh"]),
    ("bridge-fdb.txt", ["bridge", "fdb"]),
)


def probe(node: SshNode, timeout: float = 10) -> NodeStatus:
    """running when the node answers a command over SSH; unreachable with the reason else."""
    try:
        node.run(["true"], timeout=timeout).check(node.where)
    except LabError as e:
        node.close()
        return NodeStatus(node.name, node.address, "unreachable", {"error": e.what})
    return NodeStatus(node.name, node.address, "running",
                      {"user": node.user, "port": node.port})


def collect_logs(nodes: list[SshNode], dest: Path) -> None:
    for node in nodes:
        node_dir = Path(dest) / node.name
        node_dir.mkdir(parents=True, exist_ok=True)
        for filename, argv in (*LOG_COMMANDS, ("state-dir.txt", ["ls", "-laR", node.state_dir])):
            try:
                r = node.run(argv, timeout=30)
                text = r.stdout + (f"\n--- stderr (rc={r.rc})\n{r.stderr}" if r.rc else "")
            except LabError as e:
                text = e.describe()
            (node_dir / filename).write_text(text)
