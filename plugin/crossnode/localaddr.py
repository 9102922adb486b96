"""Which interface of this network namespace holds an address (IPv4 or IPv6), in one netlink
request.

A node carries one address per pod (the gateway /32 on every host veth), so dumping addresses
grows with the pods: 110 pods cost ~8 ms of pyroute2 decoding per dump. `ip route get fibmatch`
asks the kernel for the FIB entry matching the address instead: for a local address that is
the local-table entry, of type local, on the device that holds it (kernel >= 4.13). Older
kernels refuse the flag; then we fall back to the dump.
"""
from __future__ import annotations

import errno
import ipaddress
import socket
from typing import Any, Optional

from plugin.crossnode.topology import IPAddress

RTM_F_FIB_MATCH = 0x2000
RTN_LOCAL = 2


def interface_holding(ipr: Any, address: IPAddress) -> Optional[int]:
    """ifindex of the interface that has `address`, or None when no interface has it."""
    from pyroute2.netlink.exceptions import NetlinkError  # loaded already with ipr

    try:
        answer = ipr.route("get", dst=str(address), flags=RTM_F_FIB_MATCH)
    except NetlinkError as e:
        if e.code == errno.EINVAL:  # a kernel without fibmatch
            return _dump_for(ipr, address)
        return None  # ENETUNREACH and friends: no route at all, so not local either
    match = answer[0] if answer else None
    if match is None or match["type"] != RTN_LOCAL:
        return None
    oif = match.get_attr("RTA_OIF")
    return int(oif) if oif is not None else _dump_for(ipr, address)


def local_addresses(ipr: Any) -> dict[IPAddress, int]:
    """Every IPv4 and IPv6 address of this namespace and the ifindex holding it (a full
    dump)."""
    found: dict[IPAddress, int] = {}
    for addr in ipr.get_addr():
        # On a point-to-point link IFA_ADDRESS is the peer's; IFA_LOCAL is ours.
        value = addr.get_attr("IFA_LOCAL") or addr.get_attr("IFA_ADDRESS")
        if value and addr["family"] in (socket.AF_INET, socket.AF_INET6):
            found.setdefault(ipaddress.ip_address(value), int(addr["index"]))
    return found


def _dump_for(ipr: Any, address: IPAddress) -> Optional[int]:
    return local_addresses(ipr).get(address)


def addresses_on(ipr: Any, index: int, family: int = socket.AF_INET) -> list[str]:
    """"address/prefixlen" of each address of `family` (AF_UNSPEC: both) on link `index`,
    in the kernel's (canonical) spelling.

    One dump the kernel filters by the link (our sockets are strict_check): a node holds one
    address per pod, and decoding them all in pyroute2 grows with the pods.
    """
    from pyroute2.netlink import NLM_F_DUMP, NLM_F_REQUEST
    from pyroute2.netlink.rtnl import RTM_GETADDR
    from pyroute2.netlink.rtnl.ifaddrmsg import ifaddrmsg

    request = ifaddrmsg()
    request["family"] = family
    request["index"] = index
    found = ipr.nlm_request(request, msg_type=RTM_GETADDR,
                            msg_flags=NLM_F_REQUEST | NLM_F_DUMP)
    return [f"{a.get_attr('IFA_ADDRESS')}/{a['prefixlen']}" for a in found
            if a["index"] == index]
