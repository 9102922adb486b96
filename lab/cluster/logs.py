"""`lab logs`: what a plugin author needs to see why a pod did not connect, as one tarball:
each node's share (lab.nodes.logs, through its provider), then K3s's own where it runs."""
from __future__ import annotations

import tarfile
import tempfile
import time
from pathlib import Path

from lab.api import Node, Provider


def _collect_k3s(node: Node, dest: Path) -> None:
    """K3s's journal, containerd config, CNI confs and pods, on nodes that run K3s."""
    if not node.run(["test", "-d", "/var/lib/rancher/k3s"], timeout=20).ok:
        return
    from lab.kube.cmdlines import diagnostics

    for filename, argv in diagnostics().items():
        result = node.run(argv, timeout=60)
        dest.mkdir(parents=True, exist_ok=True)
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
        for node in provider.nodes():
            _collect_k3s(node, root / node.name)
        for name, text in (extra or {}).items():
            (root / name).write_text(text)
        with tarfile.open(output, "w:gz") as tar:
            tar.add(root, arcname=root.name)
    return output
