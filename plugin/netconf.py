"""The network configuration: one cluster-wide document describing every node.

The same JSON goes to every node (it is what a NetworkAttachmentDefinition holds); each node
finds itself in `nodes` and derives its pod subnet and its peers from it.

    {
      "cniVersion": "1.1.0", "name": "cnilab", "type": "cnilab",
      "mtu": 1500,                       # pod MTU before the backend's overhead
      "backend": "host-gw",              # "host-gw" | "vxlan" | "none"
      "vxlan": {"vni": 4242, "port": 4790, "device": "cnilab.4242"},
      "nodes": [{"name": "node1", "ip": "10.99.0.11", "podSubnet": "10.244.1.0/24"}, ...],
      "nodeName": "node1",   # optional; else CNILAB_NODE_NAME, a local IP, the hostname
      "ipam": {"type": "host-local"},    # ranges default to this node's podSubnet
      "dns": {...}, "logFile": "/var/log/cnilab.log", "resident": true
    }
"""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Any, Optional

from plugin.errors import INVALID_CONFIG, CniError

BACKENDS = ("host-gw", "vxlan", "none")
VXLAN_OVERHEAD = 50  # outer IPv4 20 + UDP 8 + VXLAN 8 + inner Ethernet 14
# K3s's flannel owns flannel.1 / VNI 1 / UDP 8472: our defaults keep clear of all three.
DEFAULT_VNI = 4242
DEFAULT_VXLAN_PORT = 4790


@dataclass(frozen=True)
class ClusterNode:
    name: str
    ip: ipaddress.IPv4Address
    pod_subnet: ipaddress.IPv4Network


@dataclass(frozen=True)
class VxlanConf:
    vni: int = DEFAULT_VNI
    port: int = DEFAULT_VXLAN_PORT
    device: str = ""

    @property
    def device_name(self) -> str:
        return self.device or f"cnilab.{self.vni}"[:15]


@dataclass
class NetConf:
    name: str
    cni_version: str
    type: str
    raw: dict[str, Any]
    ipam: dict[str, Any]
    backend: str = "none"
    mtu: int = 1500
    nodes: list[ClusterNode] = field(default_factory=list)
    node_name: Optional[str] = None
    vxlan: VxlanConf = field(default_factory=VxlanConf)
    dns: dict[str, Any] = field(default_factory=dict)
    log_file: Optional[str] = None
    resident: bool = True
    prev_result: Optional[dict[str, Any]] = None

    @property
    def pod_mtu(self) -> int:
        return self.mtu - VXLAN_OVERHEAD if self.backend == "vxlan" else self.mtu


def _invalid(field_name: str, why: str) -> CniError:
    return CniError(INVALID_CONFIG, f"invalid network config: {field_name}: {why}")


def _require(raw: dict[str, Any], key: str, kind: type) -> Any:
    if key not in raw:
        raise _invalid(key, "missing (required)")
    value = raw[key]
    if not isinstance(value, kind) or (kind is str and not value):
        raise _invalid(key, f"must be a non-empty {kind.__name__}, got {value!r}")
    return value


def _parse_node(index: int, item: Any) -> ClusterNode:
    where = f"nodes[{index}]"
    if not isinstance(item, dict):
        raise _invalid(where, "must be an object with name, ip, podSubnet")
    for key in ("name", "ip", "podSubnet"):
        if not isinstance(item.get(key), str) or not item[key]:
            raise _invalid(f"{where}.{key}", "missing or not a string")
    try:
        ip = ipaddress.IPv4Address(item["ip"])
    except ValueError as e:
        raise _invalid(f"{where}.ip", str(e)) from None
    try:
        subnet = ipaddress.IPv4Network(item["podSubnet"], strict=True)
    except ValueError as e:
        raise _invalid(f"{where}.podSubnet", str(e)) from None
    return ClusterNode(name=item["name"], ip=ip, pod_subnet=subnet)


