"""How a lab's libvirt resources are named and addressed: pure functions of the lab name.

Names make resources easy to read in `virsh list`; finding them relies on the metadata
(see xml.py), except for storage, which libvirt gives no metadata: the pool carries the lab.
"""
from __future__ import annotations

import hashlib
import re
from ipaddress import IPv4Address, IPv4Network

from lab.api import LabError

_LAB_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,39}$")
_NODE_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,31}$")
PREFIX = "cnilab-"


def check_lab_name(lab: str) -> str:
    if not _LAB_NAME.fullmatch(lab):
        raise LabError(f"lab name {lab!r} cannot name libvirt resources",
                       hint="use lowercase letters, digits and '-', at most 40 characters")
    return lab


def check_node_name(node: str) -> str:
    if not _NODE_NAME.fullmatch(node):
        raise LabError(f"node name {node!r} cannot be a VM hostname",
                       hint="use lowercase letters, digits and '-', at most 32 characters")
    return node


def domain_name(lab: str, node: str) -> str:
    return f"{PREFIX}{lab}-{node}"


def network_name(lab: str) -> str:
    return f"{PREFIX}{lab}"


def pool_name(lab: str) -> str:
    return f"{PREFIX}{lab}"


def _digest(*parts: str) -> bytes:
    return hashlib.sha256("\0".join(parts).encode()).digest()


def bridge_name(lab: str) -> str:
    """Linux caps interface names at 15 characters: a hash keeps long lab names unique."""
    return "cnl-" + _digest("bridge", lab).hex()[:10]


def mac_address(lab: str, node: str) -> str:
    """Stable per node, so the DHCP reservation survives a re-provision. 52:54:00 is qemu's."""
    tail = _digest("mac", lab, node)[:3]
    return "52:54:00:" + ":".join(f"{b:02x}" for b in tail)


def host_address(subnet: IPv4Network) -> IPv4Address:
    return next(subnet.hosts())


def dhcp_range(subnet: IPv4Network) -> tuple[IPv4Address, IPv4Address]:
    """The upper half: never overlaps the reservations, which count up from .11."""
    hosts = list(subnet.hosts())
    return hosts[len(hosts) // 2], hosts[-1]
