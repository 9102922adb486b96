"""Netlink work, ptp-style: a veth pair, the pod's addresses and routes, the host side.

Pod side: the IP with its prefix but no automatic subnet route, a /32 link route to the
gateway, then the subnet and every result route via the gateway. Host side: the gateway as
/32 on the host veth and a /32 route to each pod IP through it. The host veth is named from a
hash of (network, containerID, ifname) and carries "cnilab/<network>/<containerID>/<ifname>"
as its alias, so DEL finds it without the pod's namespace and GC finds every attachment.

pyroute2 is imported inside the functions: VERSION and config errors never pay for it. A
namespace is entered with a netlink socket made inside it (the calling thread setns()es in
and straight back): nothing else runs in the pod's namespace, and a missing namespace is
never created.
"""
from __future__ import annotations

import errno
import hashlib
import ipaddress
import os
import socket
from dataclasses import dataclass
from typing import Any, Optional

from plugin.errors import INVALID_ENV, NETLINK_FAILURE, CniError

ALIAS_PREFIX = "cnilab/"
HOST_VETH_PREFIX = "cnl"
IFA_F_NOPREFIXROUTE = 0x200
RT_SCOPE_LINK = 253
MAIN_TABLE = 254
CLONE_NEWNET = 0x40000000
IFF_UP = 1


class NamespaceGone(Exception):
    """CNI_NETNS names no namespace (any more)."""


def host_veth_name(network: str, container_id: str, ifname: str) -> str:
    digest = hashlib.sha256(f"{network}\0{container_id}\0{ifname}".encode()).hexdigest()
    return f"{HOST_VETH_PREFIX}{digest[:12]}"  # 15 characters: the kernel's limit


def attachment_alias(network: str, container_id: str, ifname: str) -> str:
    return f"{ALIAS_PREFIX}{network}/{container_id}/{ifname}"


def parse_alias(alias: Optional[str]) -> Optional[tuple[str, str, str]]:
    """(network, containerID, ifname) from a host veth alias; None if not ours."""
    if not alias or not alias.startswith(ALIAS_PREFIX):
        return None
    parts = alias[len(ALIAS_PREFIX):].split("/")
    return (parts[0], parts[1], parts[2]) if len(parts) == 3 and all(parts) else None


_libc_setns: Any = None


def _setns(fd: int) -> None:
    if hasattr(os, "setns"):  # python 3.12+
        os.setns(fd, CLONE_NEWNET)
        return
    global _libc_setns
    import ctypes  # 3.9-3.11: libc's setns (looked up once: CDLL() costs per call)

    if _libc_setns is None:
        _libc_setns = ctypes.CDLL(None, use_errno=True).setns
    if _libc_setns(fd, CLONE_NEWNET) != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))


def _netlink_fd_in(path: str) -> int:
    """A NETLINK_ROUTE socket created inside the namespace at `path` (the fd of it).

    The calling thread enters the namespace, makes the socket (a socket stays in the
    namespace it was made in) and goes back at once: setns moves only the calling thread,
    so other threads never see the pod's namespace, and this one leaves it before any other
    code runs. (A helper thread did the same at ~0.5-2 ms per call.)
    """
    try:
        ns_fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as e:
        raise _enter_error(path, e) from None
    try:
        home = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        try:
            try:
                _setns(ns_fd)
            except OSError as e:
                raise _enter_error(path, e) from None
            try:
                return socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, 0).detach()
            finally:
                _return_home(home)
        finally:
            os.close(home)
    finally:
        os.close(ns_fd)


def _return_home(home: int) -> None:
    try:
        _setns(home)
    except OSError as e:  # cannot happen for a namespace we hold open, as root
        raise SystemExit(f"cnilab: cannot return to the node's network namespace: {e}") \
            from None


def _enter_error(path: str, error: OSError) -> Exception:
    if error.errno in (errno.ENOENT, errno.ENOTDIR):
        return NamespaceGone(path)
    if error.errno == errno.EINVAL:
        return CniError(INVALID_ENV, f"CNI_NETNS {path} is not a network namespace")
    return CniError(INVALID_ENV, f"CNI_NETNS {path}: cannot enter: {error.strerror}")


