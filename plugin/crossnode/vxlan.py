"""vxlan: our own VXLAN device plus, per peer, a route, a neighbour and an FDB entry.

This is flannel's vxlan backend without flanneld: flannel learns each peer's VTEP MAC from
the Kubernetes API; we have no daemon, so every node derives every VTEP MAC from the node's
underlay address (topology.vtep_mac) and sets its own device to that MAC. A node's VTEP
address in each pod family is the network address of its pod subnet of that family, as /32
or /128 on the device (host-local never hands out the network address, so it cannot collide
with a pod or the gateway).

One device carries both pod families over one underlay family (Topology.underlay_family:
IPv4 when every node has an IPv4 address, else IPv6). Per peer (what `ip` would show):
    route  <peer subnet> via <peer vtep> dev <vxlan> onlink   proto 232   (each pod family)
    neigh  <peer vtep> lladdr <peer vtep MAC> dev <vxlan> PERMANENT       (each pod family)
    fdb    <peer vtep MAC> dev <vxlan> dst <peer underlay IP> self permanent
"""
from __future__ import annotations

import errno
import ipaddress
import socket
from typing import Any, Optional

from plugin.crossnode import localaddr, peer_routes
from plugin.crossnode.errors import ProgrammingFailed
from plugin.crossnode.topology import (
    VXLAN6_OVERHEAD,
    VXLAN_OVERHEAD,
    ClusterNode,
    IPAddress,
    VxlanConf,
    vtep_mac,
)

AF_BRIDGE = 7
NUD_NOARP = 0x40
NUD_PERMANENT = 0x80
NTF_SELF = 0x02
SIOCGIFMTU = 0x8921
IFA_F_NODAD = 0x02  # no duplicate address detection: the address is usable at once
LINK_LOCAL = ipaddress.ip_network("fe80::/10")

__all__ = ["ensure", "problems", "vtep_addr", "vtep_mac"]


def vtep_addr(node: ClusterNode, family: int = 4) -> str:
    subnet = node.pod_subnet_of(family)
    assert subnet is not None  # check_families: every node has every pod family
    return str(subnet.network_address)


def _underlay_ip(node: ClusterNode, family: int) -> IPAddress:
    ip = node.ip_of(family)
    assert ip is not None  # check_families: every node has the underlay family
    return ip


def _vteps(node: ClusterNode) -> dict[str, int]:
    """This node's VTEP address of each pod family -> its prefix length on the device."""
    return {vtep_addr(node, s.version): s.max_prefixlen for s in node.pod_subnets}


def wanted_routes(peers: list[ClusterNode], ifindex: int) -> list[peer_routes.PeerRoute]:
    return [peer_routes.PeerRoute(dst=str(subnet), gateway=vtep_addr(p, subnet.version),
                                  oif=ifindex, onlink=True, node=p.name)
            for p in peers for subnet in p.pod_subnets]


def _fail(what: str, detail: str = "") -> ProgrammingFailed:
    return ProgrammingFailed(f"vxlan: {what}", detail)


# --- the device -------------------------------------------------------------------------------

def _underlay(ipr: Any, node_ip: IPAddress) -> tuple[int, int]:
    """(ifindex, mtu) of the interface holding this node's IP: VXLAN packets leave there."""
    index = localaddr.interface_holding(ipr, node_ip)
    if index is None:
        raise _fail(f"node IP {node_ip} is on no interface of this node",
                    "the nodes list must give each node's own underlay address")
    return index, _mtu_of(index)


def _mtu_of(index: int) -> int:
    # Two ioctls in this thread's namespace, where pyroute2 would decode the whole link
    # message with its statistics (~1 ms) to read one number.
    import fcntl
    import struct

    ifreq = struct.pack("16si20x", socket.if_indextoname(index).encode(), 0)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        answer = fcntl.ioctl(s, SIOCGIFMTU, ifreq)
    return int(struct.unpack_from("16si", answer)[1])


