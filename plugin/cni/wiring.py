"""Netlink work, ptp-style: a veth pair, the pod's addresses and routes, the host side.

Pod side, for each address (IPv4 or IPv6): the IP with its prefix but no automatic subnet
route, a host route (/32 link scope, /128) to its gateway, then the subnet and every result
route of its family via that gateway. Host side: each gateway as /32 or /128 on the host
veth and a /32 or /128 route to each pod IP through it. IPv6 addresses the plugin owns skip
duplicate address detection (IFA_F_NODAD): each is unique on its veth by construction, and
DAD would keep it unusable ("tentative") for 1-2 s after ADD. The host veth is named from a
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
import itertools
import os
import socket
import struct
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Optional, Union

from plugin.cni.errors import INVALID_ENV, NETLINK_FAILURE, CniError
from plugin.crossnode import quiet_platform

IPAddress = Union[ipaddress.IPv4Address, ipaddress.IPv6Address]
IPInterface = Union[ipaddress.IPv4Interface, ipaddress.IPv6Interface]
IPNetwork = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]

ALIAS_PREFIX = "cnilab/"
HOST_VETH_PREFIX = "cnl"
IFA_F_NODAD = 0x02
IFA_F_NOPREFIXROUTE = 0x200
RT_SCOPE_LINK = 253
MAIN_TABLE = 254
CLONE_NEWNET = 0x40000000
IFF_UP = 1


class NamespaceGone(Exception):
    """CNI_NETNS names no namespace (any more)."""


class NodeNamespace(Exception):
    """CNI_NETNS is the namespace the call runs in (the node's), or the host's (PID 1's)."""


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
        # Non-blocking: a FIFO (or a tty) at CNI_NETNS must not hold the call open.
        ns_fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK | os.O_NOCTTY)
    except OSError as e:
        raise _enter_error(path, e) from None
    try:
        home = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        try:
            if _same_namespace(ns_fd, home):
                raise NodeNamespace(path)
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


def _same_namespace(ns_fd: int, home: int) -> bool:
    """Whether `ns_fd` is the node's namespace (`home`) or PID 1's: a pod must be neither."""
    return _node_or_init(os.fstat(ns_fd), os.fstat(home))


def _node_or_init(pod: os.stat_result, node: os.stat_result) -> bool:
    if os.path.samestat(pod, node):
        return True
    try:
        return os.path.samestat(pod, os.stat("/proc/1/ns/net"))
    except OSError:  # PID 1 may be shielded from stat (not dumpable): its link still names it
        pass
    try:
        return os.readlink("/proc/1/ns/net") == f"net:[{pod.st_ino}]"
    except OSError:  # not ours to see at all (not root): the node's own is still checked
        return False


def refuse_node_namespace(path: str) -> None:
    """NodeNamespace when `path` is this node's namespace: checked before anything starts
    (open_netns checks again, on the namespace it really enters)."""
    try:
        pod = os.stat(path)
    except OSError:
        return  # open_netns says what is wrong with it
    if _node_or_init(pod, os.stat("/proc/thread-self/ns/net")):
        raise NodeNamespace(path)


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
    IPRoute = quiet_platform.iproute_class()
    return IPRoute(fileno=_netlink_fd_in(path), strict_check=True)


def open_node() -> Any:
    """An IPRoute in the namespace this call runs in: the node's.

    strict_check: the kernel then filters dumps by what the request names (a route dump by
    the host veth's index), instead of sending one route per pod for pyroute2 to decode.
    """
    return quiet_platform.iproute_class()(strict_check=True)


def netlink_error(what: str, e: Exception) -> CniError:
    code = getattr(e, "code", None)
    reason = os.strerror(code) if isinstance(code, int) and code > 0 else str(e)
    return CniError(NETLINK_FAILURE, f"{what}: {reason}", str(e))


def _described(link: Any) -> dict[str, Any]:
    """index, name, mac, mtu, alias, up, kind; peer: a veth's peer's index (in its
    namespace); ipv6_disabled: its disable_ipv6 (None when the kernel has no IPv6)."""
    info = link.get_attr("IFLA_LINKINFO")
    return {"index": int(link["index"]), "name": link.get_attr("IFLA_IFNAME"),
            "mac": link.get_attr("IFLA_ADDRESS"), "mtu": link.get_attr("IFLA_MTU"),
            "alias": link.get_attr("IFLA_IFALIAS"), "up": bool(link["flags"] & IFF_UP),
            "peer": link.get_attr("IFLA_LINK"),
            "kind": info.get_attr("IFLA_INFO_KIND") if info is not None else None,
            "peer_elsewhere": link.get_attr("IFLA_LINK_NETNSID") is not None,
            "ipv6_disabled": _ipv6_disabled(link)}


def _ipv6_disabled(link: Any) -> Optional[bool]:
    spec = link.get_attr("IFLA_AF_SPEC")
    inet6 = spec.get_attr("AF_INET6") if spec is not None else None
    conf = inet6.get_attr("IFLA_INET6_CONF") if inet6 is not None else None
    return None if conf is None else bool(conf["disable_ipv6"])


def half_made(link: dict[str, Any]) -> bool:
    """A host veth an ADD created but was stopped (killed) before it set the alias: the
    kernel takes no alias at creation, only the name, which is ours (a hash of network,
    containerID and ifname), and its peer is in another namespace (the pod's)."""
    return not link["alias"] and link["kind"] == "veth" and link["peer_elsewhere"]


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
class PodGateway:
    """A gateway of the pod, and the subnet of the pod's address it serves."""

    subnet: IPNetwork
    address: IPAddress


@dataclass(frozen=True)
class PodAddress:
    address: IPInterface
    gateway: IPAddress

    @property
    def routed_by(self) -> PodGateway:
        return PodGateway(self.address.network, self.gateway)


@dataclass(frozen=True)
class PodRoute:
    dst: IPNetwork
    gateway: IPAddress


def host_prefix(ip: IPAddress) -> IPNetwork:
    """`ip` as a /32 or /128 network."""
    return ipaddress.ip_network(f"{ip}/{ip.max_prefixlen}")


def _af(version: int) -> int:
    return socket.AF_INET if version == 4 else socket.AF_INET6


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


_HEADER = struct.Struct("=LHHLL")  # nlmsghdr: length, type, flags, sequence, port
_ERROR_CODE = struct.Struct("=i")
NLMSG_ERROR = 2
_sequence = itertools.count(0x40000000)  # clear of the small numbers pyroute2 hands out


def _send(ipr: Any, messages: list[Any]) -> None:
    """Sends `messages` in one datagram; raises NetlinkError for the first one refused.

    pyroute2 builds and encodes the messages; the acks (one small NLMSG_ERROR each, 0 for
    success) are read here. pyroute2's nlm_request_batch would decode each into a message
    object behind per-sequence locks, ~40 us a message: an 8-message batch took 0.83 ms that
    way and 0.48 ms this way, of which 0.09 ms is the kernel's work (measured).
    """
    if not messages:
        return
    from pyroute2.netlink.exceptions import NetlinkError

    sequences = [next(_sequence) & 0x7FFFFFFF for _ in messages]
    data = bytearray()
    for seq, msg in zip(sequences, messages):
        msg["header"]["sequence_number"] = seq
        msg["header"]["pid"] = 0
        msg.reset()
        msg.encode()
        data += msg.data
    fd = ipr.fileno()
    os.write(fd, data)  # a netlink datagram is taken whole or not at all
    pending = set(sequences)
    refused: Optional[int] = None
    while pending:  # the kernel answers every message it was sent (NLM_F_ACK)
        answer = os.read(fd, 65536)
        offset = 0
        while offset + _HEADER.size <= len(answer):
            length, kind, _flags, seq, _port = _HEADER.unpack_from(answer, offset)
            if kind == NLMSG_ERROR and seq in pending:
                pending.discard(seq)
                code = -_ERROR_CODE.unpack_from(answer, offset + _HEADER.size)[0]
                if code and refused is None:
                    refused = code
            if length < _HEADER.size:
                break
            offset += (length + 3) & ~3
    if refused is not None:
        raise NetlinkError(refused)


def _address(index: int, ip: IPAddress, prefixlen: int, flags: int = 0,
             withdraw: bool = False) -> Any:
    """An address we own: IPv6 ones without DAD (see the module's docstring)."""
    from pyroute2.netlink.rtnl import RTM_DELADDR, RTM_NEWADDR

    if ip.version == 4:
        attrs: list[tuple[str, Any]] = [("IFA_LOCAL", str(ip)), ("IFA_ADDRESS", str(ip))]
    else:  # IPv6 takes a differing IFA_LOCAL for a peer address: only IFA_ADDRESS
        attrs = [("IFA_ADDRESS", str(ip))]
        flags |= IFA_F_NODAD
    if flags:
        attrs.append(("IFA_FLAGS", flags))
    return _message("addr", RTM_DELADDR if withdraw else RTM_NEWADDR,
                    _SET if withdraw else _NEW,
                    {"family": _af(ip.version), "prefixlen": prefixlen, "index": index}, attrs)


def _route(index: int, dst: IPNetwork, gateway: Optional[IPAddress] = None,
           flags: int = _NEW, withdraw: bool = False) -> Any:
    from pyroute2.netlink.rtnl import RTM_DELROUTE, RTM_NEWROUTE

    attrs: list[tuple[str, Any]] = []
    if dst.prefixlen:
        attrs.append(("RTA_DST", str(dst.network_address)))
    if gateway is not None:
        attrs.append(("RTA_GATEWAY", str(gateway)))
    attrs.append(("RTA_OIF", index))
    # IPv6 routes have no scope (the kernel reports universe); an IPv4 route without a
    # gateway is a link route
    scope = 0 if gateway is not None or dst.version == 6 else RT_SCOPE_LINK
    return _message("route", RTM_DELROUTE if withdraw else RTM_NEWROUTE,
                    _SET if withdraw else flags,
                    {"family": _af(dst.version), "dst_len": dst.prefixlen,
                     "proto": RTPROT_STATIC, "scope": scope, "type": RTN_UNICAST}, attrs)


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


def configure_pod_routes(pod: Any, index: int, gateways: list[PodGateway],
                         routes: list[PodRoute], withdraw: bool = False) -> None:
    """The pod's routes on interface `index` (created up by create_veth): a host route to
    each gateway, each gateway's subnet and every result route via it. They need no address
    on the interface: they can go in before IPAM has answered (and out again: `withdraw`)."""
    messages = [_route(index, host_prefix(g), withdraw=withdraw)
                for g in dict.fromkeys(g.address for g in gateways)]
    wanted = {str(r.dst): r for r in routes}
    for g in gateways:
        wanted.setdefault(str(g.subnet), PodRoute(g.subnet, g.address))
    messages += [_route(index, r.dst, r.gateway, withdraw=withdraw) for r in wanted.values()]
    _send(pod, messages)


def configure_pod_addresses(pod: Any, index: int, addresses: list[PodAddress]) -> None:
    """Each address with its prefix but no automatic subnet route (the routes say where)."""
    _send(pod, [_address(index, a.address.ip, a.address.network.prefixlen,
                         IFA_F_NOPREFIXROUTE) for a in addresses])


def claim_host(node: Any, index: int, name: str, alias: str) -> None:
    """The host veth gets the alias that makes it ours (DEL and GC find it by that) and up.

    Its name goes in the request too: a no-op on the right link, and a refusal (EEXIST:
    that name is taken) if `index` were any other.
    """
    from pyroute2.netlink.rtnl import RTM_NEWLINK

    _send(node, [_message("link", RTM_NEWLINK, _SET,
                          {"index": index, "flags": IFF_UP, "change": IFF_UP},
                          [("IFLA_IFNAME", name), ("IFLA_IFALIAS", alias)])])


def configure_host_gateways(node: Any, index: int, gateways: list[PodGateway],
                            withdraw: bool = False) -> None:
    """Each gateway as /32 or /128 on the host veth `index`. (An IPv6 /128 would add a
    route of its own to the gateway through this veth, one per pod, that nothing needs:
    IFA_F_NOPREFIXROUTE, as for the pod's.)"""
    _send(node, [_address(index, g, g.max_prefixlen,
                          0 if g.version == 4 else IFA_F_NOPREFIXROUTE, withdraw=withdraw)
                 for g in dict.fromkeys(g.address for g in gateways)])


def configure_host_routes(node: Any, index: int, addresses: list[PodAddress]) -> None:
    """The /32 or /128 route to each pod IP through the host veth `index`."""
    # replace: a route a leaked attachment left to the same IP must not block this pod
    _send(node, [_route(index, host_prefix(a.address.ip), flags=_REPLACE) for a in addresses])


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


_finishing: list[threading.Thread] = []
GONE_PATIENCE = 5.0


def delete_until_unlisted(index: int, name: str) -> None:
    """Deletes link `index` (called `name`) and returns once the kernel has unlisted it.

    Unlisted, the link is gone for everyone (its name and index are free, its addresses and
    routes flushed) ~2 ms into the deletion; the kernel then spends ~12 ms more freeing it (an
    RCU barrier, reference waits) before the request returns. That part finishes in a thread
    of its own, outside the runtime's wait: finish() waits for it (a worker before its next
    call; a process at exit).
    """
    errors: list[Exception] = []

    def delete() -> None:
        try:
            ipr = open_node()  # this thread's own socket, in the namespace it started in
            try:
                delete_index(ipr, index)
            finally:
                ipr.close()
        except Exception as e:  # raised in the caller's thread below
            errors.append(e)

    thread = threading.Thread(target=delete, name="cnilab-delete")
    thread.start()
    deadline = time.monotonic() + GONE_PATIENCE
    while thread.is_alive() and time.monotonic() < deadline and _listed(name):
        time.sleep(0.0002)
    if thread.is_alive() and not errors and not _listed(name):
        _finishing.append(thread)
        return
    thread.join()
    if errors:
        raise errors[0]


def _listed(name: str) -> bool:
    try:
        socket.if_nametoindex(name)  # an ioctl in this thread's namespace: no netlink dump
    except OSError:
        return False
    return True


def finish() -> None:
    """Waits for deletions still being completed by the kernel (see delete_until_unlisted)."""
    while _finishing:
        _finishing.pop().join()


def _sysctl(path: str, value: str) -> None:
    """Sets /proc/sys/<path> (of this thread's network namespace) unless it holds `value`."""
    with open(f"/proc/sys/{path}", "r+", encoding="ascii") as f:
        if f.read().strip() != value:
            f.seek(0)
            f.write(value)


NO_IPV6 = "this node's kernel has no IPv6 (booted with ipv6.disable=1?)"


def has_ipv6() -> bool:
    return os.path.isdir("/proc/sys/net/ipv6")


def enable_forwarding(families: Iterable[int]) -> None:
    """Forwarding in the node's namespace for each family its pods use, as ptp does. IPv6
    forwarding (conf/all) also makes the node ignore router advertisements on interfaces
    with accept_ra=1: a node that takes its own IPv6 route from them wants accept_ra=2."""
    for family in sorted(set(families)):
        if family == 4:
            _sysctl("net/ipv4/ip_forward", "1")
            continue
        try:
            _sysctl("net/ipv6/conf/all/forwarding", "1")
        except FileNotFoundError:
            raise CniError(NETLINK_FAILURE, f"enabling IPv6 forwarding: {NO_IPV6}") from None


def settle_host_veth(name: str) -> None:
    """The host veth, before it goes up, whatever the families: it takes no router
    advertisements from its pod (accept_ra=0, as ptp: a pod must not give the node addresses
    or routes), and its link-local address skips DAD (accept_dad=0). The node solicits a pod's
    neighbour entry for traffic it forwards from that link-local address, and the kernel sends
    no solicitation from a tentative one: with DAD, pod-to-pod IPv6 would wait 1-2 s."""
    try:
        _sysctl(f"net/ipv6/conf/{name}/accept_ra", "0")
        _sysctl(f"net/ipv6/conf/{name}/accept_dad", "0")
    except FileNotFoundError:  # a kernel without IPv6: nothing to settle
        pass


def allow_ipv6_on_host_veth(name: str) -> None:
    """IPv6 on the host veth of an IPv6 attachment, also where the node's default is
    disable_ipv6=1."""
    try:
        _sysctl(f"net/ipv6/conf/{name}/disable_ipv6", "0")
    except FileNotFoundError:
        raise CniError(NETLINK_FAILURE, f"configuring host veth {name}: {NO_IPV6}") from None


def enable_ipv6_in(path: str, ifname: str) -> None:
    """disable_ipv6=0 for `ifname` and lo in the pod's namespace at `path` (one whose
    default has IPv6 off), as ptp does: entered by this thread and left at once."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK | os.O_NOCTTY)
    try:
        home = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        try:
            _setns(fd)
            try:
                for name in ("lo", ifname):
                    _sysctl(f"net/ipv6/conf/{name}/disable_ipv6", "0")
            finally:
                _return_home(home)
        finally:
            os.close(home)
    finally:
        os.close(fd)


def _dump(ipr: Any, kind: str, msg_type: int, fields: dict[str, int],
          attrs: list[tuple[str, Any]]) -> Any:
    """A dump the kernel filters by what the request names (our sockets are strict_check)."""
    from pyroute2.netlink import NLM_F_DUMP, NLM_F_REQUEST

    request = _message(kind, msg_type, 0, fields, attrs)
    return ipr.nlm_request(request, msg_type=msg_type, msg_flags=NLM_F_REQUEST | NLM_F_DUMP)


def dump_family(families: Iterable[int]) -> int:
    """The address family to dump for `families` (4, 6): one request either way."""
    wanted = set(families)
    return socket.AF_UNSPEC if len(wanted) != 1 else _af(wanted.pop())


def routes_via(ipr: Any, index: Optional[int], family: int = socket.AF_INET,
               ) -> list[tuple[str, Optional[str], int]]:
    """(dst/len, gateway, oif) of the main-table routes of `family` (AF_UNSPEC: IPv4 and
    IPv6) through link `index` (None: any), in canonical spelling."""
    from pyroute2.netlink.rtnl import RTM_GETROUTE

    attrs: list[tuple[str, Any]] = [("RTA_TABLE", MAIN_TABLE)]
    if index is not None:
        attrs.append(("RTA_OIF", index))
    found = []
    for r in _dump(ipr, "route", RTM_GETROUTE, {"family": family, "table": MAIN_TABLE},
                   attrs):
        if r.get_attr("RTA_TABLE") != MAIN_TABLE or \
                (index is not None and r.get_attr("RTA_OIF") != index) or \
                r["family"] not in (socket.AF_INET, socket.AF_INET6):
            continue  # the kernel filtered already, unless the socket is not strict_check
        dst = r.get_attr("RTA_DST") or ("0.0.0.0" if r["family"] == socket.AF_INET else "::")
        gateway = r.get_attr("RTA_GATEWAY")
        found.append((str(ipaddress.ip_network(f"{dst}/{r['dst_len']}")),
                      str(ipaddress.ip_address(gateway)) if gateway else None,
                      int(r.get_attr("RTA_OIF") or 0)))
    return found


def attachments_on_node(node: Any, network: str) -> list[tuple[str, str, str]]:
    """(host veth name, containerID, ifname) of every attachment of `network` on this node."""
    found = []
    for link in node.get_links():
        parsed = parse_alias(link.get_attr("IFLA_IFALIAS"))
        if parsed and parsed[0] == network:
            found.append((str(link.get_attr("IFLA_IFNAME")), parsed[1], parsed[2]))
    return found