def open_netns(path: str) -> Any:
    """An IPRoute bound to the namespace at `path`; NamespaceGone if there is none."""
    from pyroute2.iproute.linux import IPRoute

    return IPRoute(fileno=_netlink_fd_in(path), strict_check=True)


def open_node() -> Any:
    """An IPRoute in the namespace this call runs in: the node's.

    strict_check: the kernel then filters dumps by what the request names (a route dump by
    the host veth's index), instead of sending one route per pod for pyroute2 to decode.
    """
    from pyroute2.iproute.linux import IPRoute

    return IPRoute(strict_check=True)


def netlink_error(what: str, e: Exception) -> CniError:
    code = getattr(e, "code", None)
    reason = os.strerror(code) if isinstance(code, int) and code > 0 else str(e)
    return CniError(NETLINK_FAILURE, f"{what}: {reason}", str(e))


def _described(link: Any) -> dict[str, Any]:
    """index, name, mac, mtu, alias, up; and peer: a veth's peer's index (in its namespace)."""
    return {"index": int(link["index"]), "name": link.get_attr("IFLA_IFNAME"),
            "mac": link.get_attr("IFLA_ADDRESS"), "mtu": link.get_attr("IFLA_MTU"),
            "alias": link.get_attr("IFLA_IFALIAS"), "up": bool(link["flags"] & IFF_UP),
            "peer": link.get_attr("IFLA_LINK")}


def random_mac() -> str:
    """A random locally administered unicast MAC: what the kernel gives a veth by default.

    Set explicitly, so it is known without asking the kernel again, and marked as set rather
    than random, which keeps udev's MACAddressPolicy from replacing it behind our back.
    """
    octets = bytearray(os.urandom(6))
    octets[0] = (octets[0] & 0xFE) | 0x02
    return ":".join(f"{b:02x}" for b in octets)


def link_by_name(ipr: Any, name: str) -> Optional[dict[str, Any]]:
    """The link called `name` (index, mac, mtu, alias, up), or None.

    One RTM_GETLINK for that name: pyroute2's link_lookup dumps (and decodes) every link,
    which on a node means one per pod.
    """
    from pyroute2.netlink import NLM_F_REQUEST
    from pyroute2.netlink.exceptions import NetlinkError
    from pyroute2.netlink.rtnl import RTM_GETLINK
    from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg

    request = ifinfmsg()
    request["attrs"] = [("IFLA_IFNAME", name)]
    try:
        return _described(ipr.nlm_request(request, msg_type=RTM_GETLINK,
                                          msg_flags=NLM_F_REQUEST)[0])
    except NetlinkError as e:
        if e.code == errno.ENODEV:
            return None
        raise


def link_index(ipr: Any, name: str) -> Optional[int]:
    found = link_by_name(ipr, name)
    return None if found is None else int(found["index"])


def link_info(ipr: Any, index: int) -> dict[str, Any]:
    return _described(ipr.get_links(index)[0])


@dataclass(frozen=True)
class PodAddress:
    address: ipaddress.IPv4Interface
    gateway: ipaddress.IPv4Address


@dataclass(frozen=True)
class PodRoute:
    dst: ipaddress.IPv4Network
    gateway: ipaddress.IPv4Address


# Requests are built as pyroute2 messages and sent with nlm_request(_batch) rather than
# through IPRoute.link()/addr()/route(): their request filters cost ~0.3 ms of Python per
# request, and a batch is one sendmsg for all of a side's addresses and routes. The fields
# are the ones IPRoute would send (captured from it): kernel defaults for table and scope.
_NEW = 0x605  # NLM_F_REQUEST | NLM_F_ACK | NLM_F_EXCL | NLM_F_CREATE
_REPLACE = 0x505  # NLM_F_REQUEST | NLM_F_ACK | NLM_F_REPLACE | NLM_F_CREATE
_SET = 0x5  # NLM_F_REQUEST | NLM_F_ACK
RTPROT_STATIC = 4
RTN_UNICAST = 1


