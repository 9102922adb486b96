"""vxlan: our own VXLAN device plus, per peer, a route, a neighbour and an FDB entry.

This is flannel's vxlan backend without flanneld: flannel learns each peer's VTEP MAC from
the Kubernetes API; we have no daemon, so every node derives every VTEP MAC from the node IP
(locally administered, unicast) and sets its own device to that MAC. The VTEP address is the
network address of the node's pod subnet, as /32 on the device (host-local never hands out
the network address, so it cannot collide with a pod or the gateway).

Per peer (what `ip` would show):
    route  <peer subnet> via <peer vtep> dev <vxlan> onlink   proto 232
    neigh  <peer vtep> lladdr <peer vtep MAC> dev <vxlan> PERMANENT
    fdb    <peer vtep MAC> dev <vxlan> dst <peer node IP> self permanent
"""
from __future__ import annotations

import errno
import ipaddress
import socket
from typing import Any, Optional

from plugin import localaddr, peer_routes, wiring
from plugin.errors import CROSS_NODE_FAILURE, CniError
from plugin.netconf import VXLAN_OVERHEAD, ClusterNode, VxlanConf

AF_BRIDGE = 7
NUD_NOARP = 0x40
NUD_PERMANENT = 0x80
NTF_SELF = 0x02
SIOCGIFMTU = 0x8921
# 0x0e: the locally-administered bit set, the multicast bit clear; then "cb" for cnilab.
MAC_PREFIX = (0x0E, 0xCB)


def vtep_mac(node_ip: ipaddress.IPv4Address) -> str:
    return ":".join(f"{b:02x}" for b in bytes(MAC_PREFIX) + node_ip.packed)


def vtep_addr(node: ClusterNode) -> str:
    return str(node.pod_subnet.network_address)


def wanted_routes(peers: list[ClusterNode], ifindex: int) -> list[peer_routes.PeerRoute]:
    return [peer_routes.PeerRoute(dst=str(p.pod_subnet), gateway=vtep_addr(p), oif=ifindex,
                                  onlink=True, node=p.name) for p in peers]


def _fail(what: str, detail: str = "") -> CniError:
    return CniError(CROSS_NODE_FAILURE, f"vxlan: {what}", detail)


# --- the device -------------------------------------------------------------------------------

def _underlay(ipr: Any, node_ip: ipaddress.IPv4Address) -> tuple[int, int]:
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


def _link_settings(link: Any) -> tuple[str, dict[str, Any]]:
    info = link.get_attr("IFLA_LINKINFO")
    if info is None:
        return "", {}
    data = info.get_attr("IFLA_INFO_DATA")
    settings: dict[str, Any] = {}
    if data is not None and not isinstance(data, (str, bytes)):
        for key in ("IFLA_VXLAN_ID", "IFLA_VXLAN_PORT", "IFLA_VXLAN_LOCAL",
                    "IFLA_VXLAN_LEARNING"):
            settings[key] = data.get_attr(key)
    return info.get_attr("IFLA_INFO_KIND") or "", settings


def _settings_problems(vx: VxlanConf, me: ClusterNode, kind: str,
                       settings: dict[str, Any]) -> list[str]:
    name = vx.device_name
    if kind != "vxlan":
        return [f"{name} exists but is a {kind or 'plain'} device, not vxlan"]
    want = {"IFLA_VXLAN_ID": vx.vni, "IFLA_VXLAN_PORT": vx.port,
            "IFLA_VXLAN_LOCAL": str(me.ip), "IFLA_VXLAN_LEARNING": 0}
    labels = {"IFLA_VXLAN_ID": "VNI", "IFLA_VXLAN_PORT": "UDP port",
              "IFLA_VXLAN_LOCAL": "local address", "IFLA_VXLAN_LEARNING": "learning"}
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


def _ensure_device(ipr: Any, vx: VxlanConf, me: ClusterNode) -> int:
    name, mac = vx.device_name, vtep_mac(me.ip)
    underlay_index, underlay_mtu = _underlay(ipr, me.ip)
    mtu = underlay_mtu - VXLAN_OVERHEAD
    link = _find_device(ipr, name)
    if link is not None:
        kind, settings = _link_settings(link)
        if kind != "vxlan":
            raise _fail(f"{name} exists and is a {kind or 'plain'} device, not ours",
                        "pick another vxlan.device in the network config")
        if _settings_problems(vx, me, kind, settings):
            # A changed VNI, port or node IP cannot be set on a live device: start over
            # (its routes, neighbours and FDB entries go with it and are rebuilt below).
            ipr.link("del", index=link["index"])
            link = None
    if link is None:
        from pyroute2.netlink.exceptions import NetlinkError  # loaded already with ipr

        try:
            ipr.link("add", ifname=name, kind="vxlan", vxlan_id=vx.vni, vxlan_port=vx.port,
                     vxlan_local=str(me.ip), vxlan_learning=0, vxlan_link=underlay_index,
                     address=mac, mtu=mtu)
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
    _ensure_vtep_address(ipr, index, vtep_addr(me))
    return index


