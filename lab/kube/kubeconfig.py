"""The cluster's admin kubeconfig on the harness side: fetched, pointed at the server, kept 0600.

K3s writes /etc/rancher/k3s/k3s.yaml on the server with `server: https://127.0.0.1:6443` and every
name set to "default"; we point it at the server node's lab address and name everything after the
lab, so it can sit next to other clusters in ~/.kube/config.
"""
from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

import yaml  # PyYAML: comes with the kubernetes client (the k8s extra)

from lab.api import LabError, Node
from lab.kube.cmdlines import NODE_KUBECONFIG, server_url

KUBECONFIG_NAME = "kubeconfig"


def context_name(lab_name: str) -> str:
    return f"cnilab-{lab_name}"


def state_path(state_dir: Path) -> Path:
    return state_dir / KUBECONFIG_NAME


def _load(text: str, source: str) -> dict[str, Any]:
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise LabError(f"{source} is not valid YAML: {e}") from None
    if not isinstance(doc, dict) or doc.get("kind", "Config") != "Config":
        raise LabError(f"{source} is not a kubeconfig (kind: Config)")
    return doc


def rewrite(text: str, server_address: str, lab_name: str) -> dict[str, Any]:
    """K3s's kubeconfig with the server address and names made the lab's own."""
    doc = _load(text, NODE_KUBECONFIG)
    name = context_name(lab_name)
    clusters, users, contexts = (doc.get(k) or [] for k in ("clusters", "users", "contexts"))
    if len(clusters) != 1 or len(users) != 1 or len(contexts) != 1:
        raise LabError(f"{NODE_KUBECONFIG} has {len(clusters)} clusters, {len(users)} users and "
                       f"{len(contexts)} contexts; expected one of each, as K3s writes it")
    clusters[0]["name"], users[0]["name"], contexts[0]["name"] = name, name, name
    clusters[0]["cluster"]["server"] = server_url(server_address)
    contexts[0]["context"].update(cluster=name, user=name)
    doc["current-context"] = name
    return doc


def dump(doc: dict[str, Any]) -> str:
    return yaml.safe_dump(doc, default_flow_style=False, sort_keys=False)


def write_private(path: Path, text: str) -> None:
    """Writes a secret file 0600 from the first byte (never briefly world-readable)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}.{threading.get_ident()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, text.encode())
    finally:
        os.close(fd)
    os.replace(tmp, path)


def merge(existing: dict[str, Any] | None, new: dict[str, Any]) -> dict[str, Any]:
    """`new`'s cluster, user and context replace same-named entries; the rest stays as it was."""
    merged: dict[str, Any] = dict(existing or {"apiVersion": "v1", "kind": "Config",
                                               "preferences": {}})
    for key in ("clusters", "users", "contexts"):
        incoming = {entry["name"]: entry for entry in new.get(key) or []}
        kept = [e for e in merged.get(key) or [] if e.get("name") not in incoming]
        merged[key] = kept + list(incoming.values())
    if not merged.get("current-context"):
        merged["current-context"] = new.get("current-context")
    return merged


def fetch(server: Node, state_dir: Path, lab_name: str) -> Path:
    """Copies the server's kubeconfig to <state_dir>/kubeconfig (0600) and returns its path."""
    result = server.run(["cat", NODE_KUBECONFIG], timeout=30)
    if not result.ok:
        raise LabError(f"cannot read {NODE_KUBECONFIG}", where=server.name, output=result.stderr,
                       hint="is the K3s server running? `lab exec "
                            f"{server.name} -- systemctl status k3s`")
    path = state_path(state_dir)
    write_private(path, dump(rewrite(result.stdout, server.address, lab_name)))
    return path


def merge_into_user_config(kubeconfig: Path, user_config: Path | None = None) -> Path:
    """Merges the lab's kubeconfig into ~/.kube/config (or $KUBECONFIG's first file)."""
    target = user_config or Path(os.environ.get("KUBECONFIG", "").split(os.pathsep)[0]
                                 or Path.home() / ".kube" / "config")
    existing = _load(target.read_text(), str(target)) if target.exists() else None
    write_private(target, dump(merge(existing, _load(kubeconfig.read_text(), str(kubeconfig)))))
    return target
