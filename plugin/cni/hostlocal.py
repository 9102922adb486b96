"""host-local's lease files, read only as far as GC needs them and only when they are leases.

host-local keeps `<dataDir>/<network>/<ip>` holding `containerID\\r\\nifname` (just the ID
before CNI 1.0), plus `last_reserved_ip.<range>` and a `lock` file. GC deletes and releases
what it finds there as root, so a file counts as a lease only if it looks exactly like one:
the directory has host-local's `lock`, the name is an IP address, it is a small regular file
(never followed through a symlink, never a FIFO to block on), and it holds a valid container
ID and interface name. Anything else (notes.txt, a README, a wrong dataDir) is left alone.
"""
from __future__ import annotations

import ipaddress
import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Optional

from plugin.cni.names import ID_RE, ifname_problem

DEFAULT_DATA_DIR = "/var/lib/cni/networks"
MAX_LEASE_BYTES = 512  # an ID (<= 255) and an interface name (<= 15), with room to spare


@dataclass(frozen=True)
class Lease:
    path: str
    ip: str
    container_id: str
    ifname: str  # "" in leases written before CNI 1.0


def network_dir(ipam_conf: Mapping[str, Any], network: str) -> str:
    return os.path.join(str(ipam_conf.get("dataDir") or DEFAULT_DATA_DIR), network)


def leases(ipam_conf: Mapping[str, Any], network: str) -> list[Lease]:
    """host-local's leases of `network` on this node (none unless it is host-local's dir)."""
    directory = network_dir(ipam_conf, network)
    try:
        if not stat.S_ISREG(os.lstat(os.path.join(directory, "lock")).st_mode):
            return []
        names = sorted(os.listdir(directory))
    except (FileNotFoundError, NotADirectoryError):
        return []
    found = []
    for name in names:
        lease = read_lease(directory, name)
        if lease is not None:
            found.append(lease)
    return found


def read_lease(directory: str, name: str) -> Optional[Lease]:
    try:
        ip = str(ipaddress.ip_address(name))
    except ValueError:
        return None
    if ip != name:
        return None  # host-local writes the canonical form
    path = os.path.join(directory, name)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:  # gone, a symlink (ELOOP), not ours to read
        return None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_size > MAX_LEASE_BYTES:
            return None
        data = os.read(fd, MAX_LEASE_BYTES + 1)
    finally:
        os.close(fd)
    try:
        text = data.decode("ascii")
    except UnicodeDecodeError:
        return None
    lines = text.split("\r\n")
    if len(lines) == 1:
        lines = [lines[0].rstrip("\n"), ""]
    if len(lines) != 2 or not ID_RE.fullmatch(lines[0]) or \
            (lines[1] and ifname_problem(lines[1])):
        return None
    return Lease(path=path, ip=ip, container_id=lines[0], ifname=lines[1])