def _message(kind: str, msg_type: int, flags: int, fields: dict[str, int],
             attrs: list[tuple[str, Any]]) -> Any:
    from pyroute2.netlink.rtnl.ifaddrmsg import ifaddrmsg
    from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg
    from pyroute2.netlink.rtnl.rtmsg import rtmsg

    msg = {"link": ifinfmsg, "addr": ifaddrmsg, "route": rtmsg}[kind]()
    for key, value in fields.items():
        msg[key] = value
    msg["attrs"] = attrs
    msg["header"]["type"] = msg_type
    msg["header"]["flags"] = flags
    return msg


def _send(ipr: Any, messages: list[Any]) -> None:
    """Sends `messages` in one datagram; raises NetlinkError for the first one refused."""
    if messages:
        ipr.nlm_request_batch(messages)


def _address(index: int, ip: str, prefixlen: int, flags: int = 0) -> Any:
    from pyroute2.netlink.rtnl import RTM_NEWADDR

    attrs: list[tuple[str, Any]] = [("IFA_LOCAL", ip), ("IFA_ADDRESS", ip)]
    if flags:
        attrs.append(("IFA_FLAGS", flags))
    return _message("addr", RTM_NEWADDR, _NEW, {"family": socket.AF_INET,
                                                "prefixlen": prefixlen, "index": index},
                    attrs)


def _route(index: int, dst: ipaddress.IPv4Network, gateway: Optional[str] = None,
           flags: int = _NEW) -> Any:
    from pyroute2.netlink.rtnl import RTM_NEWROUTE

    attrs: list[tuple[str, Any]] = []
    if dst.prefixlen:
        attrs.append(("RTA_DST", str(dst.network_address)))
    if gateway is not None:
        attrs.append(("RTA_GATEWAY", gateway))
    attrs.append(("RTA_OIF", index))
    scope = 0 if gateway is not None else RT_SCOPE_LINK
    return _message("route", RTM_NEWROUTE, flags,
                    {"family": socket.AF_INET, "dst_len": dst.prefixlen, "proto": RTPROT_STATIC,
                     "scope": scope, "type": RTN_UNICAST}, attrs)


def create_veth(pod: Any, ifname: str, host_name: str, mtu: int, pod_mac: str,
                host_mac: str) -> None:
    """The pair, made from inside the pod with its peer placed straight into the node.

    The pod end is created up (IFF_UP in the request), and both ends get the MACs given:
    fewer netlink round trips after.
    """
    from pyroute2.netlink.rtnl import RTM_NEWLINK

    node_ns = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        peer = {"attrs": [("IFLA_IFNAME", host_name), ("IFLA_MTU", mtu),
                          ("IFLA_ADDRESS", host_mac), ("IFLA_NET_NS_FD", node_ns)]}
        info = {"attrs": [("IFLA_INFO_KIND", "veth"),
                          ("IFLA_INFO_DATA", {"attrs": [("VETH_INFO_PEER", peer)]})]}
        _send(pod, [_message("link", RTM_NEWLINK, _NEW, {"flags": IFF_UP, "change": IFF_UP},
                             [("IFLA_IFNAME", ifname), ("IFLA_MTU", mtu),
                              ("IFLA_ADDRESS", pod_mac), ("IFLA_LINKINFO", info)])])
    finally:
        os.close(node_ns)


def configure_pod(pod: Any, index: int, addresses: list[PodAddress],
                  routes: list[PodRoute]) -> None:
    """Addresses and routes on the pod interface `index` (created up by create_veth)."""
    messages = [_address(index, str(a.address.ip), a.address.network.prefixlen,
                         IFA_F_NOPREFIXROUTE) for a in addresses]
    wanted = {str(r.dst): r for r in routes}
    for a in addresses:
        messages.append(_route(index, ipaddress.IPv4Network(f"{a.gateway}/32")))
        wanted.setdefault(str(a.address.network), PodRoute(a.address.network, a.gateway))
    messages += [_route(index, r.dst, str(r.gateway)) for r in wanted.values()]
    _send(pod, messages)


