"""`lab logs`: what a plugin author needs to see why a pod did not connect, as one tarball:
each node's share (lab.nodes.logs, through its provider: links, routes, sysctls, rules, CNI
state, its pods' namespaces), the network config each node got, then K3s's own where it runs.
By default under lab-logs/<lab>/: tarballs of two labs never overwrite each other."""
from __future__ import annotations

import json
import tarfile
import tempfile
import time
from pathlib import Path

from lab.api import LabError, Node, Provider


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


LOGS_DIR = Path("lab-logs")   # default: lab-logs/<lab>/, so two labs' tarballs never collide


def default_output(lab_name: str) -> Path:
    return LOGS_DIR / lab_name / f"cnilab-{lab_name}-logs-{time.strftime('%Y%m%d-%H%M%S')}.tar.gz"


def _network_configs(provider: Provider, nodes: list[Node], root: Path) -> None:
    """The network config each node's runtime passes the plugin, as JSON (the result cache
    holds it only in base64); the lab's own rendering, so a node where ADD never ran has it."""
    from lab.runtime.network import network_spec

    config = getattr(provider, "config", None)
    if config is None or not nodes:
        return
    try:
        spec = network_spec(config, nodes)
    except LabError as e:
        (root / "network-config-error.txt").write_text(e.describe() + "\n")
        return
    for node in nodes:
        if node.name in spec.configs:
            (root / node.name).mkdir(parents=True, exist_ok=True)
            (root / node.name / "network-config.json").write_text(
                json.dumps(spec.configs[node.name], indent=2) + "\n")


def write_tarball(provider: Provider, lab_name: str, output: Path | None = None,
                  extra: dict[str, str] | None = None) -> Path:
    """Collects every node's diagnostics (and `extra` files: name -> text) into a .tar.gz
    and returns its path."""
    output = output or default_output(lab_name)
    output.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="cnilab-logs-") as tmp:
        root = Path(tmp) / f"cnilab-{lab_name}-logs"
        root.mkdir()
        provider.collect_logs(root)
        nodes = provider.nodes()
        _network_configs(provider, nodes, root)
        for node in nodes:
            _collect_k3s(node, root / node.name)
        for name, text in (extra or {}).items():
            (root / name).write_text(text)
        with tarfile.open(output, "w:gz") as tar:
            tar.add(root, arcname=root.name)
    return output
