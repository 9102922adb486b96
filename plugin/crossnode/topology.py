"""The cluster as the cross-node datapath sees it: every node's name, underlay addresses and
pod subnets (IPv4, IPv6 or both), the backend, and the VXLAN settings; validated here, so the
CNI config parser only delegates.

The same document goes to every node (it is what a NetworkAttachmentDefinition holds); each
node finds itself in `nodes` (plugin.crossnode.find_self) and derives its peers from it.

A node entry has `name`, `ip` and `podSubnet` (either family), and on dual-stack networks
`ips` and `podSubnets` too (at most one of each family): when present, the lists are the
truth, and `ip` / `podSubnet` must be among them.
"""
from __future__ import annotations

import hashlib
import ipaddress
from dataclasses import dataclass, field
from typing import Any, Optional, Union

from plugin.crossnode.errors import Misconfigured

IPAddress = Union[ipaddress.IPv4Address, ipaddress.IPv6Address]
IPNetwork = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]

BACKENDS = ("host-gw", "vxlan", "none")
# outer IP header (IPv4 20, IPv6 40) + UDP 8 + VXLAN 8 + inner Ethernet 14
VXLAN_OVERHEAD = 50
VXLAN6_OVERHEAD = 70
# K3s's flannel owns flannel.1 / VNI 1 / UDP 8472: our defaults keep clear of all three.
DEFAULT_VNI = 4242
DEFAULT_VXLAN_PORT = 4790
FAMILY_NAMES = {4: "IPv4", 6: "IPv6"}


@dataclass(frozen=True)
class ClusterNode:
    name: str
    ip: IPAddress                     # `ip`: the address the node is known by
    pod_subnet: IPNetwork             # `podSubnet`
    ips: tuple[IPAddress, ...] = ()   # every underlay address, one per family at most
    pod_subnets: tuple[IPNetwork, ...] = ()

    def __post_init__(self) -> None:
        if not self.ips:
            object.__setattr__(self, "ips", (self.ip,))
        if not self.pod_subnets:
            object.__setattr__(self, "pod_subnets", (self.pod_subnet,))

    def ip_of(self, family: int) -> Optional[IPAddress]:
        """This node's underlay address of `family` (4 or 6), if it has one."""
        return next((ip for ip in self.ips if ip.version == family), None)

    def pod_subnet_of(self, family: int) -> Optional[IPNetwork]:
        return next((s for s in self.pod_subnets if s.version == family), None)

    @property
    def pod_families(self) -> tuple[int, ...]:
        return tuple(sorted(s.version for s in self.pod_subnets))


@dataclass(frozen=True)
class VxlanConf:
    vni: int = DEFAULT_VNI
    port: int = DEFAULT_VXLAN_PORT
    device: str = ""

    @property
    def device_name(self) -> str:
        return self.device or f"cnilab.{self.vni}"[:15]


@dataclass(frozen=True)
class Topology:
    """What ADD, CHECK and STATUS program or verify on this node, and for which network
    (the network names this node's lock: two labs' `node1` never share one)."""

    network: str
    backend: str
    nodes: list[ClusterNode] = field(default_factory=list)
    node_name: Optional[str] = None
    vxlan: VxlanConf = field(default_factory=VxlanConf)

    @property
    def underlay_family(self) -> int:
        """The family VXLAN packets travel in: IPv4 when every node has an IPv4 address,
        else IPv6 (check_families has made sure one of the two holds)."""
        return 4 if all(n.ip_of(4) for n in self.nodes) else 6

    @property
    def vxlan_overhead(self) -> int:
        return VXLAN_OVERHEAD if self.underlay_family == 4 else VXLAN6_OVERHEAD


def vtep_mac(ip: IPAddress) -> str:
    """The VTEP MAC every node derives for the node with underlay address `ip`: 0e:cb
    (locally administered, unicast) and the IPv4 address itself, or 4 bytes of a hash of
    the IPv6 one (check_families refuses the unlikely collision)."""
    tail = ip.packed if ip.version == 4 else hashlib.sha256(ip.packed).digest()[:4]
    return ":".join(f"{b:02x}" for b in bytes((0x0E, 0xCB)) + tail)


def _parse_list(where: str, raw: Any, parse: Any) -> list[Any]:
    if not isinstance(raw, list) or not raw:
        raise Misconfigured(where, "must be a non-empty list of strings")
    found = []
    for n, item in enumerate(raw):
        if not isinstance(item, str) or not item:
            raise Misconfigured(f"{where}[{n}]", "missing or not a string")
        try:
            found.append(parse(item))
        except ValueError as e:
            raise Misconfigured(f"{where}[{n}]", str(e)) from None
    families = [x.version for x in found]
    for family in (4, 6):
        if families.count(family) > 1:
            same = ", ".join(str(x) for x in found if x.version == family)
            raise Misconfigured(where, f"has {families.count(family)} {FAMILY_NAMES[family]} "
                                       f"entries ({same}): at most one per family")
    return found


def _subnet(text: str) -> IPNetwork:
    return ipaddress.ip_network(text, strict=True)


def _one(where: str, key: str, item: dict[str, Any], parse: Any,
         listed: Optional[list[Any]]) -> Any:
    """`ip` / `podSubnet`: given, or else the first of its list; when both, among it."""
    if key not in item and listed:
        return listed[0]
    if not isinstance(item.get(key), str) or not item[key]:
        raise Misconfigured(f"{where}.{key}", "missing or not a string")
    try:
        value = parse(item[key])
    except ValueError as e:
        raise Misconfigured(f"{where}.{key}", str(e)) from None
    if listed is not None and value not in listed:
        plural = "ips" if key == "ip" else "podSubnets"
        raise Misconfigured(f"{where}.{key}", f"{value} is not in {plural} "
                                              f"({', '.join(str(x) for x in listed)})",
                            f"when {plural} is given it lists every one; {key} is one of them")
    return value