def _parse_nodes(raw: Any) -> list[ClusterNode]:
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise _invalid("nodes", "must be a list")
    nodes = [_parse_node(i, item) for i, item in enumerate(raw)]
    seen: dict[str, str] = {}
    for node in nodes:
        for key in (node.name, str(node.ip)):
            if key in seen:
                raise _invalid("nodes", f"{key} appears twice ({seen[key]} and {node.name})")
            seen[key] = node.name
    for i, a in enumerate(nodes):
        for b in nodes[i + 1:]:
            if a.pod_subnet.overlaps(b.pod_subnet):
                raise _invalid("nodes", f"podSubnet of {a.name} ({a.pod_subnet}) overlaps "
                                        f"{b.name} ({b.pod_subnet})")
    return nodes


def _parse_vxlan(raw: Any) -> VxlanConf:
    if raw is None:
        return VxlanConf()
    if not isinstance(raw, dict):
        raise _invalid("vxlan", "must be an object")
    vni, port = raw.get("vni", DEFAULT_VNI), raw.get("port", DEFAULT_VXLAN_PORT)
    if not isinstance(vni, int) or not 1 <= vni < 2**24:
        raise _invalid("vxlan.vni", f"must be an integer 1..16777215, got {vni!r}")
    if not isinstance(port, int) or not 1 <= port < 65536:
        raise _invalid("vxlan.port", f"must be a UDP port 1..65535, got {port!r}")
    if port == 8472 or vni == 1:
        raise _invalid("vxlan", "VNI 1 / port 8472 belong to K3s's flannel; pick others")
    device = raw.get("device", "")
    if not isinstance(device, str) or len(device) > 15 or device == "flannel.1":
        raise _invalid("vxlan.device", "must be an interface name of at most 15 characters "
                                       "and not flannel.1")
    return VxlanConf(vni=vni, port=port, device=device)


def parse(raw: Any) -> NetConf:
    """Validates a decoded network config; raises CniError(7) naming the field and the fix."""
    if not isinstance(raw, dict):
        raise _invalid("(top level)", "must be a JSON object")
    name = _require(raw, "name", str)
    version = _require(raw, "cniVersion", str)
    plugin_type = _require(raw, "type", str)
    ipam = raw.get("ipam")
    if not isinstance(ipam, dict) or not isinstance(ipam.get("type"), str) or not ipam["type"]:
        raise _invalid("ipam.type", "missing: name an IPAM plugin on CNI_PATH, e.g. host-local")
    backend = raw.get("backend", "none")
    if backend not in BACKENDS:
        raise _invalid("backend", f"{backend!r} is not one of {', '.join(BACKENDS)}")
    mtu = raw.get("mtu", 1500)
    if not isinstance(mtu, int) or isinstance(mtu, bool) or not 576 <= mtu <= 65535:
        raise _invalid("mtu", f"must be an integer 576..65535, got {mtu!r}")
    nodes = _parse_nodes(raw.get("nodes"))
    if backend != "none" and not nodes:
        raise _invalid("nodes", f"backend {backend} needs the list of nodes (name, ip, podSubnet)")
    node_name = raw.get("nodeName")
    if node_name is not None and not isinstance(node_name, str):
        raise _invalid("nodeName", "must be a string")
    dns = raw.get("dns", {})
    if not isinstance(dns, dict):
        raise _invalid("dns", "must be an object")
    log_file = raw.get("logFile")
    if log_file is not None and not isinstance(log_file, str):
        raise _invalid("logFile", "must be a path")
    prev = raw.get("prevResult")
    if prev is not None and not isinstance(prev, dict):
        raise _invalid("prevResult", "must be an object")
    return NetConf(
        name=name, cni_version=version, type=plugin_type, raw=raw, ipam=ipam,
        backend=backend, mtu=mtu, nodes=nodes, node_name=node_name,
        vxlan=_parse_vxlan(raw.get("vxlan")), dns=dns, log_file=log_file,
        resident=bool(raw.get("resident", True)), prev_result=prev,
    )