def _ensure_vtep_address(ipr: Any, index: int, address: str) -> None:
    present = set(wiring.addresses_on(ipr, index))  # filtered by the kernel, not a full dump
    for other in present - {f"{address}/32"}:
        ip, prefixlen = other.split("/")
        ipr.addr("del", index=index, address=ip, prefixlen=int(prefixlen))
    if f"{address}/32" not in present:
        ipr.addr("add", index=index, address=address, prefixlen=32)


# --- peers ------------------------------------------------------------------------------------

def _dump_neighbours(ipr: Any, family: int, index: int) -> Any:
    # ifindex stays in the request (match= carries the client-side filter): on a strict-check
    # socket the kernel then dumps only our device, not every pod veth's FDB/ARP entries.
    return ipr.neigh("dump", family=family, ifindex=index, match={"ifindex": index})


def _permanent_neighbours(ipr: Any, index: int) -> dict[str, str]:
    return {n.get_attr("NDA_DST"): n.get_attr("NDA_LLADDR")
            for n in _dump_neighbours(ipr, socket.AF_INET, index)
            if n["state"] & NUD_PERMANENT}


def _fdb_entries(ipr: Any, index: int) -> dict[str, str]:
    return {e.get_attr("NDA_LLADDR"): e.get_attr("NDA_DST")
            for e in _dump_neighbours(ipr, AF_BRIDGE, index) if e["ifindex"] == index}


def _ensure_peer_l2(ipr: Any, index: int, peers: list[ClusterNode]) -> None:
    neighbours, fdb = _permanent_neighbours(ipr, index), _fdb_entries(ipr, index)
    want_neigh = {vtep_addr(p): vtep_mac(p.ip) for p in peers}
    want_fdb = {vtep_mac(p.ip): str(p.ip) for p in peers}
    # FDB before neighbour before route: the first packet to a new peer finds its way.
    for mac, dst in want_fdb.items():
        if fdb.get(mac) != dst:
            ipr.fdb("replace", ifindex=index, lladdr=mac, dst=dst,
                    state=NUD_PERMANENT | NUD_NOARP, flags=NTF_SELF)
    for mac, dst in fdb.items():
        if mac not in want_fdb and dst:
            ipr.fdb("del", ifindex=index, lladdr=mac, dst=dst)
    for addr, mac in want_neigh.items():
        if neighbours.get(addr) != mac:
            ipr.neigh("replace", ifindex=index, dst=addr, lladdr=mac, state=NUD_PERMANENT)
    for addr in neighbours.keys() - want_neigh.keys():
        ipr.neigh("del", ifindex=index, dst=addr)


def ensure(ipr: Any, vx: VxlanConf, me: ClusterNode, peers: list[ClusterNode]) -> None:
    index = _ensure_device(ipr, vx, me)
    _ensure_peer_l2(ipr, index, peers)
    peer_routes.reconcile(ipr, peer_routes.PROTO_VXLAN, wanted_routes(peers, index),
                          scope_oif=index)


def problems(ipr: Any, vx: VxlanConf, me: ClusterNode, peers: list[ClusterNode]) -> list[str]:
    name = vx.device_name
    link = _find_device(ipr, name)
    if link is None:
        return [f"vxlan device {name} is missing"]
    kind, settings = _link_settings(link)
    found = _settings_problems(vx, me, kind, settings)
    if found:
        return found
    index = int(link["index"])
    if not link["flags"] & 1:
        found.append(f"vxlan device {name} is down")
    if link.get_attr("IFLA_ADDRESS") != vtep_mac(me.ip):
        found.append(f"{name} has MAC {link.get_attr('IFLA_ADDRESS')}, "
                     f"want {vtep_mac(me.ip)} (peers address it by that MAC)")
    neighbours, fdb = _permanent_neighbours(ipr, index), _fdb_entries(ipr, index)
    for peer in peers:
        mac, addr = vtep_mac(peer.ip), vtep_addr(peer)
        if fdb.get(mac) is None:
            found.append(f"FDB entry for {peer.name} missing: want {mac} dst {peer.ip}")
        elif fdb[mac] != str(peer.ip):
            found.append(f"FDB entry for {peer.name} is {mac} dst {fdb[mac]}, "
                         f"want dst {peer.ip}")
        if neighbours.get(addr) != mac:
            found.append(f"neighbour entry for {peer.name} is "
                         f"{neighbours.get(addr) or 'missing'}, want {addr} lladdr {mac}")
    found += peer_routes.problems(ipr, peer_routes.PROTO_VXLAN, wanted_routes(peers, index))
    return found