def _parse_node(index: int, item: Any) -> ClusterNode:
    where = f"nodes[{index}]"
    if not isinstance(item, dict):
        raise Misconfigured(where, "must be an object with name, ip, podSubnet")
    if not isinstance(item.get("name"), str) or not item["name"]:
        raise Misconfigured(f"{where}.name", "missing or not a string")
    ips = _parse_list(f"{where}.ips", item["ips"], ipaddress.ip_address) \
        if "ips" in item else None
    subnets = _parse_list(f"{where}.podSubnets", item["podSubnets"], _subnet) \
        if "podSubnets" in item else None
    ip = _one(where, "ip", item, ipaddress.ip_address, ips)
    subnet = _one(where, "podSubnet", item, _subnet, subnets)
    return ClusterNode(name=item["name"], ip=ip, pod_subnet=subnet, ips=tuple(ips or (ip,)),
                       pod_subnets=tuple(subnets or (subnet,)))


def parse_nodes(raw: Any) -> list[ClusterNode]:
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise Misconfigured("nodes", "must be a list")
    nodes = [_parse_node(i, item) for i, item in enumerate(raw)]
    seen: dict[str, str] = {}
    for node in nodes:
        for key in (node.name, *(str(ip) for ip in node.ips)):
            if key in seen:
                raise Misconfigured("nodes", f"{key} appears twice ({seen[key]} and {node.name})")
            seen[key] = node.name
    for i, a in enumerate(nodes):
        for b in nodes[i + 1:]:
            for sa in a.pod_subnets:
                for sb in b.pod_subnets:
                    if sa.version == sb.version and sa.overlaps(sb):
                        raise Misconfigured("nodes", f"podSubnet of {a.name} ({sa}) overlaps "
                                                     f"{b.name} ({sb})")
    return nodes


def _families(families: tuple[int, ...]) -> str:
    return " and ".join(FAMILY_NAMES[f] for f in families) or "none"


def check_families(nodes: list[ClusterNode], backend: str) -> None:
    """The families of the node list agree with each other and with what `backend` needs:
    every node has a pod subnet of each family the network carries; host-gw routes each
    family's pod subnets via the peer's address of that family; vxlan needs one underlay
    family every node has an address in (IPv4 first: it carries IPv6 pods too)."""
    if backend == "none" or not nodes:
        return
    first = nodes[0]
    for index, node in enumerate(nodes):
        if node.pod_families != first.pod_families:
            raise Misconfigured(
                f"nodes[{index}].podSubnets",
                f"{node.name} has {_families(node.pod_families)} pod subnets, {first.name} "
                f"has {_families(first.pod_families)}",
                "every node needs one pod subnet of each family the network carries")
    if backend == "host-gw":
        for index, node in enumerate(nodes):
            for subnet in node.pod_subnets:
                if node.ip_of(subnet.version) is None:
                    name = FAMILY_NAMES[subnet.version]
                    raise Misconfigured(
                        f"nodes[{index}].ips",
                        f"{node.name} has an {name} pod subnet ({subnet}) but no {name} "
                        "address", f"host-gw routes {subnet} via {node.name}'s {name} "
                        f"address: add it to ips, or use backend vxlan (over one family)")
        return
    if not all(n.ip_of(4) for n in nodes) and not all(n.ip_of(6) for n in nodes):
        have = ", ".join(f"{n.name}: {_families(tuple(ip.version for ip in n.ips))}"
                         for n in nodes)
        raise Misconfigured("nodes", f"no address family every node has an address in "
                                     f"({have})", "vxlan tunnels over one underlay family: "
                                                  "give every node an address of it in ips")
    family = 4 if all(n.ip_of(4) for n in nodes) else 6
    macs: dict[str, str] = {}
    for node in nodes:
        ip = node.ip_of(family)
        assert ip is not None
        mac = vtep_mac(ip)
        if mac in macs:
            raise Misconfigured("nodes", f"{macs[mac]} and {node.name} derive the same VTEP "
                                         f"MAC {mac}", "give one of them another address")
        macs[mac] = node.name


def parse_vxlan(raw: Any) -> VxlanConf:
    if raw is None:
        return VxlanConf()
    if not isinstance(raw, dict):
        raise Misconfigured("vxlan", "must be an object")
    vni, port = raw.get("vni", DEFAULT_VNI), raw.get("port", DEFAULT_VXLAN_PORT)
    if not isinstance(vni, int) or isinstance(vni, bool) or not 1 <= vni < 2**24:
        raise Misconfigured("vxlan.vni", f"must be an integer 1..16777215, got {vni!r}")
    if not isinstance(port, int) or isinstance(port, bool) or not 1 <= port < 65536:
        raise Misconfigured("vxlan.port", f"must be a UDP port 1..65535, got {port!r}")
    if port == 8472 or vni == 1:
        raise Misconfigured("vxlan", "VNI 1 / port 8472 belong to K3s's flannel; pick others")
    device = raw.get("device", "")
    if not isinstance(device, str) or len(device) > 15 or device == "flannel.1":
        raise Misconfigured("vxlan.device", "must be an interface name of at most 15 "
                                            "characters and not flannel.1")
    return VxlanConf(vni=vni, port=port, device=device)
