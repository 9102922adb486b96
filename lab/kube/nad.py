"""The network under test in Kubernetes: a NetworkAttachmentDefinition, or the primary conflist.

Both come from the lab's NetworkSpec (real node names, IPs, pod subnets). A NAD holds one config
for every node, so the per-node configs must agree once `nodeName` is dropped (our plugin finds
its node from the `nodes` list); a plugin whose config differs per node (reference ptp with a
per-node host-local range) can only be the primary network, where each node gets its own file.
"""
from __future__ import annotations

import json
import re
from typing import Any

from lab.api import LabError, NetworkSpec

NAD_API_VERSION = "k8s.cni.cncf.io/v1"
NETWORKS_ANNOTATION = "k8s.v1.cni.cncf.io/networks"
NETWORK_STATUS_ANNOTATION = "k8s.v1.cni.cncf.io/network-status"
_DNS1123 = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_PER_NODE_KEYS = ("nodeName",)


def _check_name(name: str) -> None:
    if len(name) > 63 or not _DNS1123.match(name):
        raise LabError(f"network name {name!r} cannot name a NetworkAttachmentDefinition",
                       hint="use lower-case letters, digits and '-' (at most 63 characters)")


def shared_config(spec: NetworkSpec) -> dict[str, Any]:
    """The one config every node accepts (per-node keys dropped), or a clear error."""
    if not spec.configs:
        raise LabError(f"network {spec.name} has no node configs to render")
    shared = {node: {k: v for k, v in conf.items() if k not in _PER_NODE_KEYS}
              for node, conf in spec.configs.items()}
    first_node, first = next(iter(shared.items()))
    for node, conf in shared.items():
        if conf != first:
            diff = sorted(k for k in set(conf) | set(first) if conf.get(k) != first.get(k))
            raise LabError(
                f"the {spec.plugin_type} config differs between {first_node} and {node} "
                f"({', '.join(diff)}): a NetworkAttachmentDefinition holds one config",
                hint="use a plugin whose config lists every node (cnilab), or set "
                     "k3s.primary = true to give each node its own conflist")
    return first


def nad_manifest(spec: NetworkSpec, namespace: str) -> dict[str, Any]:
    _check_name(spec.name)
    return {
        "apiVersion": NAD_API_VERSION,
        "kind": "NetworkAttachmentDefinition",
        "metadata": {"name": spec.name, "namespace": namespace,
                     "labels": {"app.kubernetes.io/managed-by": "cnilab"}},
        "spec": {"config": json.dumps(shared_config(spec), sort_keys=True)},
    }


def networks_annotation(spec: NetworkSpec, namespace: str) -> str:
    """The pod annotation asking Multus for this network, on the interface scenarios expect."""
    return json.dumps([{"name": spec.name, "namespace": namespace, "interface": spec.ifname}])


def primary_conflist(config: dict[str, Any]) -> dict[str, Any]:
    """A node's config as the cluster network: a conflist (runtimes since CNI 1.0 want lists)."""
    if "plugins" in config:
        return config
    plugin = {k: v for k, v in config.items() if k not in ("cniVersion", "name")}
    return {"cniVersion": config["cniVersion"], "name": config["name"], "plugins": [plugin]}


def primary_conflist_name(spec: NetworkSpec) -> str:
    # Sorts before K3s's 10-flannel.conflist, after Multus's 00-multus.conf.
    return f"05-{spec.name}.conflist"


def attachment_ips(network_status: str | None, spec: NetworkSpec,
                   namespace: str) -> dict[int, str]:
    """family -> the address Multus reports for this network in a pod's network-status."""
    if not network_status:
        return {}
    try:
        entries = json.loads(network_status)
    except json.JSONDecodeError:
        raise LabError(f"{NETWORK_STATUS_ANNOTATION} is not JSON: {network_status[:200]}") from None
    wanted = {f"{namespace}/{spec.name}", spec.name}
    for entry in entries if isinstance(entries, list) else []:
        if not isinstance(entry, dict):
            continue
        if entry.get("name") in wanted and entry.get("interface", spec.ifname) == spec.ifname:
            return by_family(entry.get("ips") or [])
    return {}


def by_family(addresses: list[Any]) -> dict[int, str]:
    """family -> the first address of it, prefix dropped, v4 first."""
    found: dict[int, str] = {}
    for address in addresses:
        text = str(address).split("/")[0]
        found.setdefault(6 if ":" in text else 4, text)
    return dict(sorted(found.items()))


def attachment_ip(network_status: str | None, spec: NetworkSpec, namespace: str) -> str | None:
    """The primary address (v4 when it has one) Multus reports for this network."""
    found = attachment_ips(network_status, spec, namespace)
    return next(iter(found.values()), None)