def claim_host(node: Any, index: int, name: str, alias: str) -> None:
    """The host veth gets the alias that makes it ours (DEL and GC find it by that) and up.

    Its name goes in the request too: a no-op on the right link, and a refusal (EEXIST:
    that name is taken) if `index` were any other.
    """
    from pyroute2.netlink.rtnl import RTM_NEWLINK

    _send(node, [_message("link", RTM_NEWLINK, _SET,
                          {"index": index, "flags": IFF_UP, "change": IFF_UP},
                          [("IFLA_IFNAME", name), ("IFLA_IFALIAS", alias)])])


def configure_host(node: Any, index: int, addresses: list[PodAddress]) -> None:
    """The gateway /32 on the host veth `index` and the /32 route to each pod IP."""
    messages = [_address(index, gw, 32) for gw in sorted({str(a.gateway) for a in addresses})]
    # replace: a route a leaked attachment left to the same IP must not block this pod
    messages += [_route(index, ipaddress.IPv4Network(f"{a.address.ip}/32"), flags=_REPLACE)
                 for a in addresses]
    _send(node, messages)


def delete_link(ipr: Any, name: str) -> bool:
    """Deletes `name` if present (its routes and veth peer go with it); True if it was there."""
    index = link_index(ipr, name)
    if index is None:
        return False
    return delete_index(ipr, index)


def delete_index(ipr: Any, index: int) -> bool:
    """Deletes link `index` (its routes and veth peer go with it); False if already gone."""
    from pyroute2.netlink.exceptions import NetlinkError

    try:
        ipr.link("del", index=index)
    except NetlinkError as e:
        if e.code == errno.ENODEV:  # gone meanwhile: the pod namespace died, say
            return False
        raise
    return True


def enable_ipv4_forwarding() -> None:
    path = "/proc/sys/net/ipv4/ip_forward"  # per network namespace: the node's
    with open(path, "r+", encoding="ascii") as f:
        if f.read().strip() != "1":
            f.seek(0)
            f.write("1")


def _dump(ipr: Any, kind: str, msg_type: int, fields: dict[str, int],
          attrs: list[tuple[str, Any]]) -> Any:
    """A dump the kernel filters by what the request names (our sockets are strict_check)."""
    from pyroute2.netlink import NLM_F_DUMP, NLM_F_REQUEST

    request = _message(kind, msg_type, 0, fields, attrs)
    return ipr.nlm_request(request, msg_type=msg_type, msg_flags=NLM_F_REQUEST | NLM_F_DUMP)


def addresses_on(ipr: Any, index: int) -> list[str]:
    from pyroute2.netlink.rtnl import RTM_GETADDR

    found = _dump(ipr, "addr", RTM_GETADDR, {"family": socket.AF_INET, "index": index}, [])
    return [f"{a.get_attr('IFA_ADDRESS')}/{a['prefixlen']}" for a in found
            if a["index"] == index]


def routes_via(ipr: Any, index: Optional[int]) -> list[tuple[str, Optional[str]]]:
    """(dst/len, gateway) of the main-table IPv4 routes through link `index` (None: any)."""
    from pyroute2.netlink.rtnl import RTM_GETROUTE

    attrs: list[tuple[str, Any]] = [("RTA_TABLE", MAIN_TABLE)]
    if index is not None:
        attrs.append(("RTA_OIF", index))
    found = []
    for r in _dump(ipr, "route", RTM_GETROUTE, {"family": socket.AF_INET,
                                                "table": MAIN_TABLE}, attrs):
        if r.get_attr("RTA_TABLE") != MAIN_TABLE or \
                (index is not None and r.get_attr("RTA_OIF") != index):
            continue  # the kernel filtered already, unless the socket is not strict_check
        dst = r.get_attr("RTA_DST") or "0.0.0.0"
        found.append((f"{dst}/{r['dst_len']}", r.get_attr("RTA_GATEWAY")))
    return found


def attachments_on_node(node: Any, network: str) -> list[tuple[str, str, str]]:
    """(host veth name, containerID, ifname) of every attachment of `network` on this node."""
    found = []
    for link in node.get_links():
        parsed = parse_alias(link.get_attr("IFLA_IFALIAS"))
        if parsed and parsed[0] == network:
            found.append((str(link.get_attr("IFLA_IFNAME")), parsed[1], parsed[2]))
    return found
