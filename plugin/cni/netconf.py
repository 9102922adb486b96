"""The network configuration: one cluster-wide document describing every node.

The same JSON goes to every node (it is what a NetworkAttachmentDefinition holds); each node
finds itself in `nodes` and derives its pod subnet and its peers from it.

    {
      "cniVersion": "1.1.0", "name": "cnilab", "type": "cnilab",
      "mtu": 1500,                       # pod MTU before the backend's overhead
      "backend": "host-gw",              # "host-gw" | "vxlan" | "none"
      "vxlan": {"vni": 4242, "port": 4790, "device": "cnilab.4242"},
      "nodes": [{"name": "node1", "ip": "10.99.0.11", "podSubnet": "10.244.1.0/24",
                 # dual-stack: every family's (at most one each); ip/podSubnet among them
                 "ips": ["10.99.0.11", "fd00:99::11"],
                 "podSubnets": ["10.244.1.0/24", "fd00:244:0:1::/64"]}, ...],
      "nodeName": "node1",   # optional; else CNILAB_NODE_NAME, a local IP, the hostname
      "ipam": {"type": "host-local"},    # ranges default to this node's podSubnets
      "dns": {...}, "logFile": "/var/log/cnilab.log", "resident": true
    }
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from plugin.cni import ranges
from plugin.cni.errors import INVALID_CONFIG, CniError
from plugin.crossnode.errors import Misconfigured
from plugin.crossnode.topology import (
    BACKENDS,
    ClusterNode,
    Topology,
    VxlanConf,
    check_families,
    parse_nodes,
    parse_vxlan,
)


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
        """The veth MTU: vxlan takes 50 bytes over an IPv4 underlay, 70 over IPv6."""
        return self.mtu - self.topology.vxlan_overhead if self.backend == "vxlan" else self.mtu

    @property
    def pod_families(self) -> tuple[int, ...]:
        """The families of this network's pod subnets (every node has the same ones), when
        a backend spans nodes; () for backend none."""
        return self.nodes[0].pod_families if self.backend != "none" and self.nodes else ()

    @property
    def topology(self) -> Topology:
        """What the cross-node datapath needs of this config."""
        return Topology(network=self.name, backend=self.backend, nodes=self.nodes,
                        node_name=self.node_name, vxlan=self.vxlan)


def _invalid(field_name: str, why: str) -> CniError:
    return CniError(INVALID_CONFIG, f"invalid network config: {field_name}: {why}")


def _require(raw: dict[str, Any], key: str, kind: type) -> Any:
    if key not in raw:
        raise _invalid(key, "missing (required)")
    value = raw[key]
    if not isinstance(value, kind) or (kind is str and not value):
        raise _invalid(key, f"must be a non-empty {kind.__name__}, got {value!r}")
    return value


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
    try:
        nodes = parse_nodes(raw.get("nodes"))
        check_families(nodes, backend)
        vxlan = parse_vxlan(raw.get("vxlan"))
    except Misconfigured as e:
        raise CniError(INVALID_CONFIG, f"invalid network config: {e.field}: {e.why}",
                       e.details) from None
    if backend != "none" and not nodes:
        raise _invalid("nodes", f"backend {backend} needs the list of nodes (name, ip, podSubnet)")
    ranges.validate(ipam, nodes[0].pod_families if backend != "none" else ())
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
        vxlan=vxlan, dns=dns, log_file=log_file,
        resident=bool(raw.get("resident", True)), prev_result=prev,
    )