_SETTINGS = ("IFLA_VXLAN_ID", "IFLA_VXLAN_PORT", "IFLA_VXLAN_LOCAL", "IFLA_VXLAN_LOCAL6",
             "IFLA_VXLAN_LEARNING")


def _link_settings(link: Any) -> tuple[str, dict[str, Any]]:
    info = link.get_attr("IFLA_LINKINFO")
    if info is None:
        return "", {}
    data = info.get_attr("IFLA_INFO_DATA")
    settings: dict[str, Any] = {}
    if data is not None and not isinstance(data, (str, bytes)):
        for key in _SETTINGS:
            settings[key] = data.get_attr(key)
    if settings.get("IFLA_VXLAN_LOCAL6") is not None:  # the kernel's spelling, canonical
        settings["IFLA_VXLAN_LOCAL6"] = str(ipaddress.IPv6Address(
            settings["IFLA_VXLAN_LOCAL6"]))
    return info.get_attr("IFLA_INFO_KIND") or "", settings


def _settings_problems(vx: VxlanConf, local: IPAddress, kind: str,
                       settings: dict[str, Any]) -> list[str]:
    name = vx.device_name
    if kind != "vxlan":
        return [f"{name} exists but is a {kind or 'plain'} device, not vxlan"]
    want = {"IFLA_VXLAN_ID": vx.vni, "IFLA_VXLAN_PORT": vx.port,
            "IFLA_VXLAN_LOCAL": str(local) if local.version == 4 else None,
            "IFLA_VXLAN_LOCAL6": str(local) if local.version == 6 else None,
            "IFLA_VXLAN_LEARNING": 0}
    labels = {"IFLA_VXLAN_ID": "VNI", "IFLA_VXLAN_PORT": "UDP port",
              "IFLA_VXLAN_LOCAL": "local address", "IFLA_VXLAN_LOCAL6": "local IPv6 address",
              "IFLA_VXLAN_LEARNING": "learning"}
    return [f"{name} has {labels[k]} {settings.get(k)!r}, want {v!r}"
            for k, v in want.items() if settings.get(k) != v]


def _find_device(ipr: Any, name: str) -> Optional[Any]:
    from pyroute2.netlink.exceptions import NetlinkError  # loaded already with ipr

    try:  # one RTM_GETLINK by name, not link_lookup's dump of every pod's veth
        return ipr.link("get", ifname=name)[0]
    except NetlinkError as e:
        if e.code == errno.ENODEV:
            return None
        raise


def _ensure_device(ipr: Any, vx: VxlanConf, family: int, me: ClusterNode) -> int:
    local = _underlay_ip(me, family)
    name, mac = vx.device_name, vtep_mac(local)
    underlay_index, underlay_mtu = _underlay(ipr, local)
    mtu = underlay_mtu - (VXLAN_OVERHEAD if family == 4 else VXLAN6_OVERHEAD)
    link = _find_device(ipr, name)
    if link is not None:
        kind, settings = _link_settings(link)
        if kind != "vxlan":
            raise _fail(f"{name} exists and is a {kind or 'plain'} device, not ours",
                        "pick another vxlan.device in the network config")
        if _settings_problems(vx, local, kind, settings):
            # A changed VNI, port or node IP cannot be set on a live device: start over
            # (its routes, neighbours and FDB entries go with it and are rebuilt below).
            ipr.link("del", index=link["index"])
            link = None
    if link is None:
        from pyroute2.netlink.exceptions import NetlinkError  # loaded already with ipr

        where = {"vxlan_local" if family == 4 else "vxlan_local6": str(local)}
        try:
            ipr.link("add", ifname=name, kind="vxlan", vxlan_id=vx.vni, vxlan_port=vx.port,
                     vxlan_learning=0, vxlan_link=underlay_index, address=mac, mtu=mtu,
                     **where)
        except NetlinkError as e:
            raise _fail(f"cannot create {name} (VNI {vx.vni}, port {vx.port}): {e}",
                        "another device may already use this VNI and port") from None
        link = _find_device(ipr, name)
        if link is None:
            raise _fail(f"{name} vanished right after it was created")
    index = int(link["index"])
    changes: dict[str, Any] = {}
    if link.get_attr("IFLA_ADDRESS") != mac:
        changes["address"] = mac
    if link.get_attr("IFLA_MTU") != mtu:
        changes["mtu"] = mtu
    if not link["flags"] & 1:  # IFF_UP
        changes["state"] = "up"
    if changes:
        ipr.link("set", index=index, **changes)
    _ensure_vtep_addresses(ipr, index, name, _vteps(me))
    return index


