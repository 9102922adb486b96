"""A few "nodes" (network namespaces) on one L2 segment (a bridge in its own namespace).

Used by the cross-node, resident and bench code paths. Everything carries the cnp2- prefix
and a random suffix, and `cluster()` removes every namespace it made even when the body fails.
The underlay and the pod subnets are IPv4, IPv6 or both (`cluster(underlay=(6,), pods=(4, 6))`):
node N has 10.123.0.(10+N) / fd00:123::(10+N) and pods 10.124.N.0/24 / fd00:124:0:N::/64.
"""
from __future__ import annotations

import ctypes
import ipaddress
import json
import os
import secrets
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

PREFIX = "cnp2-"
CLONE_NEWNET = 0x40000000
UNDERLAY = ipaddress.IPv4Network("10.123.0.0/24")
UNDERLAY6 = ipaddress.IPv6Network("fd00:123::/64")


def pod_subnet(index: int, family: int) -> str:
    return f"10.124.{index}.0/24" if family == 4 else f"fd00:124:0:{index}::/64"


def sh(*args: str, check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run(list(args), capture_output=True, text=True, check=check,
                          timeout=timeout)


def ns_sh(ns: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    return sh("ip", "netns", "exec", ns, *args, check=check)


@dataclass
class LabNode:
    name: str        # the CNI node name ("node1")
    ns: str          # its network namespace
    ip: str          # its underlay address (the first family's)
    pod_subnet: str  # the first family's
    ips: list[str] = field(default_factory=list)          # one per underlay family
    pod_subnets: list[str] = field(default_factory=list)  # one per pod family

    def ip_of(self, family: int) -> str:
        return next(ip for ip in self.ips if ipaddress.ip_address(ip).version == family)

    def pod_subnet_of(self, family: int) -> str:
        return next(s for s in self.pod_subnets if ipaddress.ip_network(s).version == family)

    def as_conf(self) -> dict[str, Any]:
        """The node as the cluster-wide config lists it (the lists only on dual-stack)."""
        entry: dict[str, Any] = {"name": self.name, "ip": self.ip, "podSubnet": self.pod_subnet}
        if len(self.ips) > 1 or len(self.pod_subnets) > 1:
            entry.update(ips=list(self.ips), podSubnets=list(self.pod_subnets))
        return entry


@dataclass
class Lab:
    suffix: str
    segment: str
    nodes: list[LabNode] = field(default_factory=list)
    extra_ns: list[str] = field(default_factory=list)

    def node(self, name: str) -> LabNode:
        return next(n for n in self.nodes if n.name == name)

    def conf(self, backend: str, nodes: Optional[list[LabNode]] = None,
             **extra: Any) -> dict[str, Any]:
        raw: dict[str, Any] = {
            "cniVersion": "1.1.0", "name": f"cnp2net{self.suffix}", "type": "cnilab",
            "backend": backend, "ipam": {"type": "host-local"},
            "nodes": [n.as_conf() for n in (nodes if nodes is not None else self.nodes)],
            "vxlan": {"vni": 4343, "port": 4799, "device": f"cnp2vx{self.suffix}"},
        }
        raw.update(extra)
        return raw

    def new_ns(self, role: str) -> str:
        name = f"{PREFIX}{role}-{self.suffix}"
        sh("ip", "netns", "add", name)
        self.extra_ns.append(name)
        return name


def _add_node(lab: Lab, index: int, underlay: tuple[int, ...], pods: tuple[int, ...]) -> LabNode:
    ns = f"{PREFIX}n{index}-{lab.suffix}"
    sh("ip", "netns", "add", ns)
    nets = {4: UNDERLAY, 6: UNDERLAY6}
    # node N: 10.123.0.(10+N) and fd00:123::(10+N), the same digits in both
    ips = [str(UNDERLAY.network_address + 10 + index) if f == 4 else f"fd00:123::{10 + index}"
           for f in underlay]
    subnets = [pod_subnet(index, f) for f in pods]
    node = LabNode(name=f"node{index}", ns=ns, ip=ips[0], pod_subnet=subnets[0], ips=ips,
                   pod_subnets=subnets)
    lab.nodes.append(node)
    port = f"p{index}{lab.suffix}"[:15]
    sh("ip", "-n", lab.segment, "link", "add", port, "type", "veth", "peer", "name", "eth0",
       "netns", ns)
    sh("ip", "-n", lab.segment, "link", "set", port, "master", "br0", "up")
    for family, ip in zip(underlay, ips):
        # nodad: the underlay is usable at once (DAD would hold it back for 1-2 s)
        sh("ip", "-n", ns, "addr", "add", f"{ip}/{nets[family].prefixlen}", "dev", "eth0",
           *(["nodad"] if family == 6 else []))
    # and its link-local address too: the node solicits neighbours for what it forwards
    # from it, which it cannot while DAD has it tentative
    ns_sh(ns, "sysctl", "-qw", "net.ipv6.conf.eth0.accept_dad=0")
    sh("ip", "-n", ns, "link", "set", "eth0", "up")
    sh("ip", "-n", ns, "link", "set", "lo", "up")
    ns_sh(ns, "sysctl", "-qw", "net.ipv4.ip_forward=1")
    if 6 in pods:
        ns_sh(ns, "sysctl", "-qw", "net.ipv6.conf.all.forwarding=1")
    return node


@contextmanager
def cluster(node_count: int = 2, underlay: tuple[int, ...] = (4,),
            pods: tuple[int, ...] = (4,)) -> Iterator[Lab]:
    lab = Lab(suffix=secrets.token_hex(3), segment="")
    lab.segment = f"{PREFIX}seg-{lab.suffix}"
    try:
        sh("ip", "netns", "add", lab.segment)
        # no multicast snooping: neighbour solicitations reach every node without a querier
        sh("ip", "-n", lab.segment, "link", "add", "br0", "type", "bridge", "mcast_snooping",
           "0")
        sh("ip", "-n", lab.segment, "link", "set", "br0", "up")
        for i in range(1, node_count + 1):
            _add_node(lab, i, underlay, pods)
        yield lab
    finally:
        for ns in [*lab.extra_ns, *(n.ns for n in lab.nodes), lab.segment]:
            if ns:
                sh("ip", "netns", "del", ns, check=False)


def run_in_netns(ns: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Calls fn in a fresh thread that first entered namespace `ns` (only that thread moves)."""
    libc = ctypes.CDLL(None, use_errno=True)
    box: dict[str, Any] = {}

    def body() -> None:
        try:
            fd = os.open(f"/run/netns/{ns}", os.O_RDONLY | os.O_CLOEXEC)
            try:
                if libc.setns(fd, CLONE_NEWNET) != 0:
                    raise OSError(ctypes.get_errno(), f"setns {ns}")
            finally:
                os.close(fd)
            box["result"] = fn(*args, **kwargs)
        except BaseException as e:  # handed to the caller's thread
            box["error"] = e

    thread = threading.Thread(target=body)
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]
    return box.get("result")


def ip_json(ns: str, *args: str) -> list[dict[str, Any]]:
    out = sh("ip", "-j", "-n", ns, *args).stdout.strip()
    return json.loads(out) if out else []


def add_endpoint(node: LabNode, host_index: int = 5, family: int = 4) -> str:
    """A pod-subnet address on the node's lo: something to ping without the plugin.

    (lo, not a dummy device: this kernel has no dummy module.)
    """
    subnet = ipaddress.ip_network(node.pod_subnet_of(family) if node.pod_subnets
                                  else node.pod_subnet)
    addr = str(subnet.network_address + host_index)
    sh("ip", "-n", node.ns, "addr", "add", f"{addr}/{subnet.max_prefixlen}", "dev", "lo",
       *(["nodad"] if family == 6 else []))
    return addr


def pings(ns: str, src: str, dst: str) -> bool:
    done = ns_sh(ns, "ping", "-c", "1", "-W", "2", "-I", src, dst, check=False)
    return done.returncode == 0


# --- the cross-node datapath called directly in a node's namespace ------------------------------

LOCK_DIR: list[str] = []  # the current test's lock directory (the crossnode_lock_dir fixture)


def topology(raw: dict[str, Any]) -> Any:
    from plugin.cni import netconf

    return netconf.parse(raw).topology


def program(lab: Lab, node_name: str, raw: dict[str, Any]) -> list[str]:
    """ensure_peers on that node as an ADD would, then what STATUS would still find wrong."""
    from plugin import crossnode

    topo = topology(raw)

    def body() -> list[str]:
        me = crossnode.find_self(topo)
        crossnode.ensure_peers(topo, me, LOCK_DIR[0])
        return crossnode.missing_peers(topo, me)

    found: list[str] = run_in_netns(lab.node(node_name).ns, body)
    return found


def program_all(lab: Lab, raw: dict[str, Any]) -> dict[str, list[str]]:
    """program() on every node: what STATUS would still find wrong on each (nothing: {})."""
    found = {node.name: program(lab, node.name, raw) for node in lab.nodes}
    return {name: wrong for name, wrong in found.items() if wrong}


def problems(lab: Lab, node_name: str, raw: dict[str, Any]) -> list[str]:
    from plugin import crossnode

    topo = topology(raw)
    found: list[str] = run_in_netns(
        lab.node(node_name).ns, lambda: crossnode.missing_peers(topo, crossnode.find_self(topo)))
    return found


def our_routes(ns: str, proto: int) -> list[tuple[str, Optional[str], Optional[str]]]:
    """(dst, gateway, dev) of the IPv4 and IPv6 routes in `ns` tagged with `proto`."""
    return sorted((r["dst"], r.get("gateway"), r.get("dev"))
                  for family in ("-4", "-6")
                  for r in ip_json(ns, family, "route", "show", "proto", str(proto)))
