"""`lab logs`: what a plugin author needs to see why a pod did not connect, as one tarball.

Per node: `ip -d addr/route/neigh/link`, the plugin's logs and the CNI state it keeps (result
cache, IPAM leases) from the node's state dir. Providers call collect_node_logs for each node.
"""
from __future__ import annotations

import tarfile
import tempfile
import time
from pathlib import Path

from lab.api import Node, Provider

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
    _collect_k3s(node, dest)


def _collect_k3s(node: Node, dest: Path) -> None:
    """K3s's journal, containerd config, CNI confs and pods, on nodes that run K3s."""
    if not node.run(["test", "-d", "/var/lib/rancher/k3s"], timeout=20).ok:
        return
    from lab.k3s.cmdlines import diagnostics

    for filename, argv in diagnostics().items():
        result = node.run(argv, timeout=60)
        (dest / filename).write_text(result.stdout + (f"\n# rc={result.rc}\n{result.stderr}"
                                                      if not result.ok else ""))


def write_tarball(provider: Provider, lab_name: str, output: Path | None = None,
                  extra: dict[str, str] | None = None) -> Path:
    """Collects every node's diagnostics (and `extra` files: name -> text) into a .tar.gz
    and returns its path."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    output = output or Path(f"cnilab-{lab_name}-logs-{stamp}.tar.gz")
    output.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="cnilab-logs-") as tmp:
        root = Path(tmp) / f"cnilab-{lab_name}-logs"
        root.mkdir()
        provider.collect_logs(root)
        for name, text in (extra or {}).items():
            (root / name).write_text(text)
        with tarfile.open(output, "w:gz") as tar:
            tar.add(root, arcname=root.name)
    return output