def _ensure_vtep_addresses(ipr: Any, index: int, name: str, want: dict[str, int]) -> None:
    from pyroute2.netlink.exceptions import NetlinkError  # loaded already with ipr

    # filtered by the kernel, not a full dump; the device's own link-local address stays
    present = {a for a in localaddr.addresses_on(ipr, index, socket.AF_UNSPEC)
               if ipaddress.ip_interface(a).ip not in LINK_LOCAL}
    wanted = {f"{address}/{prefixlen}" for address, prefixlen in want.items()}
    for other in present - wanted:
        ip, length = other.split("/")
        ipr.addr("del", index=index, address=ip, prefixlen=int(length))
    for address, prefixlen in want.items():
        if f"{address}/{prefixlen}" in present:
            continue
        # NODAD: the VTEP answers at once (DAD would keep it tentative for 1-2 s, and no
        # other VTEP on this device's segment can hold the address)
        flags = IFA_F_NODAD if prefixlen == 128 else 0
        try:
            ipr.addr("add", index=index, address=address, prefixlen=prefixlen, flags=flags)
        except NetlinkError as e:
            if e.code != errno.EACCES or prefixlen != 128:
                raise
            _allow_ipv6(name)  # the node's default is disable_ipv6=1: not on our device
            ipr.addr("add", index=index, address=address, prefixlen=prefixlen, flags=flags)


def _allow_ipv6(device: str) -> None:
    """IPv6 on our device even where the node's default is disable_ipv6=1."""
    path = f"/proc/sys/net/ipv6/conf/{device}/disable_ipv6"
    try:
        with open(path, "r+", encoding="ascii") as f:
            if f.read().strip() != "0":
                f.seek(0)
                f.write("0")
    except FileNotFoundError:
        raise _fail("this node's kernel has no IPv6 (booted with ipv6.disable=1?)",
                    f"{path} is missing; the pods' IPv6 subnets need it") from None


# --- peers ------------------------------------------------------------------------------------

def _dump_neighbours(ipr: Any, family: int, index: int) -> Any:
    # ifindex stays in the request (match= carries the client-side filter): on a strict-check
    # socket the kernel then dumps only our device, not every pod veth's FDB/ARP entries.
    # AF_UNSPEC: the ARP and the neighbour discovery tables in one request.
    return ipr.neigh("dump", family=family, ifindex=index, match={"ifindex": index})


def _permanent_neighbours(ipr: Any, index: int) -> dict[str, str]:
    return {str(ipaddress.ip_address(n.get_attr("NDA_DST"))): n.get_attr("NDA_LLADDR")
            for n in _dump_neighbours(ipr, socket.AF_UNSPEC, index)
            if n["state"] & NUD_PERMANENT and n["family"] in (socket.AF_INET, socket.AF_INET6)
            and n.get_attr("NDA_DST")}


def _fdb_entries(ipr: Any, index: int) -> dict[str, Optional[str]]:
    return {e.get_attr("NDA_LLADDR"): _canonical(e.get_attr("NDA_DST"))
            for e in _dump_neighbours(ipr, AF_BRIDGE, index) if e["ifindex"] == index}


def _canonical(ip: Optional[str]) -> Optional[str]:
    return str(ipaddress.ip_address(ip)) if ip else ip


def _ensure_peer_l2(ipr: Any, index: int, family: int, peers: list[ClusterNode]) -> None:
    neighbours, fdb = _permanent_neighbours(ipr, index), _fdb_entries(ipr, index)
    want_neigh = {vtep_addr(p, s.version): vtep_mac(_underlay_ip(p, family))
                  for p in peers for s in p.pod_subnets}
    want_fdb = {vtep_mac(_underlay_ip(p, family)): str(_underlay_ip(p, family)) for p in peers}
    # FDB before neighbour before route: the first packet to a new peer finds its way.
    for mac, dst in want_fdb.items():
        if fdb.get(mac) != dst:
            ipr.fdb("replace", ifindex=index, lladdr=mac, dst=dst,
                    state=NUD_PERMANENT | NUD_NOARP, flags=NTF_SELF)
    for mac, stale in fdb.items():
        if mac not in want_fdb and stale:
            ipr.fdb("del", ifindex=index, lladdr=mac, dst=stale)
    for addr, mac in want_neigh.items():
        if neighbours.get(addr) != mac:
            ipr.neigh("replace", ifindex=index, dst=addr, lladdr=mac, state=NUD_PERMANENT,
                      family=_family(addr))
    for addr in neighbours.keys() - want_neigh.keys():
        ipr.neigh("del", ifindex=index, dst=addr, family=_family(addr))


def _family(address: str) -> int:
    return socket.AF_INET6 if ":" in address else socket.AF_INET


def ensure(ipr: Any, vx: VxlanConf, family: int, me: ClusterNode,
           peers: list[ClusterNode]) -> None:
    """The device (tunnelling over underlay `family`) and every peer's entries."""
    index = _ensure_device(ipr, vx, family, me)
    _ensure_peer_l2(ipr, index, family, peers)
    peer_routes.reconcile(ipr, peer_routes.PROTO_VXLAN, wanted_routes(peers, index),
                          scope_oif=index)


def problems(ipr: Any, vx: VxlanConf, family: int, me: ClusterNode,
             peers: list[ClusterNode]) -> list[str]:
    name = vx.device_name
    link = _find_device(ipr, name)
    if link is None:
        return [f"vxlan device {name} is missing"]
    local = _underlay_ip(me, family)
    kind, settings = _link_settings(link)
    found = _settings_problems(vx, local, kind, settings)
    if found:
        return found
    index = int(link["index"])
    if not link["flags"] & 1:
        found.append(f"vxlan device {name} is down")
    if link.get_attr("IFLA_ADDRESS") != vtep_mac(local):
        found.append(f"{name} has MAC {link.get_attr('IFLA_ADDRESS')}, "
                     f"want {vtep_mac(local)} (peers address it by that MAC)")
    present = set(localaddr.addresses_on(ipr, index, socket.AF_UNSPEC))
    for address, prefixlen in _vteps(me).items():
        if f"{address}/{prefixlen}" not in present:
            found.append(f"{name} lacks its VTEP address {address}/{prefixlen}")
    neighbours, fdb = _permanent_neighbours(ipr, index), _fdb_entries(ipr, index)
    for peer in peers:
        underlay = str(_underlay_ip(peer, family))
        mac = vtep_mac(_underlay_ip(peer, family))
        if fdb.get(mac) is None:
            found.append(f"FDB entry for {peer.name} missing: want {mac} dst {underlay}")
        elif fdb[mac] != underlay:
            found.append(f"FDB entry for {peer.name} is {mac} dst {fdb[mac]}, "
                         f"want dst {underlay}")
        for subnet in peer.pod_subnets:
            addr = vtep_addr(peer, subnet.version)
            if neighbours.get(addr) != mac:
                found.append(f"neighbour entry for {peer.name} is "
                             f"{neighbours.get(addr) or 'missing'}, want {addr} lladdr {mac}")
    found += peer_routes.problems(ipr, peer_routes.PROTO_VXLAN, wanted_routes(peers, index))
    return found
